"""Stutz et al.'s on-true-manifold adversarial training on fonts (eq. 4 with the exact generator):
every batch half clean, half render(font, class, theta + delta) with PGD-Adam on delta
(|delta|_inf <= 0.3, 40 steps, lr 0.005), theta + delta inside the dataset's ranges.

  python scripts/train_classifier.py --config=configs/fonts_on_true_manifold.py \
      --workdir=/tmp/advgen/fonts_on_true_manifold

Settings are config.variant's (configs/fonts.py), e.g. --config.variant.epsilon=0.1.
"""

import os

from advgen.cli import load_config


def get_config(num_train=None):
  return load_config(os.path.join(os.path.dirname(__file__), 'fonts.py'), num_train, 'on_true_manifold')
