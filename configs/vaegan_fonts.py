"""Stutz et al.'s class-specific VAE-GAN on fonts: ten models (one per letter) trained together.

  python scripts/train_generator.py --config=configs/vaegan_fonts.py --workdir=/tmp/advgen/vaegan_fonts

Latent size 10, loss KL + beta * L1 + gamma * GAN on reconstructions (Stutz et al.). To fit in
15 minutes on a 2-core CPU (11.5 minutes measured, 30 epochs) the encoder and discriminator
widths are halved from the paper's and beta is 1 instead of the paper's 3; the decoder keeps the
paper's 256/128/64, which gave visibly sharper samples than the halved one. Within that budget
beta 0.3 or 3, gamma 0 or 2, lr 0.001 or 0.003, the paper's discriminator and 4x the data all
gave less recognisable samples (GAN-test accuracy of the B, F, H and J models). Adam's b1 0.5
(Radford et al.) and evaluating a moving average of the params help (B, F, H, J: 0.67, then 0.71,
then 0.74; all ten models: 0.69 -> 0.75); batch 10, 2x and 3x the steps (0.76, 0.74) and GAN
terms on prior samples (0.67) add little or nothing. `:paper` (`--config=configs/vaegan_fonts.py:paper`) restores the paper's widths and
beta = 3.
"""

import ml_collections


def get_config(widths=None):
  if widths not in (None, 'paper'):
    raise ValueError(f'unknown argument {widths!r}; use configs/vaegan_fonts.py or '
                     'configs/vaegan_fonts.py:paper')
  encoder = (64, 128, 256) if widths == 'paper' else (32, 64, 128)
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.dataset = ml_collections.ConfigDict(dict(
      name='fonts', difficulty='hard', num_train=10000, num_test=1000, seed=0))
  config.model = ml_collections.ConfigDict(dict(name='vaegan', kwargs=dict(
      latent_dim=10, encoder_channels=encoder, decoder_channels=(256, 128, 64),
      discriminator_channels=tuple(c // 2 for c in encoder))))
  config.class_specific = True
  config.loss = ml_collections.ConfigDict(dict(
      beta=3.0 if widths == 'paper' else 1.0, gamma=1.0,
      prior_samples=False))  # True: GAN terms on prior decodings too (Larsen et al.)
  config.optimizer = ml_collections.ConfigDict(dict(
      name='adam', learning_rate=0.002, b1=0.5, lr_decay=0.95, weight_decay=0.0))
  config.batch_size = 25  # per class model
  config.num_epochs = 30
  config.ema_decay = 0.998  # evaluate and use a moving average of the params; 0: the last ones
  # Distances to the true fonts manifold (fonts.project with its defaults (project={}), about
  # 0.06 s per image and class on 2 CPU cores; samples are projected onto all 10 classes):
  # of num_distance generated samples, and of num_reference test images and noise images.
  # With classifier_workdir (a scripts/train_classifier.py workdir on fonts), the GAN-test
  # accuracy of num_classified samples: how many of them those classifiers call their class.
  config.eval = ml_collections.ConfigDict(dict(
      batch_size=500, grid_columns=10, truncation=2.0, num_distance=100, num_reference=50,
      project={},
      classifier_workdir='', num_classified=1000))
  config.log_every = 20
  config.checkpoint_every_epochs = 5
  config.max_checkpoints = 2
  config.keep_checkpoint_every_epochs = 0
  return config
