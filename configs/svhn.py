"""SVHN (cropped digits) with Stutz's four-layer conv net. Needs tfds data prepared offline (README).

  python scripts/train_classifier.py --config=configs/svhn.py --workdir=/tmp/advgen/svhn \
      --config.dataset.data_dir=/data/tfds
"""

import os

from advgen.cli import load_config


def get_config():
  return load_config(os.path.join(os.path.dirname(__file__), 'tfds_classifier.py'), 'svhn_cropped')
