"""Standard AutoAttack (Croce & Hein 2020) on fonts classifiers trained in --workdir, next to
Stutz et al.'s L-inf PGD (configs/attack_fonts.py's `pgd_linf`) on the same first 1000 test
images: L-inf eps = 0.3 and L2 eps = 2.0 (the L2 radius used for 28 x 28 MNIST-like digits);
results.json holds each model's robust accuracy after every stage and the sanity warnings.

  python scripts/attack.py --config=configs/attack_fonts_autoattack.py --workdir=/tmp/advgen/fonts

The run writes WORKDIR/attacks/autoattack/ (config.name), beside the runs of attack_fonts.py.
"""

import os

from advgen.cli import load_config

L2_EPSILON = 2.0


def get_config():
  config = load_config(os.path.join(os.path.dirname(__file__), 'attack_fonts.py'))
  config.name = 'autoattack'
  for label in ('on_true_manifold', 'transform', 'cw_l2'):  # Stutz's pgd_linf stays
    del config.attacks[label]
  config.attacks.autoattack = dict(attack='autoattack', norm='linf', epsilon=0.3,
                                   version='standard')
  config.attacks.autoattack_l2 = dict(attack='autoattack', norm='l2', epsilon=L2_EPSILON,
                                      version='standard')
  config.distance.num_images = 0  # the attack comparison only; attack_fonts.py measures them
  config.distance.methods = ()
  return config
