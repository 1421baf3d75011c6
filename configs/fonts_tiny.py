"""A seconds-long fonts run for tests: 2 models, 300 images, 2 epochs.

  python scripts/train_classifier.py --config=configs/fonts_tiny.py --workdir=/tmp/advgen/tiny
"""

import os

from advgen.cli import load_config


def get_config():
  config = load_config(os.path.join(os.path.dirname(__file__), 'fonts.py'), 300)
  config.dataset.num_test = 100
  config.num_models = 2
  config.batch_size = 60
  config.num_epochs = 2
  config.eval_batch_size = 100
  config.log_every = 2
  return config
