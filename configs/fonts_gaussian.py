"""Gaussian noise augmentation on fonts (Cohen et al.): Stutz's conv net trained on every image
plus noise N(0, sigma^2 I), the base classifier of a smoothed classifier of the same sigma.

  python scripts/train_classifier.py --config=configs/fonts_gaussian.py:0.5 \
      --workdir=/tmp/advgen/fonts_gaussian_0.5

The argument sets sigma (default 0.25; Cohen et al. use 0.12, 0.25, 0.5 and 1.0); certify the
result with scripts/certify.py --config=configs/certify_fonts.py:0.5.
"""

import os

from advgen.cli import load_config


def get_config(sigma='0.25'):
  config = load_config(os.path.join(os.path.dirname(__file__), 'fonts.py'), None,
                       'gaussian_augmentation')
  config.variant.sigma = float(sigma)
  return config
