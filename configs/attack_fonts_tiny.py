"""A seconds-long attack run for tests, on a workdir trained with configs/fonts_tiny.py.

  python scripts/attack.py --config=configs/attack_fonts_tiny.py --workdir=/tmp/advgen/tiny
"""

import os

from advgen.cli import load_config


def get_config():
  config = load_config(os.path.join(os.path.dirname(__file__), 'attack_fonts.py'))
  config.num_images = 40
  config.batch_size = 20
  config.num_examples = 10  # as many as distance.num_images: tests recompute the distances
  del config.attacks['transform']  # the attack library's own tests cover it
  for label in ('pgd_linf', 'on_true_manifold'):
    config.attacks[label].num_steps, config.attacks[label].restarts = 5, 2
  config.attacks.cw_l2 = dict(attack='cw_l2', num_steps=10, binary_search_steps=2, lr=0.05)
  config.attacks.deepfool = dict(attack='deepfool', max_iter=10)
  config.distance.num_images = 10
  config.distance.true = dict(num_candidates=8, num_random=8, num_restarts=1, num_steps=10)
  config.distance.learned = dict(num_restarts=1, num_steps=20, learning_rate=0.05)
  return config
