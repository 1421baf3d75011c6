"""Two concentric spheres in 10 dimensions (exact generator) with an MLP.

  python scripts/train_classifier.py --config=configs/spheres.py --workdir=/tmp/advgen/spheres
"""

import os

from advgen.cli import load_config


def get_config():
  config = load_config(os.path.join(os.path.dirname(__file__), 'fonts.py'))
  config.dataset = dict(name='spheres', num_train=10000, num_test=1000, seed=0, dim=10)
  config.model.name = 'mlp'
  config.optimizer.learning_rate = 0.001
  config.num_epochs = 20
  return config
