"""A seconds-long on-manifold attack run for tests: configs/attack_fonts_tiny.py's PGD settings on
the true and the learned manifold, for classifiers of configs/fonts_tiny.py and generators of
configs/vaegan_fonts_tiny.py.

  python scripts/attack.py --config=configs/attack_fonts_learned_tiny.py --workdir=/tmp/advgen/tiny \
      --config.generator_workdir=/tmp/advgen/vaegan_tiny
"""

import os

from advgen.cli import load_config


def get_config():
  config = load_config(os.path.join(os.path.dirname(__file__), 'attack_fonts_tiny.py'))
  config.name = 'on_manifold'
  for label in ('pgd_linf', 'cw_l2', 'deepfool'):
    del config.attacks[label]
  config.attacks.on_learned_manifold = dict(config.attacks.on_true_manifold,
                                            attack='on_learned_manifold')
  return config
