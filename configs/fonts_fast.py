""""Fast" adversarial training on fonts (Wong et al., 2020): half of each batch FGSM examples from a
random start in the L-inf ball (eps 0.3, step 1.25 eps).

  python scripts/train_classifier.py --config=configs/fonts_fast.py \
      --workdir=/tmp/advgen/fonts_fast

Settings are config.variant's (configs/fonts.py), e.g. --config.variant.epsilon=0.1.
"""

import os

from advgen.cli import load_config


def get_config(num_train=None):
  return load_config(os.path.join(os.path.dirname(__file__), 'fonts.py'), num_train, 'fast')
