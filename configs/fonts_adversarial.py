"""Stutz et al.'s adversarial training on fonts: every batch half clean, half L-inf PGD examples
of the current model (Adam lr 0.005 on the perturbation, 40 iterations, eps 0.3).

  python scripts/train_classifier.py --config=configs/fonts_adversarial.py \
      --workdir=/tmp/advgen/fonts_adversarial
"""

import os

from advgen.cli import load_config


def get_config(num_train=None):
  # Its settings (eps 0.3, 40 steps, Adam 0.005) are config.variant's in fonts.py.
  return load_config(os.path.join(os.path.dirname(__file__), 'fonts.py'), num_train, 'adversarial')
