"""A seconds-long class-specific VAE-GAN run for tests: 300 fonts images, narrow nets, 5 epochs.

  python scripts/train_generator.py --config=configs/vaegan_fonts_tiny.py --workdir=/tmp/advgen/vaegan_tiny
"""

import os

from advgen.cli import load_config


def get_config():
  config = load_config(os.path.join(os.path.dirname(__file__), 'vaegan_fonts.py'))
  config.dataset.num_train = 300
  config.dataset.num_test = 100
  config.model.kwargs.encoder_channels = (8, 16, 16)
  config.model.kwargs.decoder_channels = (16, 16, 8)
  config.model.kwargs.discriminator_channels = (8, 16)
  config.loss.beta = 3.0
  config.optimizer.learning_rate = 0.01
  config.optimizer.b1 = 0.9  # more momentum damps the float noise that tests compare runs under
  config.batch_size = 10
  config.num_epochs = 5
  config.ema_decay = 0.5  # 15 steps: average about the last two
  config.eval.batch_size = 50
  config.eval.grid_columns = 4
  # One sample per class model, each projected onto all 10 class manifolds (validity): the true
  # projection is most of this run's time.
  config.eval.num_distance = 10
  config.eval.num_reference = 5
  config.eval.project = dict(num_candidates=8, num_random=8, num_restarts=1, num_steps=10)
  config.log_every = 2
  config.checkpoint_every_epochs = 1
  return config
