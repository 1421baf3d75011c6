"""Threat models: feasibility, exact projections, and what the classifier is shown."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advgen import attacks, transforms
from advgen.attacks import threat as threats
from advgen.data import fonts

IMAGE_BALLS = (attacks.LinfBall, attacks.L2Ball, attacks.L1Ball)
SHAPES = ((3, 4, 4, 1), (2, 6, 6, 3))
RADII = {attacks.LinfBall: 0.3, attacks.L2Ball: 2.0, attacks.L1Ball: 6.0}
_warp = jax.jit(jax.vmap(transforms.transform))


@jax.jit
def _start_and_project(threat, key, v):
  """One compiled program per threat type and shape: a random start and a projection."""
  return threat.init(key), threat.project(v)


def _images(key, shape):
  """Images with some pixels exactly on the box edges, so the box constraint is active."""
  x = jax.random.uniform(key, shape)
  return jnp.where(x < 0.2, 0.0, jnp.where(x > 0.8, 1.0, x))


def assert_feasible(threat, v):
  v = np.asarray(v)
  epsilon = np.broadcast_to(np.asarray(threat.epsilon), v.shape[:1])
  assert np.all(np.asarray(threat.distance(v)) <= epsilon * (1 + 1e-5) + 1e-6)
  if isinstance(threat, IMAGE_BALLS):
    assert v.min() >= 0.0 and v.max() <= 1.0


def _ball(ball, shape, key, radius):
  """A ball with per-example radii (the same compiled program for any radii)."""
  return ball(_images(key, shape), jnp.full(shape[:1], radius, jnp.float32))


@pytest.mark.parametrize('ball', IMAGE_BALLS)
@pytest.mark.parametrize('shape', SHAPES)
def test_image_balls_are_feasible_and_projections_idempotent(ball, shape):
  keys = jax.random.split(jax.random.key(sum(shape)), 3)
  radii = np.random.default_rng(sum(shape)).uniform(0.0, RADII[ball], shape[:1])
  threat = ball(_images(keys[0], shape), jnp.asarray(radii, jnp.float32))
  far = threat.x + 3.0 * jax.random.normal(keys[2], shape)
  start, projected = _start_and_project(threat, keys[1], far)
  assert_feasible(threat, start)
  assert_feasible(threat, projected)
  _, again = _start_and_project(threat, keys[1], projected)
  np.testing.assert_allclose(again, projected, atol=1e-5)
  np.testing.assert_array_equal(threat.init(), threat.x)


def test_threat_types_have_distinct_tree_structures():
  """jit caches programs by tree structure: an L2 ball must never reuse an L-inf ball's program
  (structures of jax.tree_util.register_dataclass types with equal field counts compare equal)."""
  x = jnp.zeros((2, 3, 3, 1))
  structures = [jax.tree.structure(ball(x, 0.1)) for ball in IMAGE_BALLS]
  assert all(a != b for i, a in enumerate(structures) for b in structures[i + 1:])


@pytest.mark.parametrize('ball', IMAGE_BALLS)
def test_zero_radius_projects_onto_the_centre(ball):
  threat = _ball(ball, SHAPES[0], jax.random.key(0), 0.0)
  start, projected = _start_and_project(threat, jax.random.key(1),
                                        threat.x + jax.random.normal(jax.random.key(2), SHAPES[0]))
  np.testing.assert_allclose(projected, threat.x, atol=1e-6)
  np.testing.assert_allclose(start, threat.x, atol=1e-6)


@pytest.mark.parametrize('ball', (attacks.L2Ball, attacks.L1Ball))
def test_projection_onto_ball_and_box_is_the_nearest_point(ball):
  """Variational inequality of a Euclidean projection P onto a convex set C:
  <v - P(v), c - P(v)> <= 0 for every c in C. Ball-then-box fails it whenever the box binds."""
  keys = jax.random.split(jax.random.key(7), 4)
  radius = RADII[ball] / 2
  threat = _ball(ball, SHAPES[0], keys[0], radius)
  x = np.asarray(threat.x, np.float64)
  v = np.asarray(threat.x + 2.0 * jax.random.normal(keys[1], SHAPES[0]), np.float64)
  _, p = _start_and_project(threat, keys[2], v.astype(np.float32))
  p = np.asarray(p, np.float64)
  feasible = [x] + [np.asarray(_start_and_project(threat, k, v.astype(np.float32))[0], np.float64)
                    for k in jax.random.split(keys[3], 64)]
  for c in feasible:
    inner = np.sum((v - p) * (c - p), axis=(1, 2, 3))
    assert np.all(inner <= 1e-4), inner
  # Ball-then-box is a different, farther point here: the inequality has teeth.
  delta = (v - x).reshape(len(v), -1)
  if ball is attacks.L2Ball:
    shrunk = delta * np.minimum(1.0, radius / np.linalg.norm(delta, axis=1, keepdims=True))
  else:
    shrunk = np.asarray(threats.soft_threshold(delta, threats.l1_ball_threshold(delta, radius)))
  composed = np.clip(x + shrunk.reshape(v.shape), 0.0, 1.0)
  gap = np.linalg.norm((v - p).reshape(len(v), -1), axis=1)
  composed_gap = np.linalg.norm((v - composed).reshape(len(v), -1), axis=1)
  assert np.all(gap <= composed_gap + 1e-5) and np.any(gap < composed_gap - 1e-3)


def test_sort_based_l1_projection_is_exact():
  p = jax.random.normal(jax.random.key(3), (5, 3, 3, 1))
  epsilon = jnp.array([0.5, 1.0, 2.0, 100.0, 0.0])
  projected = threats.soft_threshold(p, threats.l1_ball_threshold(p, epsilon))
  l1 = np.asarray(attacks.norms.l1(projected))
  np.testing.assert_allclose(l1[:3], epsilon[:3], rtol=1e-5)
  np.testing.assert_allclose(projected[3], p[3])  # inside: unchanged
  np.testing.assert_array_equal(projected[4], 0.0)
  # KKT: every coordinate moved towards zero by the same threshold or to zero.
  moved = np.abs(np.asarray(p - projected))[:3].reshape(3, -1)
  nonzero = np.asarray(projected)[:3].reshape(3, -1) != 0
  for row, keep in zip(moved, nonzero):
    np.testing.assert_allclose(row[keep], row[keep][0], rtol=1e-4)
    assert np.all(row[~keep] <= row[keep][0] + 1e-6)


def test_transform_ball_shows_the_warp_of_its_parameters():
  x = fonts.manifold().prototypes[:2, 0]
  ranges = transforms.RANGES['easy']
  epsilon = jnp.array([0.05, 0.05, 0.1, 0.1, 0.2, 0.3])
  threat = attacks.TransformBall(x, epsilon, ranges)
  start, t = _start_and_project(threat, jax.random.key(0),
                                threat.init() + jax.random.normal(jax.random.key(0), (2, 6)))
  for params in (start, t):
    assert np.all(np.abs(np.asarray(params - transforms.IDENTITY)) <= epsilon + 1e-6)
    assert np.all(params >= ranges[0]) and np.all(params <= ranges[1])
  np.testing.assert_allclose(threat.to_input(t), _warp(x, t), atol=1e-5)

  logits_fn = lambda images: jnp.stack([images.mean((1, 2, 3)), -images.mean((1, 2, 3))], -1)
  res = attacks.pgd(logits_fn, threat, jnp.zeros(2, jnp.int32), jax.random.key(1), num_steps=3,
                    step_size=0.05, random_start=False)
  np.testing.assert_allclose(res.x_adv, _warp(x, res.v), atol=1e-5)
  assert np.all(np.abs(np.asarray(res.v - transforms.IDENTITY)) <= epsilon + 1e-6)
  np.testing.assert_allclose(res.distance, np.abs(res.v - transforms.IDENTITY).max(-1), atol=1e-6)


def test_on_true_manifold_attack_returns_exact_renderings_within_ranges():
  manifold = fonts.manifold()
  images, labels, latents = fonts.sample(manifold, jax.random.key(0), 6)
  weights = jax.random.normal(jax.random.key(1), (28 * 28, 10))
  logits_fn = lambda x: x.reshape(x.shape[0], -1) @ weights
  font, theta = latents['font'], jnp.asarray(latents['theta'])
  epsilon = 0.3
  threat = attacks.LatentBall(manifold.decoder(font, labels), theta, epsilon, manifold.ranges)
  np.testing.assert_allclose(threat.to_input(threat.init()), images, atol=1e-5)
  res = attacks.pgd(logits_fn, threat, jnp.asarray(labels), jax.random.key(2), num_steps=4,
                    step_size=0.05, restarts=2)
  np.testing.assert_allclose(res.x_adv, manifold.render(font, labels, res.v), atol=1e-5)
  assert np.all(res.v >= manifold.ranges[0]) and np.all(res.v <= manifold.ranges[1])
  assert np.all(np.abs(np.asarray(res.v - theta)) <= epsilon + 1e-6)
  assert np.mean(np.abs(np.asarray(res.v - theta)) > 1e-3) > 0.5  # theta did move
  np.testing.assert_allclose(res.l2, np.linalg.norm((res.x_adv - images).reshape(6, -1), axis=1),
                             rtol=1e-5, atol=1e-5)

  # Per-batch arrays can travel as `context` instead, so one decode_fn serves every batch.
  render = lambda t, context: manifold.render(context[0], context[1], t)
  with_context = attacks.LatentBall(render, theta, epsilon, manifold.ranges, (font, labels))
  np.testing.assert_allclose(with_context.to_input(res.v), res.x_adv, atol=1e-5)
