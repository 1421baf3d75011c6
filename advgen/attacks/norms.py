"""Per-example norms and unit steepest-ascent directions (axis 0 is the batch)."""

import jax.numpy as jnp

_TINY = 1e-12


def _axes(a):
  return tuple(range(1, a.ndim))


def linf(a):
  return jnp.max(jnp.abs(a), axis=_axes(a))


def l2(a):
  return jnp.sqrt(jnp.sum(jnp.square(a), axis=_axes(a)))


def l1(a):
  return jnp.sum(jnp.abs(a), axis=_axes(a))


def expand(r, like):
  """Right-pads the shape of `r` (scalar or per-example) with ones so it broadcasts over `like`."""
  return jnp.reshape(r, jnp.shape(r) + (1,) * (jnp.ndim(like) - jnp.ndim(r)))


def sign_direction(g):
  """Steepest ascent of unit L-inf norm: the sign of the gradient."""
  return jnp.sign(g)


def l2_direction(g):
  """Steepest ascent of unit L2 norm: the normalized gradient (zero for a zero gradient)."""
  return g / expand(jnp.maximum(l2(g), _TINY), g)


def l1_direction(g):
  """Steepest ascent of unit L1 norm: the top-magnitude coordinate (ties share the step)."""
  magnitude = jnp.abs(g)
  top = magnitude == expand(jnp.max(magnitude, axis=_axes(g)), g)
  top &= magnitude > 0
  count = jnp.maximum(jnp.sum(top, axis=_axes(g)), 1)
  return jnp.sign(g) * top / expand(count, g)


DIRECTIONS = {'sign': sign_direction, 'l2': l2_direction, 'l1': l1_direction}
BY_NAME = {'linf': linf, 'l2': l2, 'l1': l1}  # the threat models' names
