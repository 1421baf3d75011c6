"""EMNIST digits with Stutz's conv net. Needs the tfds dataset prepared offline (README).

  python scripts/train_classifier.py --config=configs/emnist.py --workdir=/tmp/advgen/emnist \
      --config.dataset.data_dir=/data/tfds
"""

import os

from ml_collections import config_dict

from advgen.cli import load_config


def get_config():
  config = load_config(os.path.join(os.path.dirname(__file__), 'fonts.py'))
  config.dataset = dict(name='emnist', num_train=config_dict.placeholder(int),
                        num_test=config_dict.placeholder(int), seed=0,
                        data_dir=config_dict.placeholder(str))
  config.model.name = 'stutz_convnet'
  config.optimizer.learning_rate = 0.001
  config.num_epochs = 20
  return config
