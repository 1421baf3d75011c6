"""TRADES on fonts (Zhang et al., 2019): loss CE(f(x), y) + 6 KL(f(x) || f(x')), x' from 40 signed
steps of 0.03 on the KL term inside the L-inf ball of radius 0.3.

  python scripts/train_classifier.py --config=configs/fonts_trades.py \
      --workdir=/tmp/advgen/fonts_trades

Settings are config.variant's (configs/fonts.py), e.g. --config.variant.epsilon=0.1.
"""

import os

from advgen.cli import load_config


def get_config(num_train=None):
  return load_config(os.path.join(os.path.dirname(__file__), 'fonts.py'), num_train, 'trades')
