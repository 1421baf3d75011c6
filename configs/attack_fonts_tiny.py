"""A seconds-long attack run for tests, on a workdir trained with configs/fonts_tiny.py.

  python scripts/attack.py --config=configs/attack_fonts_tiny.py --workdir=/tmp/advgen/tiny
"""

import os

from advgen.cli import load_config


def get_config():
  config = load_config(os.path.join(os.path.dirname(__file__), 'attack_fonts.py'))
  config.num_images = 40
  config.batch_size = 20
  del config.attacks['transform']  # the attack library's own tests cover it
  for spec in config.attacks.values():
    spec.num_steps, spec.restarts = 5, 2
  config.attacks.deepfool = dict(attack='deepfool', max_iter=10)
  return config
