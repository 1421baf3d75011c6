"""Free adversarial training on fonts (Shafahi et al., 2019): each batch replayed 4 times, one
backward pass per replay updating the weights and the carried L-inf perturbation (eps 0.3);
20 / 4 = 5 epochs keep the normal run's number of updates.

  python scripts/train_classifier.py --config=configs/fonts_free.py \
      --workdir=/tmp/advgen/fonts_free

Settings are config.variant's (configs/fonts.py), e.g. --config.variant.replays=8.
"""

import os

from advgen.cli import load_config


def get_config(num_train=None):
  config = load_config(os.path.join(os.path.dirname(__file__), 'fonts.py'), num_train, 'free')
  config.num_epochs = 5
  return config
