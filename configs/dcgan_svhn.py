"""Fawzi et al.'s generator for SVHN: a class-agnostic DCGAN, latent size 100, prior N(0, I).

  python scripts/train_generator.py --config=configs/dcgan_svhn.py --workdir=/tmp/advgen/dcgan_svhn

Needs SVHN prepared for tensorflow-datasets (see advgen/data/tfds.py); set config.dataset.data_dir
with `--config.dataset.data_dir=DIR`. Adam with lr 2e-4 and b1 0.5 as in Radford et al.; meant
for a GPU.
"""

import ml_collections


def get_config(dataset='svhn_cropped'):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.dataset = ml_collections.ConfigDict(dict(
      name=dataset, num_train=None, num_test=1000, seed=0, data_dir=None))
  config.model = ml_collections.ConfigDict(dict(name='dcgan', kwargs=dict(latent_dim=100)))
  config.class_specific = False
  config.loss = ml_collections.ConfigDict(dict(beta=0.0, gamma=1.0))  # GAN losses only
  config.optimizer = ml_collections.ConfigDict(dict(
      name='adam', learning_rate=2e-4, b1=0.5, lr_decay=1.0, weight_decay=0.0))
  config.batch_size = 128
  config.num_epochs = 25
  config.eval = ml_collections.ConfigDict(dict(
      batch_size=500, grid_columns=10, truncation=2.0, num_distance=0))
  config.log_every = 200
  config.checkpoint_every_epochs = 1
  config.max_checkpoints = 2
  config.keep_checkpoint_every_epochs = 0
  return config
