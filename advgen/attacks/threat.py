"""Threat models: the feasible set an attack searches and what the classifier sees.

A threat model is a pytree (a frozen dataclass, see `pytree.py`) holding a batch of centres, so it
passes through `jit` and `vmap`; an epsilon sweep is a `vmap` over `threat.replace(epsilon=...)`.
Each one offers:

- `init(key=None)`: the deterministic start (the centre) for `key=None`, else a random point of
  the set;
- `project(v)`: the Euclidean projection of `v` onto the set;
- `to_input(v)`: the images shown to the classifier;
- `distance(v)`: per-example distance from the centre in the threat model's own norm;
- `radius()`: epsilon shaped to broadcast against `v` (FGSM's step size);
- `step_rule`: the name of its steepest-ascent step ('sign', 'l2' or 'l1').

Image balls take `x` of shape (B, H, W, C) in [0, 1] and epsilon a scalar or per-example (B,).

L-inf balls (`LinfBall`, `LatentBall`) draw their random start from `start` (STARTS):
'uniform' (the default) is uniform in the epsilon-box; 'gaussian_linf' is the start of Stutz et
al.'s code, a Gaussian direction scaled to unit L-inf norm times epsilon * u, u ~ U(0, 1) per
example: median L-inf epsilon / 2 and, in 784 dimensions, about a quarter of the uniform start's L2.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp

from advgen import transforms
from advgen.attacks import norms
from advgen.attacks.pytree import Pytree, static_field

_BISECTION_STEPS = 24  # float32 resolution of the multiplier's bracket


def _box(x, p):
  """The point `x + p` clipped to the [0, 1] box."""
  return jnp.clip(x + p, 0.0, 1.0)


def _bisect(size, epsilon, feasible, free):
  """Moves a per-example parameter from `feasible` (size <= epsilon) towards `free`.

  `size` is monotone in the parameter, so the result is the feasible parameter closest to `free`
  within 2**-_BISECTION_STEPS of the bracket, and always feasible.
  """

  def halve(_, ends):
    good, bad = ends
    mid = (good + bad) / 2
    ok = size(mid) <= epsilon
    return jnp.where(ok, mid, good), jnp.where(ok, bad, mid)

  good, _ = jax.lax.fori_loop(0, _BISECTION_STEPS, halve, (feasible, free))
  return jnp.where(size(free) <= epsilon, free, good)


def l1_ball_threshold(p, epsilon):
  """Soft threshold of the exact projection of `p` onto the L1 ball (sort-based, Duchi et al.).

  Returns the per-example lambda with `sign(p) * max(|p| - lambda, 0)` the projection; zero when
  `p` is already inside.
  """
  a = jnp.abs(p.reshape(p.shape[0], -1))
  mu = -jnp.sort(-a, axis=-1)
  cumsum = jnp.cumsum(mu, axis=-1)
  index = jnp.arange(1, a.shape[-1] + 1, dtype=a.dtype)
  epsilon = jnp.broadcast_to(epsilon, (p.shape[0],))
  rho = jnp.sum(mu - (cumsum - epsilon[:, None]) / index > 0, axis=-1)
  rho = jnp.maximum(rho, 1)
  theta = (jnp.take_along_axis(cumsum, rho[:, None] - 1, axis=-1)[:, 0] - epsilon) / rho
  return jnp.maximum(theta, 0.0)


STARTS = ('uniform', 'gaussian_linf')


def linf_start(key, centre, radius, start='uniform'):
  """A random offset of L-inf norm at most `radius` (broadcast against `centre` (B, ...)), drawn
  from the start distribution `start` (see STARTS); the caller projects `centre + offset`."""
  if start == 'uniform':
    return radius * jax.random.uniform(key, centre.shape, centre.dtype, -1.0, 1.0)
  if start == 'gaussian_linf':
    direction_key, scale_key = jax.random.split(key)
    direction = jax.random.normal(direction_key, centre.shape, centre.dtype)
    peak = norms.linf(direction)
    direction = direction / norms.expand(jnp.where(peak > 0, peak, 1.0), direction)
    scale = jax.random.uniform(scale_key, centre.shape[:1], centre.dtype)
    return radius * norms.expand(scale, centre) * direction
  raise ValueError(f'unknown start {start!r}; choose one of {", ".join(STARTS)}')


def soft_threshold(p, threshold):
  return jnp.sign(p) * jnp.maximum(jnp.abs(p) - norms.expand(threshold, p), 0.0)


class _ImageBall(Pytree):
  """A norm ball of radius `epsilon` around images `x`, intersected with the [0, 1] box."""
  x: jax.Array
  epsilon: Any

  def to_input(self, v):
    return v

  def radius(self):
    return norms.expand(jnp.asarray(self.epsilon, self.x.dtype), self.x)

  def _per_example_epsilon(self):
    return jnp.broadcast_to(jnp.asarray(self.epsilon, self.x.dtype), self.x.shape[:1])


class LinfBall(_ImageBall):
  """L-inf ball and box: both are boxes, so the projection (a clip) is exact. `start` is the
  random start's distribution (STARTS)."""
  start: str = static_field(default='uniform')
  step_rule = 'sign'

  def init(self, key=None):
    if key is None:
      return self.x
    return self.project(self.x + linf_start(key, self.x, self.radius(), self.start))

  def project(self, v):
    r = self.radius()
    return jnp.clip(jnp.clip(v, self.x - r, self.x + r), 0.0, 1.0)

  def distance(self, v):
    return norms.linf(v - self.x)


class L2Ball(_ImageBall):
  """L2 ball and box.

  The projection onto the intersection is exact up to a bisection: by the KKT conditions it is
  `clip(x + t (v - x), 0, 1)` for the largest t in [0, 1] whose norm is within epsilon. The
  bisection starts from ball-then-box (t = epsilon / ||v - x||), so the result is always inside both
  the box and the ball.
  """
  step_rule = 'l2'

  def init(self, key=None):
    if key is None:
      return self.x
    direction_key, radius_key = jax.random.split(key)
    direction = norms.l2_direction(jax.random.normal(direction_key, self.x.shape, self.x.dtype))
    dim = self.x[0].size
    scale = jax.random.uniform(radius_key, self.x.shape[:1], self.x.dtype) ** (1.0 / dim)
    return self.project(self.x + self.radius() * norms.expand(scale, self.x) * direction)

  def project(self, v):
    p = v - self.x
    epsilon = self._per_example_epsilon()
    norm = norms.l2(p)
    ball_scale = jnp.where(norm > epsilon, epsilon / jnp.where(norm > 0, norm, 1.0), 1.0)
    size = lambda t: norms.l2(_box(self.x, norms.expand(t, p) * p) - self.x)
    t = _bisect(size, epsilon, ball_scale, jnp.ones_like(norm))
    return _box(self.x, norms.expand(t, p) * p)

  def distance(self, v):
    return norms.l2(v - self.x)


class L1Ball(_ImageBall):
  """L1 ball and box.

  The projection onto the intersection is exact up to a bisection: by the KKT conditions it is
  `clip(x + soft_threshold(v - x, lambda), 0, 1)` for the smallest lambda >= 0 whose norm is within
  epsilon. The bisection starts from the exact L1-ball projection (sort-based) followed by the box
  clip, so the result is always inside both the box and the ball.
  """
  step_rule = 'l1'

  def init(self, key=None):
    if key is None:
      return self.x
    simplex_key, sign_key = jax.random.split(key)
    flat = (self.x.shape[0], self.x[0].size + 1)
    weights = jax.random.exponential(simplex_key, flat, self.x.dtype)
    simplex = (weights / jnp.sum(weights, axis=-1, keepdims=True))[:, :-1].reshape(self.x.shape)
    signs = jax.random.rademacher(sign_key, self.x.shape, self.x.dtype)
    return self.project(self.x + self.radius() * simplex * signs)

  def project(self, v):
    p = v - self.x
    epsilon = self._per_example_epsilon()
    size = lambda lam: norms.l1(_box(self.x, soft_threshold(p, lam)) - self.x)
    lam = _bisect(size, epsilon, l1_ball_threshold(p, epsilon), jnp.zeros_like(epsilon))
    return _box(self.x, soft_threshold(p, lam))

  def distance(self, v):
    return norms.l1(v - self.x)


class LatentBall(Pytree):
  """L-inf ball of radius `epsilon` around latent codes `z` (B, d), intersected with a latent box.

  The classifier sees `decode_fn(z')` (or `decode_fn(z', context)` when `context` is given). Used
  for on-learned-manifold attacks (a VAE decoder, box e.g. (-2, 2)) and on-true-manifold attacks
  (the fonts generator over theta, box = the dataset's ranges (2, 6)). `box` is (low, high), each
  broadcastable against `z`; `z` should lie inside it. `decode_fn` is static: keep one function
  per model and pass per-batch arrays (fonts, labels of a class-specific decoder) as `context`, so a
  new batch does not retrace. `start` is the random start's distribution (STARTS).
  """
  decode_fn: Callable = static_field()
  z: jax.Array
  epsilon: Any
  box: Any
  context: Any = None
  start: str = static_field(default='uniform')
  step_rule = 'sign'

  def init(self, key=None):
    if key is None:
      return self.z
    return self.project(self.z + linf_start(key, self.z, self.radius(), self.start))

  def project(self, v):
    r = self.radius()
    return jnp.clip(jnp.clip(v, self.z - r, self.z + r), self.box[0], self.box[1])

  def to_input(self, v):
    if self.context is None:
      return self.decode_fn(v)
    return self.decode_fn(v, self.context)

  def distance(self, v):
    return norms.linf(v - self.z)

  def radius(self):
    return jnp.asarray(self.epsilon, self.z.dtype)


class TransformBall(Pytree):
  """Affine parameters within an L-inf ball around the identity, clipped to `ranges` (2, 6).

  The classifier sees `transforms.transform(x, t)` (Stutz et al., eq. 5). `epsilon` is a scalar or
  per-parameter (6,); `distance` is the L-inf norm of t - IDENTITY.
  """
  x: jax.Array
  epsilon: Any
  ranges: Any
  step_rule = 'sign'

  def _identity(self):
    return jnp.broadcast_to(jnp.asarray(transforms.IDENTITY, self.x.dtype),
                            (self.x.shape[0], transforms.NUM_PARAMS))

  def init(self, key=None):
    centre = self._identity()
    if key is None:
      return centre
    noise = jax.random.uniform(key, centre.shape, centre.dtype, -1.0, 1.0)
    return self.project(centre + self.radius() * noise)

  def project(self, v):
    centre, r = self._identity(), self.radius()
    return jnp.clip(jnp.clip(v, centre - r, centre + r), self.ranges[0], self.ranges[1])

  def to_input(self, v):
    return jax.vmap(transforms.transform)(self.x, v)

  def distance(self, v):
    return norms.linf(v - self._identity())

  def radius(self):
    return jnp.asarray(self.epsilon, self.x.dtype)


BALLS = {'linf': LinfBall, 'l2': L2Ball, 'l1': L1Ball}  # image balls by norm name
