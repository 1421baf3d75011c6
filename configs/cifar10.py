"""CIFAR-10 with a small pre-activation ResNet (Fawzi et al. use ResNets). Needs tfds data (README).

  python scripts/train_classifier.py --config=configs/cifar10.py --workdir=/tmp/advgen/cifar10 \
      --config.dataset.data_dir=/data/tfds
"""

import os

from advgen.cli import load_config


def get_config():
  config = load_config(os.path.join(os.path.dirname(__file__), 'tfds_classifier.py'), 'cifar10')
  config.model.name = 'resnet_small'
  config.num_epochs = 40
  return config
