"""One entry point, `load(config)`, for every dataset: fonts (default), tfds and toy manifolds."""

import dataclasses
from typing import Any

import jax
import numpy as np

from advgen.data import fonts, tfds, toy
from advgen.errors import UserError

GENERATED = ('fonts', 'spheres', 'circle')
NAMES = GENERATED + tuple(tfds.DATASETS)


@dataclasses.dataclass
class Dataset:
  """Arrays in the library's contract (float32 [0, 1], int32 labels) plus generative extras.

  `latents` holds the true latent variables of generated data ({'train': {...}, 'test': {...}});
  `manifold` is the exact generator (a FontsManifold, Spheres or Circle), None for real data;
  `info` what a run records of the data beyond its config (fonts: their count and file hash).
  """
  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  latents: dict = dataclasses.field(default_factory=dict)
  manifold: Any = None
  info: dict = dataclasses.field(default_factory=dict)

  @property
  def input_shape(self):
    return self.x_train.shape[1:]


def check(config, where='config.dataset', train_field=None):
  """Refuses a dataset config that cannot give what it asks for (fonts it does not have, more
  examples than a split holds) without sampling it, so a study can refuse before any work; the
  fonts' prototypes stay cached for `load`. Errors name the fields under `where` (num_train as
  `train_field` where another field sets it)."""
  name = config.name
  if name not in NAMES:
    raise UserError(f'unknown dataset {name!r} in {where}.name; choose one of {", ".join(NAMES)}')
  for field in ('num_train', 'num_test'):
    value = config.get(field)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
      raise UserError(f'{where}.{field} must be positive (an integer), got {value!r}')
  if name in GENERATED and (config.get('num_train') is None or config.get('num_test') is None):
    raise UserError(f'{name} is generated: set {where}.num_train and num_test')
  if name == 'fonts':
    fonts_manifold(config, where)
  elif name not in GENERATED:
    for split in ('train', 'test'):
      field = train_field if split == 'train' and train_field else f'{where}.num_{split}'
      tfds.check(name, split, config.get('data_dir'), config.get(f'num_{split}'), field)


def load(config):
  """Loads `config` (name, num_train, num_test, seed, and per-dataset fields) into a Dataset."""
  check(config)
  name = config.name
  if name in GENERATED:
    return _generated(config)
  data_dir = config.get('data_dir')
  x_train, y_train = tfds.load(name, 'train', data_dir, config.get('num_train'), config.seed)
  x_test, y_test = tfds.load(name, 'test', data_dir, config.get('num_test'), config.seed + 1)
  return Dataset(name, x_train, y_train, x_test, y_test, tfds.NUM_CLASSES[name])


def fonts_manifold(config, where='config.dataset'):
  """The fonts generator a dataset config describes (difficulty, font_dirs, num_fonts,
  font_selection, font_seed)."""
  return fonts.manifold(config.get('difficulty', 'hard'), tuple(config.get('font_dirs', ())),
                        config.get('num_fonts'), where,
                        selection=config.get('font_selection', 'path_order'),
                        seed=config.get('font_seed', 0))


def _generated(config):
  if config.name == 'fonts':
    generator = fonts_manifold(config)
    num_classes = len(fonts.LETTERS)
    sample = lambda key, num: fonts.sample(generator, key, num)
  elif config.name == 'spheres':
    generator = toy.Spheres(dim=config.get('dim', 10))
    num_classes, sample = generator.num_classes, generator.sample
  else:
    generator = toy.Circle()
    num_classes, sample = generator.num_classes, generator.sample
  train_key, test_key = jax.random.split(jax.random.key(config.seed))
  x_train, y_train, lat_train = sample(train_key, config.num_train)
  x_test, y_test, lat_test = sample(test_key, config.num_test)
  info = generator.info if config.name == 'fonts' else {}
  return Dataset(config.name, x_train, y_train, x_test, y_test, num_classes,
                 {'train': lat_train, 'test': lat_test}, generator, info)
