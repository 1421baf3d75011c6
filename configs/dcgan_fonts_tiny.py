"""A seconds-long class-agnostic DCGAN run on fonts for tests (narrow nets, latent size 16).

  python scripts/train_generator.py --config=configs/dcgan_fonts_tiny.py --workdir=/tmp/advgen/dcgan_tiny
"""

import os

from advgen.cli import load_config


def get_config():
  config = load_config(os.path.join(os.path.dirname(__file__), 'dcgan_svhn.py'))
  config.dataset = dict(name='fonts', difficulty='hard', num_train=200, num_test=50, seed=0)
  config.model.kwargs = dict(latent_dim=16, decoder_channels=(16, 8, 4),
                             discriminator_channels=(4, 8))
  config.optimizer.learning_rate = 0.002
  config.batch_size = 50
  config.num_epochs = 2
  config.eval.grid_columns = 3
  config.log_every = 2
  return config
