"""Stutz et al.'s on-learned-manifold adversarial training on fonts (eq. 4 with class-specific
VAE-GANs): every batch half clean, half dec_y(z + zeta) with PGD-Adam on zeta (|zeta|_inf <= 0.3,
40 steps, lr 0.005) for images of a separate permutation, z their encoder means, z + zeta inside
the box of the training codes. Train the generators first (configs/vaegan_fonts.py):

  python scripts/train_classifier.py --config=configs/fonts_on_learned_manifold.py \
      --workdir=/tmp/advgen/fonts_on_learned --config.variant.generator_workdir=/tmp/advgen/vaegan

Settings are config.variant's (configs/fonts.py); --config.variant.safe=True draws the
adversarial halves from codes with |z|_inf <= 2 only.
"""

import os

from advgen.cli import load_config


def get_config(num_train=None):
  return load_config(os.path.join(os.path.dirname(__file__), 'fonts.py'), num_train, 'on_learned_manifold')
