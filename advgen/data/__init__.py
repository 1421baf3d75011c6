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
  `manifold` is the exact generator (a FontsManifold, Spheres or Circle), None for real data.
  """
  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  latents: dict = dataclasses.field(default_factory=dict)
  manifold: Any = None

  @property
  def input_shape(self):
    return self.x_train.shape[1:]


def load(config):
  """Loads `config` (name, num_train, num_test, seed, and per-dataset fields) into a Dataset."""
  name = config.name
  if name not in NAMES:
    raise UserError(f'unknown dataset {name!r}; choose one of {", ".join(NAMES)}')
  for field in ('num_train', 'num_test'):
    value = config.get(field)
    if value is not None and value <= 0:
      raise UserError(f'config.dataset.{field} must be positive, got {value}')
  if name in GENERATED:
    return _generated(config)
  data_dir = config.get('data_dir')
  x_train, y_train = tfds.load(name, 'train', data_dir, config.get('num_train'), config.seed)
  x_test, y_test = tfds.load(name, 'test', data_dir, config.get('num_test'), config.seed + 1)
  return Dataset(name, x_train, y_train, x_test, y_test, tfds.NUM_CLASSES[name])


def fonts_manifold(config):
  """The fonts generator a dataset config describes (difficulty, font_dirs, num_fonts)."""
  return fonts.manifold(config.get('difficulty', 'hard'), tuple(config.get('font_dirs', ())),
                        config.get('num_fonts'))


def _generated(config):
  if config.get('num_train') is None or config.get('num_test') is None:
    raise UserError(f'{config.name} is generated: set config.dataset.num_train and num_test')
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
  return Dataset(config.name, x_train, y_train, x_test, y_test, num_classes,
                 {'train': lat_train, 'test': lat_test}, generator)
