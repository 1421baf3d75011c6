"""A seconds-long certification run for tests, on a workdir trained with configs/fonts_tiny.py.

  python scripts/certify.py --config=configs/certify_fonts_tiny.py --workdir=/tmp/advgen/tiny
"""

import os

from advgen.cli import load_config


def get_config():
  config = load_config(os.path.join(os.path.dirname(__file__), 'certify_fonts.py'), '0.12,0.25')
  config.num_images = 20
  config.batch_size = 10
  config.n0, config.n = 20, 500
  config.chunk_size = 250
  config.attacks.pgd_l2.num_steps = 5
  config.smoothadv.num_samples = 8
  config.smoothadv.predict_samples = 200
  return config
