"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020): a score-based attack
inside an L-inf or L2 ball around x, intersected with the [0, 1] box.

It only reads logits, never gradients, so it also attacks models whose gradients are useless
(masked, quantized, behind an API); AutoAttack runs it last for that reason. It follows the
authors' reference code (fra31/auto-attack, `autoattack/square.py`): a random start (L-inf:
vertical stripes of +-eps, one sign per column and channel; L2: +-"pyramids" on a grid of windows,
rescaled to norm eps), then per iteration one random square window of side about sqrt(p h w)
changed and the candidate kept when the loss drops (the margin z_y - max_{j != y} z_j untargeted,
the cross-entropy of the target when targeted) or it succeeds. L-inf sets the window to +-eps per
channel (adds +-2 eps, clipped to the ball and box); L2 puts a new pyramid into the window,
moves there the mass of a second window and rescales the whole perturbation to norm eps. p starts
at p_init and halves after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of
10000, the iterations rescaled to `num_queries`.

The reference draws one window position and pyramid orientation per iteration for the whole
batch; here every example draws its own, as in the paper's algorithm, so an example's attack does
not depend on what else is in the batch. The B examples run together in one `while_loop` with
static shapes; `queries` counts the logits each example needed, as if it had been attacked alone.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from advgen.attacks import losses, norms, result
from advgen.attacks.pgd import chunked, resolve_chunk_size
from advgen.attacks.pytree import Pytree
from advgen.errors import UserError

NORMS = ('linf', 'l2')
_THRESHOLDS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # of a 10000-iteration schedule
_TINY = 1e-12  # the reference's guard against dividing by a zero norm


class SquareResult(result.AttackResult):
  """An AttackResult plus `queries`: (B,) int32, the logits each example asked for: 1 for the
  clean check, then per restart that attacks it 1 for the start and 1 per iteration until it
  succeeds. restart_success[:, r] is success by the end of restart r (restarts only attack the
  examples still robust)."""
  queries: jax.Array


class _Point(Pytree):
  """An example's current point and what its logits say there."""
  x: jax.Array
  value: jax.Array  # the objective (maximized): minus the margin, or minus the target's CE
  logits: jax.Array
  success: jax.Array


def p_schedule(num_queries, p_init, rescale=True):
  """The fraction p of the image a window covers, at iterations 0 .. num_queries - 1: the
  iteration rescaled to a 10000-query budget (int(i / num_queries * 10000), the reference's
  `resc_schedule`; `rescale=False`, as the reference's AutoAttack builds its Square, keeps the
  thresholds at their iterations), then p_init halved once per threshold it exceeds."""
  scaled = [int(i / num_queries * 10000) if rescale else i for i in range(num_queries)]
  return np.array([p_init / 2**sum(it > t for t in _THRESHOLDS) for it in scaled])


def window_sides(p, norm, shape):
  """Window side per entry of `p` for images of `shape` (H, W, C): round(sqrt(p h w)), at
  least 1 (L-inf) or odd and at least 3 (L2), and at most min(h, w)."""
  height, width, channels = shape
  n_features = height * width * channels
  sides = np.array([int(round(math.sqrt(q * n_features / channels))) for q in p])
  if norm == 'l2':
    sides = np.maximum(sides, 3)
    sides += sides % 2 == 0
  return np.minimum(np.maximum(sides, 1), min(height, width))


def _pyramid(rows, cols):
  """Nested centred rectangles of sizes 1, 3, 5, ... weighted 1 / k**2 (k = 1, 2, ...), unit L2
  norm: the reference's `eta_rectangles`, the mass concentrated at the centre."""
  out = np.zeros((rows, cols))
  r0, c0 = rows // 2, cols // 2
  for k in range(max(r0, c0) + 1):
    out[max(r0 - k, 0):r0 + k + 1, max(c0 - k, 0):c0 + k + 1] += 1.0 / (k + 1)**2
  return out / max(np.sqrt(np.sum(out**2)), _TINY)


def eta(side):
  """The L2 update of a side x side window: a positive pyramid on the top rows side // 2, a
  negative one below, unit L2 norm (the reference's `eta`, before its random transpose)."""
  out = np.concatenate([_pyramid(side // 2, side), -_pyramid(side - side // 2, side)])
  return out / np.sqrt(np.sum(out**2))


def _corners(key, batch, side, height, width):
  """Per example the top-left corner (B, 2) of a side x side window, uniform in
  {0, ..., size - side} per axis (the paper's range: every pixel can be drawn)."""
  return jax.random.randint(key, (batch, 2), 0, jnp.array([height - side, width - side]) + 1)


def _offsets(corners, height, width):
  """Row and column offsets (B, H), (B, W) of every pixel from the windows' corners."""
  return jnp.arange(height)[None] - corners[:, :1], jnp.arange(width)[None] - corners[:, 1:]


def _window(corners, side, height, width):
  """(B, H, W, 1) mask of the side x side windows at `corners`."""
  rows, cols = _offsets(corners, height, width)
  inside = lambda o: (o >= 0) & (o < side)
  return (inside(rows)[:, :, None] & inside(cols)[:, None, :])[..., None]


def _unit(delta):
  """delta / (||delta||_2 + 1e-12) per example, as the reference's `normalize`."""
  return delta / norms.expand(norms.l2(delta) + _TINY, delta)


def _linf_start(key, x, eps):
  """Vertical stripes: x + eps * (+-1), one sign per example, column and channel."""
  batch, _, width, channels = x.shape
  signs = jax.random.rademacher(key, (batch, 1, width, channels), x.dtype)
  return jnp.clip(x + eps * signs, 0.0, 1.0)


def _linf_candidate(key, x, best, eps, side):
  """`best` with one side x side window set to +-eps per channel: +-2 eps added, then clipped
  to the ball and the box."""
  batch, height, width, channels = x.shape
  k_corner, k_sign = jax.random.split(key)
  mask = _window(_corners(k_corner, batch, side, height, width), side, height, width)
  signs = jax.random.rademacher(k_sign, (batch, 1, 1, channels), x.dtype)
  moved = best + jnp.where(mask, 2.0 * eps * signs, 0.0)
  return jnp.clip(jnp.clip(moved, x - eps, x + eps), 0.0, 1.0)


def _l2_start(key, x, eps):
  """The sum of +-eta(s) windows, s = h // 5, on a centred grid (orientation per example and
  window, sign per channel too), rescaled to norm eps. Windows that would cross the border are
  left out (the reference fails on such sizes; none do at 28 or 32 pixels)."""
  batch, height, width, channels = x.shape
  side = height // 5
  grid = lambda size: list(range((size - 5 * side) // 2, size - side + 1, side))
  corners = [(r, c) for r in grid(height)[:height // side] for c in grid(width)[:width // side]]
  pattern = eta(side)
  place = np.zeros((2, len(corners), height, width), np.float32)
  for i, (r, c) in enumerate(corners):
    place[0, i, r:r + side, c:c + side] = pattern
    place[1, i, r:r + side, c:c + side] = pattern.T
  k_turn, k_sign = jax.random.split(key)
  turn = jax.random.bernoulli(k_turn, shape=(batch, len(corners)))
  signs = jax.random.rademacher(k_sign, (batch, len(corners), channels), x.dtype)
  patterns = jnp.where(turn[..., None, None], place[1], place[0])
  delta = jnp.einsum('bnhw,bnc->bhwc', patterns, signs)
  return jnp.clip(x + eps * _unit(delta), 0.0, 1.0)


def _l2_candidate(key, x, best, eps, side, pattern):
  """The reference's L2 step: window 1 gets +-eta(side) per channel plus its old content
  (normalized per channel), rescaled per channel to sqrt((eps^2 - ||delta||^2)^+ / c +
  ||delta on both windows||^2); window 2 is emptied; then the whole delta goes back to norm eps.
  `pattern` is eta(side) zero-padded to the largest side of the schedule."""
  batch, height, width, channels = x.shape
  k_one, k_two, k_turn, k_sign = jax.random.split(key, 4)
  delta = best - x
  corners = _corners(k_one, batch, side, height, width)
  one = _window(corners, side, height, width)
  two = _window(_corners(k_two, batch, side, height, width), side, height, width)
  rows, cols = _offsets(corners, height, width)
  rows = jnp.clip(rows, 0, pattern.shape[0] - 1)[:, :, None]
  cols = jnp.clip(cols, 0, pattern.shape[0] - 1)[:, None, :]
  turn = jax.random.bernoulli(k_turn, shape=(batch, 1, 1))
  shape = jnp.where(turn, pattern[cols, rows], pattern[rows, cols])[..., None]
  signs = jax.random.rademacher(k_sign, (batch, 1, 1, channels), x.dtype)
  window_sum = lambda a: jnp.sum(a, axis=(1, 2), keepdims=True)
  old = jnp.where(one, delta, 0.0)
  old = old / (jnp.sqrt(window_sum(jnp.square(old))) + _TINY)
  new = jnp.where(one, shape * signs, 0.0) + old
  room = jnp.maximum(jnp.square(eps) - norms.expand(jnp.square(norms.l2(delta)), x), 0.0)
  both = norms.expand(jnp.square(norms.l2(jnp.where(one | two, delta, 0.0))), x)
  new = new / (jnp.sqrt(window_sum(jnp.square(new))) + _TINY) * jnp.sqrt(room / channels + both)
  delta = jnp.where(one, new, jnp.where(two, 0.0, delta))
  return jnp.clip(x + eps * _unit(delta), 0.0, 1.0)


def _tables(norm, num_queries, p_init, shape, rescale):
  """The schedule as constants: per iteration the index of its window side (num_queries,),
  the distinct sides (S,) and, for L2, their eta patterns zero-padded to the largest (S, s, s)."""
  sides = window_sides(p_schedule(num_queries, p_init, rescale), norm, shape)
  distinct, stage = np.unique(sides, return_inverse=True)
  patterns = None
  if norm == 'l2':
    patterns = np.zeros((len(distinct),) + (distinct[-1],) * 2, np.float32)
    for j, side in enumerate(distinct):
      patterns[j, :side, :side] = eta(side)
    patterns = jnp.asarray(patterns)
  return jnp.asarray(stage, jnp.int32), jnp.asarray(distinct, jnp.int32), patterns


def _check(norm, shape, num_queries, p_init, restarts):
  if norm not in NORMS:
    raise UserError(f'unknown Square norm {norm!r}; choose one of {", ".join(NORMS)}')
  if len(shape) != 4:
    raise UserError(f'Square attacks images (B, H, W, C), got shape {shape}')
  smallest = 5 if norm == 'l2' else 2
  if min(shape[1:3]) < smallest:
    raise UserError(f'Square {norm} needs images of at least {smallest} x {smallest} pixels, got '
                    f'{shape[1]} x {shape[2]}')
  if not (isinstance(num_queries, int) and num_queries >= 1):
    raise UserError(f'num_queries must be a positive integer, got {num_queries!r}')
  if not (isinstance(restarts, int) and restarts >= 1):
    raise UserError(f'restarts must be a positive integer, got {restarts!r}')
  if not 0 < p_init <= 1:
    raise UserError(f'p_init must be in (0, 1], got {p_init!r}')


@functools.partial(jax.jit, static_argnames=('logits_fn', 'norm', 'num_queries', 'p_init',
                                             'restarts', 'targeted', 'early_exit', 'chunk_size',
                                             'rescale_schedule'))
def square(logits_fn, x, y, key, *, norm='linf', epsilon, num_queries=5000, p_init=0.8,
           restarts=1, targeted=False, early_exit=True, chunk_size=None, rescale_schedule=True):
  """Square Attack on `x` (B, H, W, C) in [0, 1] with labels `y` (targets when `targeted`).

  Args:
    logits_fn: images -> logits, a pure closure (static); only its values are used.
    epsilon: radius of the ball, a scalar or per example (B,) (traced).
    num_queries: iterations per restart, one query each (the reference's n_queries); with the
      start and the clean check an example never broken costs 1 + restarts * (num_queries + 1).
    p_init: the window's initial fraction of the image (0.8 in the paper and AutoAttack).
    restarts: runs one after another, each from fresh random numbers on the examples that
      are still robust.
    early_exit: leave the loop once every example has succeeded (the same result).
    chunk_size: images per classifier call (see `pgd.resolve_chunk_size`).
    rescale_schedule: p's schedule stretched to num_queries (the paper's); False keeps it at the
      iterations of a 10000-query budget, as the reference's AutoAttack runs Square.

  Every random choice follows from `key`. Examples already misclassified (or at their target)
  cost 1 query and come back unchanged. A successful example keeps its first successful point;
  one never broken, its lowest-loss point over the restarts. Returns a SquareResult; `loss` is
  the maximized objective (minus the margin, or minus the target's cross-entropy).
  """
  _check(norm, x.shape, num_queries, p_init, restarts)
  chunk = resolve_chunk_size(chunk_size)
  eps = norms.expand(jnp.broadcast_to(jnp.asarray(epsilon, x.dtype), y.shape), x)
  stage, sides, patterns = _tables(norm, num_queries, p_init, x.shape[1:], rescale_schedule)
  if norm == 'linf':
    start = _linf_start
    step = lambda k, best, i: _linf_candidate(k, x, best, eps, sides[stage[i]])
  else:
    start = _l2_start
    step = lambda k, best, i: _l2_candidate(k, x, best, eps, sides[stage[i]], patterns[stage[i]])
  loss = 'ce' if targeted else 'margin'

  def query(images):
    logits = chunked(logits_fn, chunk, images)
    value = losses.objective(logits, y, loss=loss, targeted=targeted, kappa=jnp.inf)
    return _Point(images, value, logits, losses.success(logits, y, targeted))

  def keep(take, new, old):
    return jax.tree.map(lambda n, o: jnp.where(norms.expand(take, n), n, o), new, old)

  def run(alive, restart_key):
    """One restart on the `alive` examples: their last accepted point and queries."""
    start_key, loop_key = jax.random.split(restart_key)
    point = query(start(start_key, x, eps))

    def running(carry):
      i, point, _ = carry
      more = i < num_queries
      return more & jnp.any(alive & ~point.success) if early_exit else more

    def iteration(carry):
      i, point, queries = carry
      active = alive & ~point.success
      candidate = query(step(jax.random.fold_in(loop_key, i), point.x, i))
      better = active & (candidate.success | (candidate.value > point.value))
      return i + 1, keep(better, candidate, point), queries + active

    init = (jnp.zeros((), jnp.int32), point, alive.astype(jnp.int32))
    _, point, queries = jax.lax.while_loop(running, iteration, init)
    return point, queries

  def restart(carry, restart_key):
    best, queries = carry
    alive = ~best.success
    point, spent = run(alive, restart_key)
    best = keep(alive & (point.success | (point.value > best.value)), point, best)
    return (best, queries + spent), best.success

  clean = query(x)
  clean = clean.replace(value=jnp.where(clean.success, clean.value, -jnp.inf))
  carry = (clean, jnp.ones(y.shape, jnp.int32))
  (best, queries), by_restart = jax.lax.scan(restart, carry, jax.random.split(key, restarts))
  distance = norms.l2 if norm == 'l2' else norms.linf
  base = result.build(x_adv=best.x, v=best.x, reference=x, distance=distance(best.x - x),
                      success=best.success, logits=best.logits, loss=best.value,
                      restart_success=by_restart.T)
  return SquareResult(**vars(base), queries=queries)
