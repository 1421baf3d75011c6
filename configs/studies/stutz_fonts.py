"""Stutz et al.'s study on fonts: training-set sizes x training variants, K seeds per cell, each
cell attacked in image space, on the true manifold and on the learned manifold (class-specific
VAE-GANs trained once on the whole pool), then report.md and figures.

  python scripts/study.py --config=configs/studies/stutz_fonts.py --workdir=/tmp/advgen/stutz
  python scripts/study.py --config=configs/studies/stutz_fonts.py:quick --workdir=/tmp/advgen/quick
  python scripts/study.py --config=configs/studies/stutz_fonts.py:paper_fonts \
      --workdir=/tmp/advgen/paper_fonts

The full config is the paper's grid (N from 250 to 40,000, 5 seeds, every variant, 1000 test
images). `:quick` is N in {250, 1000, 4000}, 2 seeds, normal / adversarial / on-true-manifold /
on-learned-manifold training, 500 test images, shorter training and attacks, and a smaller
generator. `:paper_fonts` is the authors' FONTS: 1000 of Debian's fonts
(`sh scripts/install_debian_fonts.sh`) in their seeded order, N in {500, 2500, 10000, 20000},
normal and on-true-manifold training, 3 seeds, Stutz's attacks on 1000 test images (its
adversarial training is shortened to fit a 2-core CPU: see _paper_fonts). `:tiny` is for tests. Every grid entry is a plain list, e.g.
--config.train_sizes='(500,2000)' --config.variants='("normal","adversarial")'.
"""

import os

import ml_collections

from advgen.cli import load_config

_DIR = os.path.dirname(os.path.dirname(__file__))
SIZES = (250, 500, 1000, 1500, 2000, 2500, 5000, 7500, 10000, 15000, 20000, 30000, 40000)
VARIANTS = ('normal', 'augmentation', 'adversarial', 'adversarial_transformation',
            'on_true_manifold', 'on_learned_manifold', 'combined')


def _config(name, *args):
  return load_config(os.path.join(_DIR, name), *args)


def get_config(size=None):
  if size not in (None, 'quick', 'paper_fonts', 'tiny'):
    raise ValueError(f'unknown argument {size!r}; use stutz_fonts.py, stutz_fonts.py:quick, '
                     'stutz_fonts.py:paper_fonts or stutz_fonts.py:tiny')
  config = ml_collections.ConfigDict()
  config.study = 'stutz'
  config.title = "Stutz et al.'s study on fonts"
  config.seed = 0
  config.num_models = 5
  config.train_sizes = SIZES
  config.variants = VARIANTS
  config.classifier = _config('fonts.py')
  config.generator = _config('vaegan_fonts.py')
  config.generator.dataset.num_train = max(SIZES)  # the whole training pool
  config.attack = _config('attack_fonts_learned.py')
  config.attack.attacks.pgd_linf = dict(config.attack.attacks.on_true_manifold, attack='pgd_linf')
  # The field's standard next to Stutz's PGD at the same radius (report: robust accuracy of both).
  config.attack.attacks.autoattack = dict(attack='autoattack', norm='linf', version='standard',
                                          epsilon=config.attack.attacks.pgd_linf['epsilon'])
  config.attack.num_images = 1000
  config.attack.distance.methods = ('true',)
  config.launcher = ml_collections.ConfigDict(dict(partition='', gpus_per_node=1,
                                                   cpus_per_task=8, timeout_min=240))
  if size == 'quick':
    _quick(config)
  elif size == 'paper_fonts':
    _paper_fonts(config)
  elif size == 'tiny':
    _tiny(config)
  return config


def _quick(config):
  config.num_models = 2
  config.train_sizes = (250, 1000, 4000)
  config.variants = ('normal', 'adversarial', 'on_true_manifold', 'on_learned_manifold')
  config.classifier.num_epochs = 10
  config.classifier.variant.num_steps = 10
  config.classifier.variant.step_size = 0.02
  config.generator.dataset.num_train = 4000
  config.generator.num_epochs = 10
  # Narrower nets: a class decoder runs at every step of the learned-manifold attack and training.
  config.generator.model.kwargs.encoder_channels = (16, 32, 64)
  config.generator.model.kwargs.decoder_channels = (64, 32, 16)
  config.generator.model.kwargs.discriminator_channels = (16, 32, 64)
  config.generator.eval.num_distance = 0
  config.generator.eval.num_reference = 0
  config.attack.num_images = 500
  # AutoAttack stays in the full grid: on the quick grid's adversarially trained cells its later
  # stages (APGD-T and FAB-T with 9 targets, Square's 5000 queries) run on every robust point and
  # would take the study past its 30-minute budget. Evaluate a cell with it afterwards:
  # scripts/attack.py --config=configs/attack_fonts_autoattack.py --workdir=QUICK/cells/CELL.
  del config.attack.attacks['autoattack']
  # Distances and validity of the first 20 examples (validity projects each onto all 10 classes).
  config.attack.distance.num_images = 20


DEBIAN_FONTS = ('/usr/share/fonts/truetype', '/usr/share/fonts/opentype')


def _paper_fonts(config):
  """Stutz et al.'s Fig. 4 (normal and on-true-manifold adversarial training against N) on 1000
  fonts. Each on-manifold training step runs a 10-step PGD of step 0.02 instead of 40 of 0.005
  (same reach, 4x less work) so that the grid fits a few hours of a 2-core CPU."""
  config.num_models = 3
  config.train_sizes = (500, 2500, 10000, 20000)
  config.variants = ('normal', 'on_true_manifold')
  config.classifier.dataset.update(dict(font_dirs=DEBIAN_FONTS, num_fonts=1000,
                                        font_selection='permuted', font_seed=0))
  config.classifier.variant.num_steps = 10
  config.classifier.variant.step_size = 0.02
  del config.attack.attacks['on_learned_manifold']
  del config.attack.attacks['autoattack']
  # No distances to the manifold: the true projection fits every one of the 1000 fonts (45x the
  # cost on the 22 bundled ones), and Fig. 4 needs only success rates and test errors.
  config.attack.distance.num_images = 0


def _tiny(config):
  """Two cells (normal and on-true-manifold training at N = 100), 2 seeds, no generator."""
  config.num_models = 2
  config.train_sizes = (100,)
  config.variants = ('normal', 'on_true_manifold')
  config.classifier = _config('fonts_tiny.py')
  config.classifier.variant.num_steps = 2
  config.generator = _config('vaegan_fonts_tiny.py')
  config.attack = _config('attack_fonts_tiny.py')
  del config.attack.attacks['cw_l2']
  del config.attack.attacks['deepfool']
  config.attack.distance.methods = ('true',)
