"""PGD step rules as optax transforms.

The PGD engine hands optax the gradient of the *negated* objective (optax minimizes), so any optax
optimizer works unchanged, e.g. `optax.adam(0.005)` as in Stutz et al. The named rules take a
normalized step of `step_size` along the steepest ascent direction of their norm.
"""

import jax
import optax

from advgen.attacks import norms
from advgen.errors import UserError


def steepest(name, step_size):
  """A stateless rule moving `step_size` along the unit steepest-ascent direction `name`."""
  direction = norms.DIRECTIONS[name]

  def update(updates, params=None):
    del params
    return jax.tree.map(lambda g: -step_size * direction(g), updates)

  return optax.stateless(update)


def resolve(step_rule, step_size, default):
  """The optax transform for a rule name, a transform, or None (the threat model's `default`)."""
  if isinstance(step_rule, optax.GradientTransformation):
    if step_size is not None:
      raise UserError('step_size is set by the optax optimizer given as step_rule; drop step_size')
    return step_rule
  name = default if step_rule is None else step_rule
  if name not in norms.DIRECTIONS:
    raise UserError(f'unknown step rule {name!r}; choose one of {", ".join(norms.DIRECTIONS)} '
                    'or pass an optax.GradientTransformation')
  if step_size is None:
    raise UserError(f'step rule {name!r} needs a step_size')
  return steepest(name, step_size)
