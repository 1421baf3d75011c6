"""Adversarial-transformation training on fonts (Stutz et al., eq. 5): half of each batch warped
by affine parameters found by PGD-Adam within 0.3 of the identity. It warps the rendered image, so
on fonts its examples leave the true manifold; it is meant for datasets without a known one.

  python scripts/train_classifier.py --config=configs/fonts_adversarial_transformation.py \
      --workdir=/tmp/advgen/fonts_adversarial_transformation

Settings are config.variant's (configs/fonts.py), e.g. --config.variant.epsilon=0.1.
"""

import os

from advgen.cli import load_config


def get_config(num_train=None):
  return load_config(os.path.join(os.path.dirname(__file__), 'fonts.py'), num_train, 'adversarial_transformation')
