"""Attack objectives (maximized) and the success criterion."""

import jax
import jax.numpy as jnp
import optax

from advgen.errors import UserError

LOSSES = ('ce', 'margin')


def margin(logits, y):
  """z_y - max_{j != y} z_j: positive iff class y wins. The other classes' max masks y with -inf."""
  mask = jax.nn.one_hot(y, logits.shape[-1], dtype=bool)
  other = jnp.max(jnp.where(mask, -jnp.inf, logits), axis=-1)
  return jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0] - other


def objective(logits, y, *, loss, targeted, kappa):
  """Per-example value an attack maximizes; `y` holds targets when `targeted`.

  'ce': cross-entropy of y (untargeted) or minus the cross-entropy of the target.
  'margin': the Carlini-Wagner margin clamped at `kappa`, min(-margin(y), kappa) untargeted and
  min(margin(target), kappa) targeted; it stops rewarding once the margin exceeds kappa.
  """
  if loss == 'ce':
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return -ce if targeted else ce
  if loss == 'margin':
    m = margin(logits, y)
    return jnp.minimum(m if targeted else -m, kappa)
  raise UserError(f'unknown attack loss {loss!r}; choose one of {", ".join(LOSSES)}')


def success(logits, y, targeted):
  """Prediction differs from the label (untargeted) or equals the target (targeted)."""
  prediction = jnp.argmax(logits, axis=-1)
  return prediction == y if targeted else prediction != y
