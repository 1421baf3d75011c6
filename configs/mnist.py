"""MNIST with Stutz's conv net. Needs the tfds dataset prepared offline (README).

  python scripts/train_classifier.py --config=configs/mnist.py --workdir=/tmp/advgen/mnist \
      --config.dataset.data_dir=/data/tfds
"""

import os

from advgen.cli import load_config


def get_config():
  return load_config(os.path.join(os.path.dirname(__file__), 'tfds_classifier.py'), 'mnist')
