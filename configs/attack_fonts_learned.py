"""Stutz et al.'s on-manifold attacks: on the true fonts manifold and on the learned one (the
class-specific VAE-GANs of --config.generator_workdir), L-inf PGD with Adam (eps 0.3, 40
iterations, 5 restarts, the authors' random start) on the first 2500 test images, as the authors
did. On-learned-manifold successes count only where the test code has ||z||_inf <= 2; the results
hold the validity of the learned examples (the fraction nearer their own class's true manifold).

  python scripts/attack.py --config=configs/attack_fonts_learned.py --workdir=/tmp/advgen/fonts \
      --config.generator_workdir=/tmp/advgen/vaegan
"""

import os

from advgen.cli import load_config


def get_config():
  config = load_config(os.path.join(os.path.dirname(__file__), 'attack_fonts.py'))
  config.name = 'on_manifold'
  config.num_images = 2500
  for label in ('pgd_linf', 'transform', 'cw_l2'):
    del config.attacks[label]
  config.attacks.on_learned_manifold = dict(config.attacks.on_true_manifold,
                                            attack='on_learned_manifold')
  return config
