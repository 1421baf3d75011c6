"""Attack objectives (maximized) and the success criterion."""

import jax
import jax.numpy as jnp
import optax

from advgen.errors import UserError

LOSSES = ('ce', 'margin', 'dlr', 'dlr_targeted')
_DLR_EPS = 1e-12  # keeps the ratio finite when the top logits tie (Croce & Hein's value)


def margin(logits, y):
  """z_y - max_{j != y} z_j: positive iff class y wins. The other classes' max masks y with -inf."""
  mask = jax.nn.one_hot(y, logits.shape[-1], dtype=bool)
  other = jnp.max(jnp.where(mask, -jnp.inf, logits), axis=-1)
  return jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0] - other


MIN_CLASSES = {'dlr': 3, 'dlr_targeted': 4}  # DLR's denominator needs z_pi3, the targeted z_pi4


def check_classes(name, num_classes):
  """A UserError if the loss `name` needs more classes than the model has."""
  if num_classes < MIN_CLASSES.get(name, 0):
    raise UserError(f'the {name} loss needs at least {MIN_CLASSES[name]} classes, the model has '
                    f'{num_classes}; use the ce loss (apgd_ce) on this model')


def _sorted_logits(logits, name):
  """The logits sorted descending; a UserError at trace time if the model has too few classes."""
  check_classes(name, logits.shape[-1])
  return -jnp.sort(-logits, axis=-1)


def dlr(logits, y):
  """Difference of logits ratio (Croce & Hein 2020): -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3),
  z sorted descending. Invariant to shifting and scaling the logits, so it does not vanish on
  saturated softmax outputs the way cross-entropy does. Needs >= 3 classes."""
  z = _sorted_logits(logits, 'dlr')
  return -margin(logits, y) / (z[:, 0] - z[:, 2] + _DLR_EPS)


def dlr_targeted(logits, y, target):
  """Targeted DLR (Croce & Hein 2020): -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2); it rises as
  the target's logit overtakes the label's. Needs >= 4 classes."""
  z = _sorted_logits(logits, 'dlr_targeted')
  pick = lambda c: jnp.take_along_axis(logits, c[:, None], axis=-1)[:, 0]
  return -(pick(y) - pick(target)) / (z[:, 0] - (z[:, 2] + z[:, 3]) / 2 + _DLR_EPS)


def objective(logits, y, target=None, *, loss, targeted, kappa):
  """Per-example value an attack maximizes; `y` holds targets when `targeted`.

  'ce': cross-entropy of y (untargeted) or minus the cross-entropy of the target.
  'margin': the Carlini-Wagner margin clamped at `kappa`, min(-margin(y), kappa) untargeted and
  min(margin(target), kappa) targeted; it stops rewarding once the margin exceeds kappa.
  'dlr': the untargeted DLR loss of the labels y.
  'dlr_targeted': the targeted DLR loss, which needs both the labels y and the classes `target`;
  success still means leaving y (as in AutoAttack's APGD-T), so it is not `targeted`.
  """
  if loss in ('dlr', 'dlr_targeted') and targeted:
    raise UserError(f'the {loss} loss takes the labels as y (targeted=False); dlr_targeted '
                    'takes the target classes separately')
  if loss == 'dlr':
    return dlr(logits, y)
  if loss == 'dlr_targeted':
    if target is None:
      raise UserError('the dlr_targeted loss needs target classes (apgd with loss=dlr_targeted '
                      'picks them)')
    return dlr_targeted(logits, y, target)
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
