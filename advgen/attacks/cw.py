"""Carlini-Wagner L2: minimal-L2 adversarial examples by a penalized, box-free optimization."""

import functools

import jax
import jax.numpy as jnp
import optax

from advgen.attacks import canonical, losses, norms, result
from advgen.attacks.pytree import Pytree

_NO_BOUND = 1e10


class _Search(Pytree):
  """Per-example binary search over c and the best (smallest L2) success so far."""
  c: jax.Array
  lower: jax.Array
  upper: jax.Array
  x: jax.Array
  squared_l2: jax.Array
  logits: jax.Array


def _hinge(logits, y, targeted, kappa):
  """max(margin, -kappa) with the margin of the class to leave (or minus the target's margin)."""
  m = losses.margin(logits, y)
  return jnp.maximum(-m if targeted else m, -kappa)


def _confident(logits, y, targeted, kappa):
  """Success with `kappa` to spare, the criterion of the search and of the kept example."""
  m = losses.margin(logits, y)
  return (m > kappa) if targeted else (-m > kappa)


@functools.partial(jax.jit, static_argnames=('logits_fn', 'targeted', 'binary_search_steps',
                                             'num_steps'))
def carlini_wagner_l2(logits_fn, x, y, *, targeted=False, kappa=0.0, c_init=1e-3,
                      binary_search_steps=9, num_steps=1000, lr=0.01):
  """Minimizes ||x' - x||^2 + c * max(margin, -kappa) over x' = (tanh(w) + 1) / 2 with Adam.

  Each binary-search step restarts Adam from x and updates c per example: halve the bracket after
  a success, else raise c (times 10 until an upper bound exists). Returns the smallest-L2 example
  that succeeded with `kappa` to spare, or x itself (success False) when none did. Defaults follow
  the paper's code except `num_steps` (10000 there).
  """
  w0 = jnp.arctanh((2.0 * x - 1.0) * (1.0 - 1e-6))
  to_image = lambda w: (jnp.tanh(w) + 1.0) / 2.0
  optimizer = optax.adam(lr)

  def penalized(w, c):
    image = to_image(w)
    logits = logits_fn(image)
    distance = jnp.sum(jnp.square(image - x), axis=tuple(range(1, x.ndim)))
    return jnp.sum(distance + c * _hinge(logits, y, targeted, kappa)), (image, distance, logits)

  grad_fn = canonical.canonical_convolutions(jax.value_and_grad(penalized, has_aux=True))

  def record(search, found, image, distance, logits):
    hit = _confident(logits, y, targeted, kappa)
    better = hit & (distance < search.squared_l2)
    keep = lambda new, old: jnp.where(norms.expand(better, new), new, old)
    search = search.replace(x=keep(image, search.x), squared_l2=keep(distance, search.squared_l2),
                            logits=keep(logits, search.logits))
    return search, found | hit

  def search_step(search, _):

    def step(carry, _):
      w, opt_state, search, found = carry
      (_, aux), grad = grad_fn(w, search.c)
      search, found = record(search, found, *aux)
      updates, opt_state = optimizer.update(grad, opt_state, w)
      return (optax.apply_updates(w, updates), opt_state, search, found), None

    found = jnp.zeros(y.shape, bool)
    (w, _, search, found), _ = jax.lax.scan(step, (w0, optimizer.init(w0), search, found),
                                           length=num_steps)
    _, aux = penalized(w, search.c)
    search, found = record(search, found, *aux)
    upper = jnp.where(found, jnp.minimum(search.upper, search.c), search.upper)
    lower = jnp.where(found, search.lower, jnp.maximum(search.lower, search.c))
    c = jnp.where(upper < _NO_BOUND, (lower + upper) / 2.0, search.c * 10.0)
    return search.replace(c=c, lower=lower, upper=upper), None

  batch = y.shape[0]
  logits = logits_fn(x)
  start = _Search(c=jnp.full((batch,), c_init, x.dtype), lower=jnp.zeros((batch,), x.dtype),
                  upper=jnp.full((batch,), _NO_BOUND, x.dtype), x=x,
                  squared_l2=jnp.full((batch,), jnp.inf, x.dtype), logits=logits)
  search, _ = jax.lax.scan(search_step, start, length=binary_search_steps)
  success = jnp.isfinite(search.squared_l2) & losses.success(search.logits, y, targeted)
  return result.build(x_adv=search.x, v=search.x, reference=x, distance=norms.l2(search.x - x),
                      success=success, logits=search.logits,
                      loss=_hinge(search.logits, y, targeted, kappa))
