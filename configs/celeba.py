"""CelebA male vs female at 56x48 with Stutz's four-layer conv net. Needs tfds data (README).

  python scripts/train_classifier.py --config=configs/celeba.py --workdir=/tmp/advgen/celeba \
      --config.dataset.data_dir=/data/tfds
"""

import os

from advgen.cli import load_config


def get_config():
  return load_config(os.path.join(os.path.dirname(__file__), 'tfds_classifier.py'), 'celeb_a')
