"""A seconds-long bounds run for tests: a tiny VAE and MLP on 300 fonts images, 40 samples.

  python scripts/study.py --config=configs/studies/bounds_tiny.py --workdir=/tmp/advgen/bounds_tiny
"""

import os

import ml_collections

from advgen.cli import load_config


def get_config():
  config = load_config(os.path.join(os.path.dirname(__file__), 'bounds_fonts.py'))
  dataset = dict(name='fonts', difficulty='hard', num_train=300, num_test=100, seed=0)
  generator = config.generator
  generator.dataset = ml_collections.ConfigDict(dataset)
  generator.model.kwargs.encoder_channels = (8, 16, 16)
  generator.model.kwargs.decoder_channels = (16, 8, 8)
  generator.batch_size = 50
  generator.num_epochs = 2
  generator.eval.batch_size = 100
  generator.eval.grid_columns = 4
  generator.log_every = 2
  mlp = config.classifiers.mlp
  mlp.dataset = ml_collections.ConfigDict(dataset)
  mlp.model.kwargs = dict(features=(32, 32))
  mlp.num_models = 2
  mlp.batch_size = 50
  mlp.num_epochs = 2
  mlp.eval_batch_size = 100
  mlp.log_every = 2
  config.classifiers = ml_collections.ConfigDict({'mlp': mlp})
  config.sandwich.classifier = 'mlp'
  config.sandwich.num_samples = 10
  config.sandwich.n0, config.sandwich.n = 20, 300
  config.sandwich.soft_samples, config.sandwich.predict_samples = 8, 200
  config.sandwich.pgd_steps = 5
  config.sandwich.sigma = 0.02  # the tiny MLP's smoothed classifier abstains everywhere at 0.25
  config.sandwich.epsilons = (0.01, 0.02, 0.04, 0.08, 0.16, 0.5)  # around its radii (~0.03)
  config.num_samples = 40
  config.num_prob_samples = 200
  config.batch_size = 20
  config.deepfool.max_iter = 10
  config.search = dict(c_init=1.0, binary_search_steps=2, num_steps=5, learning_rate=0.05)
  config.pgd = dict(pgd_steps=5, bisection_steps=3, step_scale=2.5)
  config.fab = dict(num_steps=5, restarts=1)
  config.refine_steps = 8
  config.modulus.num_points = 32
  config.modulus.num_directions = 2
  return config
