"""Stutz et al.'s fonts classifier: conv net, Adam (lr 0.01, x0.95 per epoch, wd 1e-4), batch 100.

  python scripts/train_classifier.py --config=configs/fonts.py --workdir=/tmp/advgen/fonts

An optional argument sets the training-set size N: `--config=configs/fonts.py:1000`; the
configs/fonts_<variant>.py files pass a training variant's name as the second.
"""

import ml_collections


def get_config(num_train=None, variant='normal'):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.num_models = 1
  # font_dirs: folders of TTF/OTF files (empty: matplotlib's bundled fonts); num_fonts: use the
  # first that render (None: all), tried in font_selection's order: 'path_order' (folder by
  # folder, sorted by path) or 'permuted' (all files sorted by path, then a fixed permutation
  # drawn from font_seed: Stutz et al.'s pick of 1000 diverse fonts; docs/datasets.md).
  config.dataset = ml_collections.ConfigDict(dict(
      name='fonts', difficulty='hard', num_train=int(num_train or 10000), num_test=1000, seed=0,
      font_dirs=(), num_fonts=ml_collections.config_dict.placeholder(int),
      font_selection='path_order', font_seed=0))
  config.model = ml_collections.ConfigDict(dict(name='stutz_convnet', kwargs={}))
  config.optimizer = ml_collections.ConfigDict(dict(
      name='adam', learning_rate=0.01, b1=0.9, lr_decay=0.95, weight_decay=1e-4))
  # Training variant (advgen/train/variants.py) and every variant's settings, so that any can be
  # chosen and tuned from the command line: --config.variant.name=adversarial
  # --config.variant.epsilon=0.1. Adversarial ones (adversarial, on_true_manifold,
  # adversarial_transformation, combined): PGD with Adam, every step (Stutz et al.); combined
  # splits the adversarial half between `mix` by `fractions`; trades: signed steps of
  # `trades_step_size` on the KL term, loss CE + beta * KL (Zhang et al.); free: each batch
  # replayed `replays` times with a carried perturbation (Shafahi et al.); on_learned_manifold:
  # dec_y(z + zeta) through the class-specific generators of `generator_workdir`, adversarial
  # halves from a separate permutation (of the codes with |z|_inf <= 2 if `safe`);
  # augmentation: affine parameters up to `radius` around the identity; gaussian_augmentation:
  # noise N(0, sigma^2 I) on every image (Cohen et al.'s base classifiers of randomized smoothing).
  config.variant = ml_collections.ConfigDict(dict(
      name=variant, epsilon=0.3, num_steps=40, step_size=0.005, radius=0.1, sigma=0.25,
      mix=('adversarial', 'on_true_manifold'), fractions=(0.5, 0.5), beta=6.0,
      trades_step_size=0.03, replays=4, generator_workdir='', safe=False))
  config.batch_size = 100
  config.num_epochs = 20
  config.eval_batch_size = 500
  config.log_every = 100
  config.checkpoint_every_epochs = 1
  config.max_checkpoints = 2  # the last ones kept
  config.keep_checkpoint_every_epochs = 0  # also keep every n-th epoch's (0: none)
  # True: each of the num_models models trains and tests on its own stratified reshuffle of the
  # dataset's train + test examples (same sizes; Deniz et al.'s runs).
  config.resplit = False
  return config
