"""Random-transformation augmentation on fonts (Stutz et al.): every image warped by affine
parameters drawn within 0.1 of the identity, clipped to the dataset's ranges.

  python scripts/train_classifier.py --config=configs/fonts_augmentation.py \
      --workdir=/tmp/advgen/fonts_augmentation

Settings are config.variant's (configs/fonts.py), e.g. --config.variant.epsilon=0.1.
"""

import os

from advgen.cli import load_config


def get_config(num_train=None):
  return load_config(os.path.join(os.path.dirname(__file__), 'fonts.py'), num_train, 'augmentation')
