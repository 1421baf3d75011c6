"""Regular and on-true-manifold adversarial training combined (Stutz et al., Fig. 7): the adversarial
half of each batch split evenly between L-inf PGD examples and on-true-manifold examples.

  python scripts/train_classifier.py --config=configs/fonts_combined.py \
      --workdir=/tmp/advgen/fonts_combined

Settings are config.variant's (configs/fonts.py), e.g. --config.variant.epsilon=0.1.
"""

import os

from advgen.cli import load_config


def get_config(num_train=None):
  return load_config(os.path.join(os.path.dirname(__file__), 'fonts.py'), num_train, 'combined')
