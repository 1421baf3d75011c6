"""A classifier on a tensorflow-datasets dataset, named by the argument (Stutz's conv net, Adam
lr 1e-3). Needs the dataset prepared offline (see the README):

  python scripts/train_classifier.py --config=configs/tfds_classifier.py:mnist \
      --workdir=/tmp/advgen/mnist --config.dataset.data_dir=/data/tfds

The per-dataset configs (mnist.py, svhn.py, cifar10.py, ...) set this up with the papers' models.
"""

import os

from ml_collections import config_dict

from advgen.cli import load_config


def get_config(name='mnist'):
  config = load_config(os.path.join(os.path.dirname(__file__), 'fonts.py'))
  config.dataset = dict(name=name, num_train=config_dict.placeholder(int),
                        num_test=config_dict.placeholder(int), seed=0,
                        data_dir=config_dict.placeholder(str))
  config.optimizer.learning_rate = 0.001
  return config
