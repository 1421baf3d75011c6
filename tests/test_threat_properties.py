"""Property tests (hypothesis) of the threat models' projections, norms and random starts.

Shapes come from a short list so that each (threat type, shape) compiles once; radii, images and
points vary freely. Example counts are small to keep the suite fast.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from advgen import attacks, transforms
from advgen.attacks import norms

BALLS = {attacks.LinfBall: 0.5, attacks.L2Ball: 3.0, attacks.L1Ball: 8.0}
SHAPES = ((1, 1, 1, 1), (2, 3, 2, 1), (3, 4, 4, 2), (2, 1, 5, 3))
# Derandomized and without an example database: the same examples on every run and machine.
PROPERTY = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@jax.jit
def _project(threat, v):
  return threat.project(v)


@jax.jit
def _init(threat, key):
  return threat.init(key)


def _case(ball, shape, seed, radius_scale, spread, edges):
  """A ball around images (some pixels on the box edges) and a point `spread` away."""
  rng = np.random.default_rng(seed)
  x = rng.uniform(size=shape)
  if edges:
    x = np.where(x < 0.2, 0.0, np.where(x > 0.8, 1.0, x))
  epsilon = rng.uniform(0.0, radius_scale * BALLS[ball], shape[:1])
  v = x + spread * rng.standard_normal(shape)
  return ball(jnp.asarray(x, jnp.float32), jnp.asarray(epsilon, jnp.float32)), jnp.asarray(
      v, jnp.float32)


def _assert_in_ball_and_box(threat, p):
  p = np.asarray(p)
  epsilon = np.asarray(threat.epsilon)
  assert np.all(np.asarray(threat.distance(p)) <= epsilon * (1 + 1e-5) + 1e-6)
  assert p.min() >= 0.0 and p.max() <= 1.0


_cases = dict(ball=st.sampled_from(list(BALLS)), shape=st.sampled_from(SHAPES),
              seed=st.integers(0, 2**31 - 1), radius_scale=st.sampled_from([0.0, 0.05, 0.3, 1.0]),
              spread=st.sampled_from([0.01, 0.3, 3.0]), edges=st.booleans())


@PROPERTY
@given(**_cases)
def test_projection_lands_in_ball_and_box_is_idempotent_and_nearest(ball, shape, seed,
                                                                     radius_scale, spread, edges):
  threat, v = _case(ball, shape, seed, radius_scale, spread, edges)
  p = _project(threat, v)
  assert p.shape == v.shape and p.dtype == jnp.float32
  _assert_in_ball_and_box(threat, p)
  np.testing.assert_allclose(_project(threat, p), p, atol=1e-5)
  # Identity inside: any point of the (convex) set between x and p is left where it is.
  inside = threat.x + 0.7 * (p - threat.x)
  np.testing.assert_allclose(_project(threat, inside), inside, atol=1e-5)
  # KKT: where the box alone leaves v outside the ball, the ball constraint is active, so the
  # projection lies on the sphere (ball-then-box stops inside it wherever the box binds).
  outside = np.asarray(threat.distance(jnp.clip(v, 0.0, 1.0))) > np.asarray(threat.epsilon)
  np.testing.assert_allclose(np.asarray(threat.distance(p))[outside],
                             np.asarray(threat.epsilon)[outside], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.asarray(p)[~outside], np.clip(v, 0.0, 1.0)[~outside], atol=1e-6)
  # Nearest point: <v - p, c - p> <= 0 for every feasible c (x itself and the inside point).
  v64, p64 = np.asarray(v, np.float64), np.asarray(p, np.float64)
  scale = np.linalg.norm((v64 - p64).reshape(len(v64), -1), axis=1)
  for c in (threat.x, inside):
    c64 = np.asarray(c, np.float64)
    inner = np.sum(((v64 - p64) * (c64 - p64)).reshape(len(v64), -1), axis=1)
    reach = np.linalg.norm((c64 - p64).reshape(len(v64), -1), axis=1)
    assert np.all(inner <= 2e-4 * scale * reach + 1e-6), inner


@PROPERTY
@given(shape=st.sampled_from(SHAPES), seed=st.integers(0, 2**31 - 1),
       spread=st.sampled_from([0.01, 0.3, 3.0]))
def test_linf_projection_is_the_double_clip(shape, seed, spread):
  threat, v = _case(attacks.LinfBall, shape, seed, 1.0, spread, True)
  x, v = np.asarray(threat.x), np.asarray(v)
  epsilon = np.asarray(threat.epsilon).reshape((-1,) + (1,) * (len(shape) - 1))
  expected = np.clip(np.clip(v, x - epsilon, x + epsilon), 0.0, 1.0)
  np.testing.assert_allclose(_project(threat, jnp.asarray(v)), expected, atol=1e-7)


@PROPERTY
@given(ball=st.sampled_from([attacks.L2Ball, attacks.L1Ball]), shape=st.sampled_from(SHAPES),
       seed=st.integers(0, 2**31 - 1))
def test_projection_without_an_active_box_is_the_plain_ball_projection(ball, shape, seed):
  """Images far from the box edges and a radius the box cannot reach: the textbook projection."""
  rng = np.random.default_rng(seed)
  x = rng.uniform(0.45, 0.55, shape)
  delta = rng.standard_normal(shape)
  flat = delta.reshape(shape[0], -1)
  if ball is attacks.L2Ball:
    size = np.linalg.norm(flat, axis=1)
    epsilon = rng.uniform(0.0, 0.4, shape[0])
  else:
    size = np.abs(flat).sum(1)
    epsilon = rng.uniform(0.0, 0.4, shape[0])
  delta *= (rng.uniform(0.2, 3.0, shape[0]) * epsilon / np.maximum(size, 1e-12)).reshape(
      (-1,) + (1,) * (len(shape) - 1))  # inside for some examples, outside for others
  threat = ball(jnp.asarray(x, jnp.float32), jnp.asarray(epsilon, jnp.float32))
  p = np.asarray(_project(threat, jnp.asarray(x + delta, jnp.float32)), np.float64) - x
  flat = delta.reshape(shape[0], -1)
  if ball is attacks.L2Ball:
    norm = np.linalg.norm(flat, axis=1, keepdims=True)
    expected = flat * np.minimum(1.0, epsilon[:, None] / np.maximum(norm, 1e-12))
  else:
    expected = np.stack([_l1_projection(row, e) for row, e in zip(flat, epsilon)])
  np.testing.assert_allclose(p.reshape(shape[0], -1), expected, atol=2e-5)


def _l1_projection(p, epsilon):
  """Projection onto the L1 ball by bisection on the soft threshold (float64 reference)."""
  if np.abs(p).sum() <= epsilon:
    return p
  low, high = 0.0, np.abs(p).max()
  for _ in range(100):
    mid = (low + high) / 2
    if np.maximum(np.abs(p) - mid, 0).sum() > epsilon:
      low = mid
    else:
      high = mid
  return np.sign(p) * np.maximum(np.abs(p) - high, 0)


@PROPERTY
@given(shape=st.sampled_from(SHAPES), seed=st.integers(0, 2**31 - 1))
def test_norms_and_directions_match_numpy(shape, seed):
  a = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
  flat = a.reshape(shape[0], -1).astype(np.float64)
  np.testing.assert_allclose(norms.linf(a), np.abs(flat).max(1), rtol=1e-6)
  np.testing.assert_allclose(norms.l2(a), np.linalg.norm(flat, axis=1), rtol=1e-5)
  np.testing.assert_allclose(norms.l1(a), np.abs(flat).sum(1), rtol=1e-5)
  np.testing.assert_array_equal(norms.sign_direction(a), np.sign(a))
  unit = np.asarray(norms.l2_direction(a))
  np.testing.assert_allclose(norms.l2(unit), 1.0, rtol=1e-5)
  np.testing.assert_allclose(unit.reshape(shape[0], -1) * np.linalg.norm(flat, axis=1)[:, None],
                             flat, rtol=1e-4, atol=1e-6)
  top = np.asarray(norms.l1_direction(a)).reshape(shape[0], -1)
  np.testing.assert_allclose(np.abs(top).sum(1), 1.0, rtol=1e-6)  # unit L1 norm
  index = np.abs(flat).argmax(1)
  np.testing.assert_array_equal(np.abs(top).argmax(1), index)
  np.testing.assert_array_equal(np.sign(top[np.arange(shape[0]), index]),
                                np.sign(flat[np.arange(shape[0]), index]))
  # Each is the steepest ascent of its norm: <g, d> equals the dual norm of g.
  np.testing.assert_allclose(np.sum(flat * np.asarray(norms.sign_direction(a)).reshape(
      shape[0], -1), 1), np.abs(flat).sum(1), rtol=1e-5)
  np.testing.assert_allclose(np.sum(flat * top, 1), np.abs(flat).max(1), rtol=1e-5)
  zero = np.zeros(shape, np.float32)
  for direction in norms.DIRECTIONS.values():
    np.testing.assert_array_equal(direction(zero), 0.0)
  np.testing.assert_array_equal(norms.expand(jnp.arange(shape[0]), a).shape,
                                (shape[0],) + (1,) * (len(shape) - 1))


@PROPERTY
@given(ball=st.sampled_from(list(BALLS)), shape=st.sampled_from(SHAPES),
       seed=st.integers(0, 2**31 - 1), radius_scale=st.sampled_from([0.05, 0.3, 1.0]))
def test_random_starts_are_feasible_and_depend_on_the_key(ball, shape, seed, radius_scale):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.uniform(0.2, 0.8, shape), jnp.float32)
  epsilon = jnp.asarray(rng.uniform(0.5, 1.0, shape[:1]) * radius_scale * BALLS[ball], jnp.float32)
  threat = ball(x, epsilon)
  key = jax.random.key(seed)
  start = _init(threat, key)
  _assert_in_ball_and_box(threat, start)
  np.testing.assert_array_equal(_init(threat, key), start)
  moved = np.abs(np.asarray(start - x)).reshape(shape[0], -1).max(1)
  assert np.all(moved > 0)  # every example moves off its centre
  other = _init(threat, jax.random.fold_in(key, 1))
  assert np.all(np.any((np.asarray(other) != np.asarray(start)).reshape(shape[0], -1), axis=1))
  np.testing.assert_array_equal(threat.init(), threat.x)


# Random starts fill their sets (statistics on many examples at an interior centre).

N = 4000


def _offsets(threat, key):
  return np.asarray(threat.init(key) - threat.x, np.float64).reshape(N, -1)


def test_linf_start_is_uniform_in_the_ball():
  epsilon = 0.2
  offsets = _offsets(attacks.LinfBall(jnp.full((N, 2, 1, 1), 0.5), epsilon), jax.random.key(0))
  u = offsets / epsilon
  assert np.all(np.abs(u) <= 1 + 1e-6)
  np.testing.assert_allclose(u.mean(0), 0.0, atol=0.04)
  np.testing.assert_allclose(u.std(0), 1 / np.sqrt(3), rtol=0.04)
  np.testing.assert_allclose(np.abs(u).max(0), 1.0, atol=0.01)
  assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.06  # coordinates independent
  assert len(np.unique(u[:, 0])) > 0.99 * N  # every example its own draw


def test_l2_start_is_uniform_in_the_ball():
  """In 2-D, uniform in the disc: (r / eps)^2 is uniform on [0, 1], the angle is uniform."""
  epsilon = 0.3
  offsets = _offsets(attacks.L2Ball(jnp.full((N, 2, 1, 1), 0.5), epsilon), jax.random.key(1))
  radius = np.linalg.norm(offsets, axis=1) / epsilon
  assert np.all(radius <= 1 + 1e-5)
  np.testing.assert_allclose(np.mean(radius ** 2), 0.5, atol=0.02)
  np.testing.assert_allclose(np.quantile(radius ** 2, [0.1, 0.5, 0.9]), [0.1, 0.5, 0.9], atol=0.03)
  angle = np.arctan2(offsets[:, 1], offsets[:, 0])
  np.testing.assert_allclose(np.histogram(angle, 8, (-np.pi, np.pi))[0] / N, 1 / 8, atol=0.02)


def test_l1_start_is_uniform_in_the_ball():
  """In 2-D, uniform in the diamond: (||d||_1 / eps)^2 is uniform, every quadrant equally likely."""
  epsilon = 0.3
  offsets = _offsets(attacks.L1Ball(jnp.full((N, 2, 1, 1), 0.5), epsilon), jax.random.key(2))
  size = np.abs(offsets).sum(1) / epsilon
  assert np.all(size <= 1 + 1e-5)
  np.testing.assert_allclose(np.quantile(size ** 2, [0.1, 0.5, 0.9]), [0.1, 0.5, 0.9], atol=0.03)
  quadrant = (offsets[:, 0] > 0) * 2 + (offsets[:, 1] > 0)
  np.testing.assert_allclose(np.bincount(quadrant, minlength=4) / N, 0.25, atol=0.025)
  share = np.abs(offsets[:, 0]) / np.maximum(np.abs(offsets).sum(1), 1e-12)
  np.testing.assert_allclose(np.mean(share), 0.5, atol=0.02)


def test_latent_and_transform_starts_are_uniform_in_their_boxes():
  epsilon = 0.25
  z = jnp.zeros((N, 3))
  latent = attacks.LatentBall(lambda v: v, z, epsilon, (-2.0, 2.0))
  u = np.asarray(latent.init(jax.random.key(3))) / epsilon
  np.testing.assert_allclose(u.mean(0), 0.0, atol=0.04)
  np.testing.assert_allclose(u.std(0), 1 / np.sqrt(3), rtol=0.04)
  np.testing.assert_array_equal(latent.init(), z)

  wide = np.array([[-1, -1, -1, -1, 0, -2], [1, 1, 1, 1, 2, 2]], np.float32)
  ball = attacks.TransformBall(jnp.zeros((N, 2, 2, 1)), epsilon, wide)
  u = (np.asarray(ball.init(jax.random.key(4))) - transforms.IDENTITY) / epsilon
  np.testing.assert_allclose(u.mean(0), 0.0, atol=0.04)
  np.testing.assert_allclose(u.std(0), 1 / np.sqrt(3), rtol=0.04)
  np.testing.assert_array_equal(ball.init(), np.broadcast_to(transforms.IDENTITY, (N, 6)))
  other = np.asarray(ball.init(jax.random.key(5)))
  assert np.mean(other == np.asarray(ball.init(jax.random.key(4)))) < 0.01


@pytest.mark.parametrize('ball', list(BALLS))
def test_starts_respect_the_box_where_it_binds(ball):
  x = jnp.concatenate([jnp.zeros((N // 2, 2, 1, 1)), jnp.ones((N // 2, 2, 1, 1))])
  start = np.asarray(ball(x, 0.3).init(jax.random.key(6)))
  assert start.min() >= 0.0 and start.max() <= 1.0
  # Half of the draws point into the box and survive the clip.
  assert 0.3 < np.mean(start[: N // 2] > 0) < 0.9 and 0.3 < np.mean(start[N // 2:] < 1) < 0.9
