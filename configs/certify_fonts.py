"""Randomized smoothing (Cohen et al.) of the fonts classifiers trained in --workdir, on the first
500 test images: CERTIFY with n0 = 100, n = 100,000, alpha = 0.001 (the paper's), and
SmoothAdv L2 PGD (eps 0.5) on the soft smoothed classifier, confirmed by PREDICT.

  python scripts/certify.py --config=configs/certify_fonts.py:0.25 \
      --workdir=/tmp/advgen/fonts_gaussian_0.25

The argument is the noise levels, comma-separated (default 0.25; train with the same sigma,
configs/fonts_gaussian.py:SIGMA). On a 2-core CPU n = 100,000 takes about an hour per sigma and
model; --config.n=10000 a tenth of it (the largest certifiable radius drops from 3.8 to 3.1 sigma).
Results go to WORKDIR/certify/NAME/ (NAME = config.name).
"""

import ml_collections


def get_config(sigmas='0.25'):
  config = ml_collections.ConfigDict()
  config.name = 'default'
  config.seed = 0
  config.num_images = 500
  config.batch_size = 50  # test images per program (CERTIFY's votes and each attack)
  config.sigmas = tuple(float(s) for s in str(sigmas).split(','))
  config.n0 = 100  # samples that guess the class
  config.n = 100_000  # fresh samples that bound its probability
  config.alpha = 0.001
  config.radii = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)  # certified accuracy reported at these
  # Noisy images per classifier call (None: 500 on CPU, 8192 on accelerators).
  config.chunk_size = ml_collections.config_dict.placeholder(int)
  # Attacks of the registry (image space) on the soft smoothed classifier with `num_samples`
  # noise samples; PREDICT with `predict_samples` fresh ones confirms each candidate.
  config.attacks = ml_collections.ConfigDict({'pgd_l2': dict(
      attack='pgd_l2', epsilon=0.5, num_steps=20, step_size=0.1, early_stop=False)})
  config.smoothadv = ml_collections.ConfigDict(dict(num_samples=32, predict_samples=1000))
  return config
