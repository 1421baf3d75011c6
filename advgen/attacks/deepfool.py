"""DeepFool (Moosavi-Dezfooli et al.): iterated steps to the nearest linearized class boundary.

It estimates the *minimal* perturbation rather than attacking within a budget.
"""

import functools

import jax
import jax.numpy as jnp

from advgen.attacks import canonical, losses, norms, result
from advgen.errors import UserError

_DUAL = {'l2': norms.l2, 'linf': norms.l1}


def _step(w, f, norm):
  """The smallest step (in `norm`) that moves the linearized f + <w, r> to zero."""
  dual = _DUAL[norm](w)
  scale = jnp.abs(f) / jnp.where(dual > 0, dual, 1.0)
  direction = w / norms.expand(jnp.where(dual > 0, dual, 1.0), w) if norm == 'l2' else jnp.sign(w)
  return norms.expand(scale, w) * direction


@functools.partial(jax.jit, static_argnames=('logits_fn', 'norm', 'max_iter', 'num_classes'))
def deepfool(logits_fn, x, y, *, norm='l2', overshoot=0.02, max_iter=50, num_classes=None,
             box=(0.0, 1.0)):
  """Minimal perturbation of `x` (B, H, W, C) that leaves class `y`, in the L2 or L-inf norm.

  Each iteration linearizes the logit differences f_k - f_y for the candidate classes k (all
  others, or the `num_classes` highest at x) and steps to the closest linearized boundary; the
  input shown is clip(x + (1 + overshoot) * r, *box). `box=None` leaves it unconstrained, for
  inputs that are not images, e.g. latent codes (B, d) of `z -> logits_fn(decode_fn(z))`; `box`
  bounds may be scalars or arrays that broadcast against `x`. Examples stop individually once
  misclassified (a mask inside a while_loop that ends when all are done or after `max_iter`
  steps). For an affine classifier one step is exact: distance (1 + overshoot) times the minimal.
  """
  if norm not in _DUAL:
    raise UserError(f'unknown DeepFool norm {norm!r}; choose one of {", ".join(_DUAL)}')
  logits = logits_fn(x)
  num_logits = logits.shape[-1]
  others = num_logits - 1 if num_classes is None else min(num_classes, num_logits - 1)
  own = jax.nn.one_hot(y, num_logits, dtype=bool)
  candidates = jax.lax.top_k(jnp.where(own, -jnp.inf, logits), others)[1]  # (B, others)
  cotangents = jnp.moveaxis(jax.nn.one_hot(candidates, num_logits, dtype=x.dtype) -
                            own[:, None].astype(x.dtype), 1, 0)  # (others, B, K)
  if box is None:
    image = lambda r: x + (1.0 + overshoot) * r
  else:
    image = lambda r: jnp.clip(x + (1.0 + overshoot) * r, box[0], box[1])

  @canonical.canonical_convolutions
  def linearize(point):
    """Logits and the gradients of f_k - f_y, (others, B, H, W, C), at `point`."""
    logits, vjp = jax.vjp(logits_fn, point)
    return logits, jax.vmap(vjp)(cotangents)[0]

  def body(state):
    i, r, active, _ = state
    logits, w = linearize(image(r))
    active &= ~losses.success(logits, y, False)
    f = (jnp.take_along_axis(logits, candidates, axis=-1) - jnp.take_along_axis(
        logits, y[:, None], axis=-1)).T  # (others, B)
    dual = jax.vmap(_DUAL[norm])(w)
    distance = jnp.where(dual > 0, jnp.abs(f) / jnp.where(dual > 0, dual, 1.0), jnp.inf)
    nearest = jnp.argmin(distance, axis=0)
    pick = lambda a: jnp.take_along_axis(a, norms.expand(nearest, a[0])[None], axis=0)[0]
    step = _step(pick(w), pick(f), norm)
    move = active & jnp.isfinite(pick(distance)) & (i < max_iter)
    return i + 1, r + jnp.where(norms.expand(move, step), step, 0.0), active, logits

  def cond(state):
    i, _, active, _ = state
    return (i <= max_iter) & jnp.any(active)

  init = (0, jnp.zeros_like(x), jnp.ones(y.shape, bool), logits)
  _, r, active, logits = jax.lax.while_loop(cond, body, init)
  x_adv = image(r)
  distance = norms.l2(x_adv - x) if norm == 'l2' else norms.linf(x_adv - x)
  return result.build(x_adv=x_adv, v=x_adv, reference=x, distance=distance, success=~active,
                      logits=logits, loss=-losses.margin(logits, y))
