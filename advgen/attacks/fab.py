"""FAB, the fast adaptive boundary attack (Croce & Hein, ICML 2020): minimally distorted
adversarial examples in the L-inf, L2 or L1 norm.

Each step linearizes the classifier at the current point and projects both the current point and
the original onto the nearest linearized decision hyperplane intersected with the [0, 1] box
(exactly, by sorting); the next point is a combination of the two projections biased towards the
original. Once a point is adversarial the attack steps back towards the original, so it keeps
shrinking the perturbation after its first success and every step may improve the result. The
constants and the restart and target schedules are those of the authors' code (fra31/auto-attack,
`fab_base.py`).
"""

import functools

import jax
import jax.numpy as jnp

from advgen.attacks import canonical, losses, norms, result
from advgen.attacks.pgd import chunked, resolve_chunk_size
from advgen.attacks.pytree import Pytree
from advgen.errors import UserError

NORMS = norms.BY_NAME
_DUAL = {'linf': norms.l1, 'l2': norms.l2, 'l1': norms.linf}
# Radius of the random restarts without an epsilon: the reference's default epsilons.
RESTART_RADIUS = {'linf': 0.3, 'l2': 1.0, 'l1': 5.0}
_TINY = 1e-12  # the reference's guard of the distance to a hyperplane with a zero gradient
_SMALL = 1e-8  # the reference's floor of the projection norms in the bias alpha


def _water_fill(a, cap, need, slope):
  """min sum-or-max of e s.t. <a, e> = need, 0 <= e <= cap, solved by e = min(lam * slope, cap).

  The reduction g(lam) = sum a * min(lam * slope, cap) is piecewise linear and increasing with
  breakpoints cap / slope; after sorting them, the segment where g crosses `need` gives lam in
  closed form. Where g never reaches `need`, every coordinate is saturated.
  """
  moves = slope > 0
  ratio = jnp.where(moves, cap / jnp.where(moves, slope, 1.0), jnp.inf)
  order = jnp.argsort(ratio, axis=-1)
  take = lambda v: jnp.take_along_axis(v, order, axis=-1)
  lam, filled, rate = take(ratio), take(a * cap), take(a * slope)
  before = jnp.cumsum(filled, axis=-1) - filled  # reduction of the coordinates saturated earlier
  after = jnp.flip(jnp.cumsum(jnp.flip(rate, -1), axis=-1), -1)  # slope of g from here on
  reached = before + jnp.where(after > 0, lam * after, 0.0)  # g at each breakpoint
  k = jnp.sum(reached < need[:, None], axis=-1, keepdims=True)
  at = lambda v: jnp.take_along_axis(v, jnp.minimum(k, a.shape[-1] - 1), axis=-1)
  rest = at(after)
  level = jnp.where(rest > 0, (need[:, None] - at(before)) / jnp.where(rest > 0, rest, 1.0), 0.0)
  level = jnp.where(k == a.shape[-1], jnp.inf, jnp.maximum(level, 0.0))
  return jnp.where(moves, jnp.minimum(level * slope, cap), 0.0)


def _knapsack(a, cap, need):
  """min sum e s.t. <a, e> = need, 0 <= e <= cap: fill the coordinates of largest a first."""
  order = jnp.argsort(-a, axis=-1)
  filled = jnp.take_along_axis(a * cap, order, axis=-1)
  before = jnp.cumsum(filled, axis=-1) - filled
  before = jnp.take_along_axis(before, jnp.argsort(order, axis=-1), axis=-1)  # original order
  moves = a > 0
  partial = (need[:, None] - before) / jnp.where(moves, a, 1.0)
  return jnp.where(moves, jnp.clip(partial, 0.0, cap), 0.0)


def project(t, w, c, norm):
  """The smallest step d (in `norm`) with <w, d> = -c and t + d in [0, 1], per row of the (N, n)
  arrays `t` (inside the box) and `w`, `c` (N,): the projection of t onto the hyperplane
  {z : <w, z - t> + c = 0} intersected with the box. Where the hyperplane misses the box, the
  step to the box corner nearest to it, as in the authors' code.

  Every coordinate moves only the way that brings <w, z> towards the hyperplane, by e_i in
  [0, cap_i]. L2 and L-inf: e_i = min(lam * s_i, cap_i) with s = |w| or s = [w != 0]; L1: the
  fractional knapsack. All three are exact.
  """
  toward = -jnp.sign(c)[:, None] * jnp.sign(w)
  a = jnp.abs(w)
  cap = jnp.where(toward < 0, t, 1.0 - t)
  need = jnp.abs(c)
  if norm == 'l1':
    e = _knapsack(a, cap, need)
  else:
    e = _water_fill(a, cap, need, a if norm == 'l2' else (a > 0).astype(a.dtype))
  return toward * e


class _Best(Pytree):
  """The smallest adversarial point found per example, its distance (inf: none) and logits."""
  x: jax.Array
  distance: jax.Array
  logits: jax.Array


def _random_start(key, x, radius, norm):
  """x plus a random direction of norm radius / 2 in `norm`, clipped to the box (the reference's
  restarts: uniform for L-inf, Gaussian for L2 and L1)."""
  if norm == 'linf':
    u = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
  else:
    u = jax.random.normal(key, x.shape, x.dtype)
  u = u / norms.expand(jnp.maximum(NORMS[norm](u), _TINY), u)
  return jnp.clip(x + norms.expand(0.5 * radius, x) * u, 0.0, 1.0)


@functools.partial(jax.jit, static_argnames=('logits_fn', 'norm', 'num_steps', 'restarts',
                                             'targeted', 'num_targets', 'early_exit',
                                             'chunk_size'))
def fab(logits_fn, x, y, key, *, norm='linf', epsilon=None, num_steps=100, restarts=1,
        targeted=False, num_targets=9, alpha_max=0.1, eta=1.05, beta=0.9, early_exit=True,
        chunk_size=None):
  """FAB's smallest adversarial perturbation of `x` (B, H, W, C) in [0, 1] for labels `y`.

  Args:
    logits_fn: images -> logits, a pure closure over the model (static: reuse one function).
    x, y: clean images and int labels. Success is misclassification, also for FAB-T.
    key: fixes every random choice (the random starts of restarts after the first).
    norm: 'linf', 'l2' or 'l1'; the distance minimized and reported.
    epsilon: None: a minimal attack (success wherever an adversarial point was found). A number:
      a bounded one (success only where the smallest found has norm <= epsilon; elsewhere x_adv
      is x), whose examples stop changing once a run ends with them broken, as in AutoAttack.
      Also the radius of the random restarts (RESTART_RADIUS without it).
    num_steps: iterations per run.
    restarts: runs per target, one after the other; the first starts at x, later ones at a random
      point at distance min(smallest found, epsilon) / 2.
    targeted: FAB-T: one run per target, the 2nd to (num_targets + 1)-th largest clean logits,
      each linearizing only the boundary to its target; untargeted FAB takes the linearized
      boundary closest in `norm` among all classes.
    num_targets: targets of FAB-T (9 in AutoAttack; at most classes - 1).
    alpha_max, eta, beta: the largest bias towards the original, the extrapolation of the
      projections and the step back from an adversarial point (the paper's 0.1, 1.05, 0.9).
    early_exit: stop the runs once every example is fixed (bounded and broken, or misclassified
      at x); it cannot change the result. The iterations of a run always all run.
    chunk_size: images per classifier call (`advgen.attacks.pgd.resolve_chunk_size`).

  Returns:
    An AttackResult; distance is the `norm` of x_adv - x, restart_success (B, restarts) says
    whether each example succeeded by the end of that restart for some target. The clean
    misclassified are successes at distance 0.
  """
  if norm not in NORMS:
    raise UserError(f'unknown FAB norm {norm!r}; choose one of {", ".join(NORMS)}')
  if num_steps < 1 or restarts < 1:
    raise UserError(f'FAB needs num_steps and restarts >= 1, got {num_steps} and {restarts}')
  chunk_size = resolve_chunk_size(chunk_size)
  batch = x.shape[0]
  clean = chunked(logits_fn, chunk_size, x)
  num_classes = clean.shape[-1]
  if targeted:
    if not 1 <= num_targets <= num_classes - 1:
      raise UserError(f'FAB-T: num_targets must be in [1, classes - 1 = {num_classes - 1}], got '
                      f'{num_targets}')
    candidates = jax.lax.top_k(clean, num_targets + 1)[1][:, 1:].T[..., None]  # (T, B, 1)
  else:
    candidates = ((y[:, None] + jnp.arange(1, num_classes)) % num_classes)[None]  # (1, B, K-1)
  num_runs = candidates.shape[0] * restarts
  bounded = epsilon is not None
  done_within = epsilon if bounded else 0.0
  radius = epsilon if bounded else RESTART_RADIUS[norm]
  size = NORMS[norm]
  flat = lambda a: a.reshape(batch, -1)
  x0 = flat(x)

  @canonical.canonical_convolutions
  def linearize(images, labels, classes):
    """f_k - f_y and its input gradient, (b, M) and (b, M, n), for the M classes k."""
    logits, vjp = jax.vjp(logits_fn, images)
    cotangents = (jax.nn.one_hot(classes, num_classes, dtype=logits.dtype) -
                  jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)[:, None])
    grads = jax.vmap(vjp)(jnp.moveaxis(cotangents, 1, 0))[0]
    differences = (jnp.take_along_axis(logits, classes, axis=-1) -
                   jnp.take_along_axis(logits, labels[:, None], axis=-1))
    return differences, jnp.moveaxis(grads, 0, 1).reshape(classes.shape + (-1,))

  def iteration(classes, active, _, carry):
    point, best = carry
    differences, grads = chunked(linearize, chunk_size, point, y, classes)
    gap = jnp.abs(differences) / (jax.vmap(_DUAL[norm])(grads) + _TINY)
    nearest = jnp.argmin(gap, axis=-1)[:, None]
    w = jnp.take_along_axis(grads, nearest[..., None], axis=1)[:, 0]
    c = jnp.take_along_axis(differences, nearest, axis=1)[:, 0]
    here = flat(point)
    d_here = project(here, w, c, norm)
    d_orig = project(x0, w, c + jnp.sum(w * (x0 - here), axis=-1), norm)
    a_here = jnp.maximum(size(d_here), _SMALL)
    a_orig = jnp.maximum(size(d_orig), _SMALL)
    alpha = jnp.minimum(a_here / (a_here + a_orig), alpha_max)[:, None]
    moved = jnp.clip((here + eta * d_here) * (1.0 - alpha) + (x0 + eta * d_orig) * alpha, 0.0, 1.0)
    moved = moved.reshape(x.shape)
    logits = chunked(logits_fn, chunk_size, moved)
    adversarial = losses.success(logits, y, False)
    distance = size(moved - x)
    better = adversarial & active & (distance < best.distance)
    best = jax.tree.map(lambda new, old: jnp.where(norms.expand(better, new), new, old),
                        _Best(moved, distance, logits), best)
    step_back = norms.expand(adversarial, moved)
    return jnp.where(step_back, x + beta * (moved - x), moved), best

  def run(state):
    r, best, record = state
    active = best.distance > done_within
    start = _random_start(jax.random.fold_in(key, r), x, jnp.minimum(best.distance, radius), norm)
    start = jnp.where(r % restarts == 0, x, start)
    body = functools.partial(iteration, candidates[r // restarts], active)
    _, best = jax.lax.fori_loop(0, num_steps, body, (start, best))
    found = best.distance <= epsilon if bounded else jnp.isfinite(best.distance)
    return r + 1, best, record.at[r].set(found)

  def running(state):
    r, best, _ = state
    if not early_exit:
      return r < num_runs
    return (r < num_runs) & jnp.any(best.distance > done_within)

  misclassified = losses.success(clean, y, False)
  best = _Best(x, jnp.where(misclassified, 0.0, jnp.inf).astype(x.dtype), clean)
  init = (jnp.zeros((), jnp.int32), best, jnp.zeros((num_runs, batch), bool))
  r, best, record = jax.lax.while_loop(running, run, init)
  record |= (jnp.arange(num_runs) >= r)[:, None]  # skipped runs: every example was already fixed
  success = best.distance <= epsilon if bounded else jnp.isfinite(best.distance)
  x_adv = jnp.where(norms.expand(success, x), best.x, x)
  logits = jnp.where(success[:, None], best.logits, clean)
  restart_success = jnp.any(record.reshape(-1, restarts, batch), axis=0).T
  return result.build(x_adv=x_adv, v=x_adv, reference=x, distance=size(x_adv - x),
                      success=success, logits=logits, loss=-losses.margin(logits, y),
                      restart_success=restart_success)
