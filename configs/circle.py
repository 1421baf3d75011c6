"""The circle g(z) = c + r(cos 2 pi z, sin 2 pi z), two half-turn classes, with an MLP.

  python scripts/train_classifier.py --config=configs/circle.py --workdir=/tmp/advgen/circle
"""

import os

from advgen.cli import load_config


def get_config():
  config = load_config(os.path.join(os.path.dirname(__file__), 'fonts.py'))
  config.dataset = dict(name='circle', num_train=10000, num_test=1000, seed=0)
  config.model.name = 'mlp'
  config.optimizer.learning_rate = 0.001
  config.num_epochs = 20
  return config
