"""A class-agnostic VAE on fonts (Stutz et al.'s encoder and decoder, no discriminator).

  python scripts/train_generator.py --config=configs/vae_fonts.py --workdir=/tmp/advgen/vae_fonts
"""

import os

from advgen.cli import load_config


def get_config():
  config = load_config(os.path.join(os.path.dirname(__file__), 'vaegan_fonts.py'))
  config.model.name = 'vae'
  del config.model.kwargs['discriminator_channels']
  config.class_specific = False
  config.loss.gamma = 0.0
  config.optimizer.b1 = 0.9  # the VAE-GAN's b1 0.5 and params average are for its GAN game
  config.ema_decay = 0.0
  config.batch_size = 100
  # One model sees every class: ten times the distance projections of a class-specific one.
  config.eval.num_distance = 20
  config.eval.num_reference = 20
  return config
