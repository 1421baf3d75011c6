"""HopSkipJump (Chen, Jordan & Wainwright 2019): a decision-based minimal-perturbation attack.

It only ever asks the classifier for predicted labels (argmax of `logits_fn`), never for scores or
gradients, so it also attacks classifiers without gradients (k-NN, a model behind an API). It
follows the authors' reference code (`hsja.py`): a misclassified uniform-noise image blended
towards x, a binary search to the boundary, then per iteration a Monte-Carlo estimate of the
boundary's normal from the signs of label changes around the boundary point (with the baseline
subtraction), a geometric step-size search and a binary search back to the boundary.

The B examples of a batch run together in lax loops with static shapes: each example's own
stopping rules are masks, and `queries` counts the labels each example needed, as if it had been
attacked alone.
"""

import functools
import math

import jax
import jax.numpy as jnp

from advgen.attacks import losses, norms, result
from advgen.errors import UserError

NORMS = ('l2', 'linf')
_BLEND_TOLERANCE = 1e-3  # the blend search of the initialization (reference code)
_MAX_BISECTIONS = 60  # float32 stops halving an interval long before this
_MAX_HALVINGS = 30  # step-size search: give up (step 0) after eps0 / 2**30


class HopSkipJumpResult(result.AttackResult):
  """An AttackResult plus `queries`: (B,) int32, the predicted labels each example asked for
  (the clean check, the initialization, every Monte-Carlo sample and search step)."""
  queries: jax.Array


def _distance(delta, norm):
  return norms.l2(delta) if norm == 'l2' else norms.linf(delta)


def _project(x, p, alpha, norm):
  """The point at `alpha` from x towards the adversarial p: on the segment (l2, alpha in [0, 1])
  or p clipped to the L-inf ball of radius alpha around x (linf)."""
  a = norms.expand(alpha, x)
  if norm == 'l2':
    return (1.0 - a) * x + a * p
  return jnp.clip(p, x - a, x + a)


def _boundary(adversarial, x, p, active, norm, theta):
  """Binary search between x (clean side) and p (adversarial side); returns the point on the
  adversarial side within `theta` (relative) of the boundary, and the queries per example."""
  if norm == 'l2':
    high = jnp.ones(x.shape[:1], x.dtype)
    threshold = jnp.full_like(high, theta)
  else:
    high = norms.linf(p - x)
    threshold = jnp.minimum(high * theta, theta)
  low = jnp.zeros_like(high)
  queries = jnp.zeros(x.shape[:1], jnp.int32)

  def open_(low, high):
    return active & (high - low > threshold)

  def cond(state):
    i, low, high, _ = state
    return (i < _MAX_BISECTIONS) & jnp.any(open_(low, high))

  def body(state):
    i, low, high, queries = state
    go = open_(low, high)
    mid = (low + high) / 2.0
    adv = adversarial(_project(x, p, mid, norm))
    low = jnp.where(go & ~adv, mid, low)
    high = jnp.where(go & adv, mid, high)
    return i + 1, low, high, queries + go

  _, _, high, queries = jax.lax.while_loop(cond, body, (0, low, high, queries))
  return _project(x, p, high, norm), queries


def _initialize(adversarial, x, key, box, alive, attempts):
  """A misclassified start: uniform noise in the box (at most `attempts` draws, as in the paper),
  else the first other image of the batch that is not of the example's class; then blended
  towards x up to the boundary. Returns (start point, found, queries)."""
  batch = x.shape[0]

  def cond(state):
    i, found, _, _ = state
    return (i < attempts + batch - 1) & jnp.any(alive & ~found)

  def body(state):
    i, found, start, queries = state
    noise = jax.random.uniform(jax.random.fold_in(key, i), x.shape, x.dtype, box[0], box[1])
    candidate = jnp.where(i < attempts, noise, jnp.roll(x, i - attempts + 1, axis=0))
    looking = alive & ~found
    take = looking & adversarial(candidate)
    start = jnp.where(norms.expand(take, x), candidate, start)
    return i + 1, found | take, start, queries + looking

  init = (0, jnp.zeros(alive.shape, bool), x, jnp.zeros(alive.shape, jnp.int32))
  _, found, start, queries = jax.lax.while_loop(cond, body, init)
  start, blend_queries = _boundary(adversarial, x, start, found, 'l2', _BLEND_TOLERANCE)
  return start, found, queries + blend_queries


def _gradient_direction(adversarial_many, point, delta, num_evals, key, norm, box, chunk):
  """Unit estimate of the boundary's normal at `point` (towards the adversarial side) from the
  labels of `num_evals` random points at distance `delta`, `chunk` samples per classifier call.

  The estimate is mean((phi - mean(phi)) * u) with phi = +-1 (adversarial or not): subtracting the
  baseline mean(phi) removes the bias of a boundary point that is not exactly on the boundary.
  When all samples agree, it is phi * mean(u), as in the authors' code."""
  safe_delta = norms.expand(jnp.where(delta > 0, delta, 1.0), point)[None]
  sample_axes = tuple(range(2, point.ndim + 1))

  def body(c, sums):
    s_fu, s_u, s_f = sums
    k = jax.random.fold_in(key, c)
    shape = (chunk,) + point.shape
    u = (jax.random.normal(k, shape, point.dtype) if norm == 'l2' else
         jax.random.uniform(k, shape, point.dtype, -1.0, 1.0))
    u = u / jnp.sqrt(jnp.sum(jnp.square(u), axis=sample_axes, keepdims=True))
    perturbed = jnp.clip(point[None] + safe_delta * u, box[0], box[1])
    u = (perturbed - point[None]) / safe_delta
    phi = 2.0 * adversarial_many(perturbed).astype(point.dtype) - 1.0  # (chunk, B)
    valid = (c * chunk + jnp.arange(chunk) < num_evals).astype(point.dtype)[:, None]
    weight = norms.expand(valid * phi, u)
    return (s_fu + jnp.sum(weight * u, axis=0),
            s_u + jnp.sum(norms.expand(valid, u) * u, axis=0),
            s_f + jnp.sum(valid * phi, axis=0))

  zeros = (jnp.zeros_like(point), jnp.zeros_like(point), jnp.zeros(point.shape[:1], point.dtype))
  s_fu, s_u, s_f = jax.lax.fori_loop(0, (num_evals + chunk - 1) // chunk, body, zeros)
  mean_phi = s_f / num_evals
  baseline = jnp.where(jnp.abs(mean_phi) < 1.0, mean_phi, 0.0)
  grad = s_fu - norms.expand(baseline, s_u) * s_u
  return grad / norms.expand(jnp.maximum(norms.l2(grad), 1e-30), grad)


def _step_size(adversarial, point, update, eps, active, box):
  """Geometric search: halve eps until point + eps * update is still adversarial (0 if never)."""

  def cond(state):
    i, searching, _, _ = state
    return (i <= _MAX_HALVINGS) & jnp.any(searching)

  def body(state):
    i, searching, eps, queries = state
    adv = adversarial(jnp.clip(point + norms.expand(eps, point) * update, box[0], box[1]))
    queries = queries + searching
    searching = searching & ~adv
    return i + 1, searching, jnp.where(searching, eps / 2.0, eps), queries

  init = (0, active, eps, jnp.zeros(active.shape, jnp.int32))
  _, searching, eps, queries = jax.lax.while_loop(cond, body, init)
  return jnp.where(searching, 0.0, eps), queries


@functools.partial(jax.jit, static_argnames=('logits_fn', 'norm', 'num_iterations',
                                             'max_num_evals', 'init_num_evals', 'init_attempts',
                                             'query_batch'))
def hopskipjump(logits_fn, x, y, key, *, norm='l2', num_iterations=40, max_num_evals=10000,
                init_num_evals=100, gamma=1.0, box=(0.0, 1.0), init_attempts=100,
                query_batch=4096):
  """Decision-based minimal perturbation of `x` (B, ...) out of class `y`, in the L2 or L-inf norm.

  Iteration t (1-based) estimates the boundary's normal from min(init_num_evals * sqrt(t),
  max_num_evals) label queries at radius delta (0.1 of the box at t = 1, then gamma / d times the
  last step's distance; d = size of one input), steps eps = dist / sqrt(t) along it (its sign for
  linf), halving eps until the label still differs, and bisects back towards x to relative
  precision theta = gamma / d**1.5 (l2) or gamma / d**2 (linf). Defaults are the paper's.
  Each example keeps its closest adversarial boundary point. Inputs already misclassified are
  returned unchanged (distance 0); those for which neither a noise image (`init_attempts`
  draws) nor another image of the batch is misclassified are returned unchanged with success
  False. Every queried point lies in `box` (scalar bounds). `query_batch` bounds the images per
  classifier call of the Monte-Carlo estimate. Returns a HopSkipJumpResult (`queries` per
  example); its `logits` are those of x_adv, read for the result only (not counted as a query).
  """
  if norm not in NORMS:
    raise UserError(f'unknown HopSkipJump norm {norm!r}; choose one of {", ".join(NORMS)}')
  batch = x.shape[0]
  d = math.prod(x.shape[1:])
  theta = gamma / (d * math.sqrt(d)) if norm == 'l2' else gamma / d**2
  chunk = max(1, min(query_batch // batch, max_num_evals))

  def adversarial(images):
    return jnp.argmax(logits_fn(images), axis=-1) != y

  def adversarial_many(images):  # (n, B, ...) -> (n, B)
    n = images.shape[0]
    labels = jnp.argmax(logits_fn(images.reshape((n * batch,) + x.shape[1:])), axis=-1)
    return labels.reshape(n, batch) != y[None]

  alive = ~adversarial(x)  # misclassified inputs need no attack
  queries = jnp.ones(y.shape, jnp.int32)
  init_key, loop_key = jax.random.split(key)
  start, found, init_queries = _initialize(adversarial, x, init_key, box, alive, init_attempts)
  alive &= found
  point, search_queries = _boundary(adversarial, x, jnp.where(norms.expand(alive, x), start, x),
                                    alive, norm, theta)
  queries += init_queries + search_queries
  dist_post = _distance(start - x, norm)
  best, best_dist = point, jnp.where(alive, _distance(point - x, norm), jnp.inf)

  def iteration(state, t):
    point, dist_post, best, best_dist, queries = state
    k_grad, k_step = jax.random.split(jax.random.fold_in(loop_key, t))
    delta = jnp.where(t == 1, 0.1 * (box[1] - box[0]), gamma / d * dist_post).astype(x.dtype)
    num_evals = jnp.minimum(jnp.floor(init_num_evals * jnp.sqrt(t.astype(jnp.float32))),
                            max_num_evals).astype(jnp.int32)
    grad = _gradient_direction(adversarial_many, point, delta, num_evals, k_grad, norm, box, chunk)
    update = grad if norm == 'l2' else jnp.sign(grad)
    dist = _distance(point - x, norm)
    eps, step_queries = _step_size(adversarial, point, update,
                                   dist / jnp.sqrt(t.astype(x.dtype)), alive, box)
    stepped = jnp.clip(point + norms.expand(eps, point) * update, box[0], box[1])
    new_point, search_queries = _boundary(adversarial, x, stepped, alive, norm, theta)
    keep = lambda new, old: jnp.where(norms.expand(alive, new), new, old)
    point, dist_post = keep(new_point, point), keep(_distance(stepped - x, norm), dist_post)
    new_dist = _distance(point - x, norm)
    better = alive & (new_dist < best_dist)
    best = jnp.where(norms.expand(better, point), point, best)
    best_dist = jnp.where(better, new_dist, best_dist)
    queries += jnp.where(alive, num_evals + step_queries + search_queries, 0)
    return (point, dist_post, best, best_dist, queries), None

  state = (point, dist_post, best, best_dist, queries)
  state, _ = jax.lax.scan(iteration, state, jnp.arange(1, num_iterations + 1))
  _, _, best, _, queries = state
  x_adv = jnp.where(norms.expand(alive, x), best, x)
  logits = logits_fn(x_adv)
  base = result.build(x_adv=x_adv, v=x_adv, reference=x, distance=_distance(x_adv - x, norm),
                      success=losses.success(logits, y, False), logits=logits,
                      loss=-losses.margin(logits, y))
  return HopSkipJumpResult(**vars(base), queries=queries)
