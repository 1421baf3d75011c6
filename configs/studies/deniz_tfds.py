"""Deniz et al.'s overfitting study on a tensorflow-datasets dataset, as in the paper (mnist,
cifar10; any classification dataset of advgen.data works), optionally followed by `,quick` or
`,tiny` (the sizes of configs/studies/deniz_fonts.py); prepare the dataset offline first (README):

  python scripts/study.py --config=configs/studies/deniz_tfds.py:cifar10 \
      --workdir=/tmp/advgen/deniz_cifar10 --config.classifier.dataset.data_dir=/data/tfds

The full config uses the whole train and test splits (each run reshuffles them, stratified).
"""

import os

from ml_collections import config_dict

from advgen.cli import load_config


def get_config(arg='mnist'):
  name, _, size = arg.partition(',')
  if size not in ('', 'quick', 'tiny'):
    raise ValueError(f'unknown size {size!r}; use NAME, NAME,quick or NAME,tiny')
  config = load_config(os.path.join(os.path.dirname(__file__), 'deniz_fonts.py'), size or None)
  config.title = f"Deniz et al.'s overfitting study on {name}"
  dataset = config.classifier.dataset
  num_train, num_test = (None, None) if not size else (dataset.num_train, dataset.num_test)
  config.classifier.dataset = dict(
      name=name, num_train=config_dict.placeholder(int), num_test=config_dict.placeholder(int),
      seed=0, data_dir=config_dict.placeholder(str))  # None: tfds's default folder
  config.classifier.dataset.num_train, config.classifier.dataset.num_test = num_train, num_test
  return config
