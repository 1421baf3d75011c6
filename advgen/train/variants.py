"""Training variants as batch transformations `(logits_fn, x, y, key) -> (x, y)`.

`logits_fn` is the model being trained (inference mode), so adversarial variants can attack it.
"""

import jax

from advgen import transforms
from advgen.errors import UserError


def normal(logits_fn, x, y, key):
  del logits_fn, key
  return x, y


def augmentation(radius, ranges):
  """Random affine transformations around the identity (Stutz et al.), clipped to `ranges`."""

  def transform(logits_fn, x, y, key):
    del logits_fn
    theta = transforms.sample_near_identity(key, x.shape[:1], radius, ranges)
    return jax.vmap(transforms.transform)(x, theta), y

  return transform


def batch_transform(config):
  """The transformation named by config.variant.name."""
  name = config.variant.name
  if name == 'normal':
    return normal
  if name == 'augmentation':
    ranges = transforms.RANGES[config.dataset.get('difficulty', 'hard')]
    return augmentation(config.variant.radius, ranges)
  raise UserError(f'unknown training variant {name!r}; choose one of normal, augmentation')
