"""Stutz et al.'s attacks on fonts classifiers trained in --workdir: L-inf PGD with Adam (lr 0.005,
40 iterations, 5 restarts, eps 0.3, early stopping) in image space and on the true manifold
(theta, eps 0.3), plus an adversarial transformation, on the first 1000 test images.

  python scripts/attack.py --config=configs/attack_fonts.py --workdir=/tmp/advgen/fonts
"""

import ml_collections

STUTZ_PGD = dict(epsilon=0.3, num_steps=40, restarts=5, step_rule='adam', step_size=0.005,
                 early_stop=True)


def get_config():
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.num_images = 1000
  config.batch_size = 250
  config.attacks = ml_collections.ConfigDict({
      'pgd_linf': dict(attack='pgd_linf', **STUTZ_PGD),
      'on_true_manifold': dict(attack='on_true_manifold', **STUTZ_PGD),
      'transform': dict(attack='transform', ranges='hard', **STUTZ_PGD),
  })
  return config
