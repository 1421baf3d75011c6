"""Stutz et al.'s attacks on fonts classifiers trained in --workdir: L-inf PGD with Adam (lr 0.005,
40 iterations, 5 restarts, eps 0.3, early stopping, the authors' random start) in image space and
on the true manifold (theta, eps 0.3), an adversarial transformation and C&W L2 (120 iterations,
Stutz Fig. 8), on the first 1000 test images; distances to the manifold of the first 100.

  python scripts/attack.py --config=configs/attack_fonts.py --workdir=/tmp/advgen/fonts

Results go to WORKDIR/attacks/NAME/ (NAME = config.name), so one workdir holds several runs:
  python scripts/attack.py --config=configs/attack_fonts.py --workdir=/tmp/advgen/fonts \
      --config.name=uniform_start --config.attacks.pgd_linf.start=uniform
"""

import ml_collections

# start='gaussian_linf': the authors' random start, a Gaussian direction of unit L-inf norm times
# eps * U(0, 1) (median L-inf eps / 2); 'uniform' fills the eps-box (L2 about 3.6 at eps 0.3).
STUTZ_PGD = dict(epsilon=0.3, num_steps=40, restarts=5, step_rule='adam', step_size=0.005,
                 early_stop=True, start='gaussian_linf')


def distance_settings():
  """Distance to the manifold (Stutz Sec. 3.2) of the first num_images examples of each attack.
  true: fonts.project settings (empty: its defaults); learned: manifold.invert settings;
  subspace: manifold.subspace_distance settings (Stutz: 50 neighbours)."""
  return ml_collections.ConfigDict(dict(
      num_images=100, methods=('true', 'learned', 'subspace'), true={},
      learned=dict(num_restarts=4, num_steps=200, learning_rate=0.05),
      subspace=dict(num_neighbours=50)))


def get_config():
  config = ml_collections.ConfigDict()
  config.name = 'default'  # results in WORKDIR/attacks/NAME/
  config.seed = 0
  config.num_images = 1000
  config.batch_size = 250
  config.num_examples = 20  # adversarial images kept in examples.npz per attack and model
  config.generator_workdir = ''  # class-specific generators, for on_learned_manifold
  config.attacks = ml_collections.ConfigDict({
      'pgd_linf': dict(attack='pgd_linf', **STUTZ_PGD),
      'on_true_manifold': dict(attack='on_true_manifold', **STUTZ_PGD),
      'transform': dict(attack='transform', ranges='hard',
                        **{k: v for k, v in STUTZ_PGD.items() if k != 'start'}),
      # Stutz Fig. 8: C&W L2 with 120 iterations per binary-search step (9 steps, the library's
      # default, as in Carlini & Wagner's code); minimal-norm, so it has no restarts.
      'cw_l2': dict(attack='cw_l2', num_steps=120),
  })
  config.distance = distance_settings()
  return config
