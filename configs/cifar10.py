"""CIFAR-10 with a small pre-activation ResNet (Fawzi et al. use ResNets). Needs tfds data (README).

  python scripts/train_classifier.py --config=configs/cifar10.py --workdir=/tmp/advgen/cifar10 \
      --config.dataset.data_dir=/data/tfds
"""

import os

from ml_collections import config_dict

from advgen.cli import load_config


def get_config():
  config = load_config(os.path.join(os.path.dirname(__file__), 'fonts.py'))
  config.dataset = dict(name='cifar10', num_train=config_dict.placeholder(int),
                        num_test=config_dict.placeholder(int), seed=0,
                        data_dir=config_dict.placeholder(str))
  config.model.name = 'resnet_small'
  config.optimizer.learning_rate = 0.001
  config.num_epochs = 40
  return config
