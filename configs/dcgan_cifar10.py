"""Fawzi et al.'s generator for CIFAR-10: the SVHN DCGAN config on CIFAR-10.

  python scripts/train_generator.py --config=configs/dcgan_cifar10.py --workdir=/tmp/advgen/dcgan_cifar10
"""

import os

from advgen.cli import load_config


def get_config():
  return load_config(os.path.join(os.path.dirname(__file__), 'dcgan_svhn.py'), 'cifar10')
