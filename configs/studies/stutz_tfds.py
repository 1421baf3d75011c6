"""Stutz et al.'s study on a tensorflow-datasets dataset, with learned manifolds only (no known
generator): training-set sizes x (normal, adversarial, on-learned-manifold adversarial) training,
each cell attacked in image space and on the class-specific VAE-GANs' manifold, distances by
generator inversion and the 50-nearest-neighbour subspace. The argument names the dataset
(fashion_mnist, emnist, mnist, celeb_a (male/female, 56x48), ...), optionally followed by
`,quick` or `,tiny`; prepare the dataset offline first (README):

  python scripts/study.py --config=configs/studies/stutz_tfds.py:fashion_mnist \
      --workdir=/tmp/advgen/stutz_fashion --config.classifier.dataset.data_dir=/data/tfds \
      --config.generator.dataset.data_dir=/data/tfds
"""

import os

from ml_collections import config_dict

from advgen.cli import load_config

_DIR = os.path.dirname(__file__)


def get_config(arg='fashion_mnist'):
  name, _, size = arg.partition(',')
  if size not in ('', 'quick', 'tiny'):
    raise ValueError(f'unknown size {size!r}; use NAME, NAME,quick or NAME,tiny')
  config = load_config(os.path.join(_DIR, 'stutz_fonts.py'), size or None)
  config.title = f"Stutz et al.'s study on {name} (learned manifolds)"
  config.variants = ('normal', 'adversarial', 'on_learned_manifold')
  for part in (config.classifier, config.generator):
    num_train, num_test = part.dataset.num_train, part.dataset.num_test
    part.dataset = dict(name=name, num_train=num_train, num_test=num_test, seed=0,
                        data_dir=config_dict.placeholder(str))  # None: tfds's default folder
  config.classifier.optimizer.learning_rate = 0.001  # as configs/tfds_classifier.py
  on_true = config.attack.attacks.on_true_manifold
  config.attack.attacks.on_learned_manifold = dict(on_true, attack='on_learned_manifold')
  del config.attack.attacks['on_true_manifold']
  config.attack.distance.methods = ('learned', 'subspace')
  if size == 'tiny':
    config.variants = ('normal', 'on_learned_manifold')
  return config
