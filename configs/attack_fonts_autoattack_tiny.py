"""A seconds-long AutoAttack run for tests, on a workdir trained with configs/fonts_tiny.py:
configs/attack_fonts_autoattack.py with 5 iterations, 20 Square queries and 20 images.

  python scripts/attack.py --config=configs/attack_fonts_autoattack_tiny.py --workdir=/tmp/advgen/tiny
"""

import os

from advgen.cli import load_config


def get_config():
  config = load_config(os.path.join(os.path.dirname(__file__), 'attack_fonts_autoattack.py'))
  config.num_images = 20
  config.batch_size = 20
  config.num_examples = 5
  config.attacks.pgd_linf.num_steps, config.attacks.pgd_linf.restarts = 5, 2
  for label in ('autoattack', 'autoattack_l2'):
    config.attacks[label].num_steps, config.attacks[label].num_queries = 5, 20
  return config
