"""Empirical robustness on toy generators, against the exact answers and Theorem 1.

A linear generator with a half-space classifier in latent space is Theorem 1's equality case
(Fawzi et al., Remark 4); for any other classifier the bound must hold, up to sampling error.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from advgen import attacks, bounds
from advgen.bounds import empirical

LATENT_DIM = 3
IMAGE_SHAPE = (4, 4, 1)
PIXELS = int(np.prod(IMAGE_SHAPE))


def _rng(seed):
  return np.random.default_rng(seed)


def linear_generator(seed=0):
  """g(z) = A z + b as 4x4x1 images, and its pseudo-inverse x -> A^+ (x - b)."""
  rng = _rng(seed)
  a = jnp.asarray(rng.standard_normal((PIXELS, LATENT_DIM)) / 8, jnp.float32)
  b = jnp.asarray(rng.uniform(0.3, 0.7, PIXELS), jnp.float32)
  pinv = jnp.asarray(np.linalg.pinv(np.asarray(a, np.float64)), jnp.float32)
  decode = lambda z: (z @ a.T + b).reshape((z.shape[0],) + IMAGE_SHAPE)
  invert = lambda x: (x.reshape(x.shape[0], -1) - b) @ pinv.T
  return decode, invert


def mlp_generator(seed=1, hidden=32):
  """A random 2-layer MLP with a sigmoid output: a smooth toy manifold inside [0, 1]."""
  rng = _rng(seed)
  w1 = jnp.asarray(rng.standard_normal((LATENT_DIM, hidden)), jnp.float32)
  w2 = jnp.asarray(rng.standard_normal((hidden, PIXELS)) / np.sqrt(hidden), jnp.float32)
  return lambda z: jax.nn.sigmoid(jnp.tanh(z @ w1) @ w2).reshape((z.shape[0],) + IMAGE_SHAPE)


def random_net(params, x):
  w1, b1, w2 = params
  return jnp.tanh(x.reshape(x.shape[0], -1) @ w1 + b1) @ w2


def random_net_params(seed, num_classes, hidden=16):
  """Random weights, hidden units centred on the generated images so the classes all occur."""
  rng = _rng(seed)
  centre = np.asarray(mlp_generator()(jnp.zeros((1, LATENT_DIM)))).reshape(-1)
  w1 = rng.standard_normal((PIXELS, hidden)) * 4
  return (jnp.asarray(w1, jnp.float32),
          jnp.asarray(-centre @ w1 + rng.standard_normal(hidden) * 0.5, jnp.float32),
          jnp.asarray(rng.standard_normal((hidden, num_classes)), jnp.float32))


def kmeans_centres(decode, key, num_classes, num_points=2000, iterations=10):
  """Lloyd's iterations on generated images: the classifier is the nearest centre."""
  x = np.asarray(decode(empirical.sample_latents(key, num_points, LATENT_DIM))).reshape(
      num_points, -1)
  centres = x[:num_classes].copy()
  for _ in range(iterations):
    nearest = np.argmin(((x[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    centres = np.stack([x[nearest == k].mean(0) if np.any(nearest == k) else centres[k]
                        for k in range(num_classes)])
  return jnp.asarray(centres, jnp.float32)


def nearest_centre(centres, x):
  flat = x.reshape(x.shape[0], -1)
  return -jnp.sum((flat[:, None] - centres[None]) ** 2, axis=-1)


def test_linear_generator_and_half_space_meet_theorem_1_with_equality():
  """Remark 4: P(r_Z <= t) = Phi(t + c) + Phi(t - c) - 1 exactly, and DeepFool finds r_Z."""
  decode, invert = linear_generator()
  w = jnp.asarray([0.6, -0.8, 0.0], jnp.float32)
  c = 0.4

  def logits_fn(x):
    score = invert(x) @ w - c  # a half-space in latent space, a linear classifier on images
    return jnp.stack([jnp.zeros_like(score), score], -1)

  n = 2000
  z = empirical.sample_latents(jax.random.key(0), n, LATENT_DIM)
  y, r_z, z_adv = empirical.latent_robustness(logits_fn, decode, z)
  exact = np.abs(np.asarray(z @ w) - c)
  np.testing.assert_array_equal(y, np.asarray(z @ w) > c)
  np.testing.assert_allclose(r_z, exact, rtol=1e-4, atol=1e-5)
  assert np.all(np.argmax(logits_fn(decode(z_adv)), -1) != y)

  probs = np.array([special.ndtr(c), special.ndtr(-c)])
  radii = np.sort(np.asarray(r_z, np.float64))
  theorem = bounds.isoperimetric_probability(radii, probs)
  np.testing.assert_allclose(theorem, special.ndtr(radii + c) + special.ndtr(radii - c) - 1,
                             atol=1e-12)
  ks = max(np.max(np.arange(1, n + 1) / n - theorem), np.max(theorem - np.arange(n) / n))
  assert ks < 3 / np.sqrt(n)
  measured, _ = empirical.class_probabilities(logits_fn, decode, jax.random.key(1), LATENT_DIM, 2,
                                              20000, batch_size=5000)
  np.testing.assert_allclose(measured, probs, atol=0.015)
  median = bounds.robustness_upper_bound(0.5, probs)
  assert empirical.quantile(r_z, 0.5) == pytest.approx(median, abs=0.05)


@jax.jit
def _random_nets_r_z(params, z):
  decode = mlp_generator()
  one = lambda p: empirical.latent_robustness(lambda x: random_net(p, x), decode, z)[1]
  return jax.vmap(one)(params)


@jax.jit
def _random_nets_probs(params, z):
  decode = mlp_generator()
  one = lambda p: jnp.argmax(random_net(p, decode(z)), -1)
  return jax.vmap(one)(params)


@pytest.mark.parametrize('p', [0.25, 0.5])
def test_no_classifier_beats_the_bound_on_a_toy_generator(p):
  """Random nets and k-means regions: the fraction with r_Z <= eta*(p) is at least p."""
  decode = mlp_generator()
  n, num_classes = 600, 4
  z = empirical.sample_latents(jax.random.key(2), n, LATENT_DIM)
  z_prob = empirical.sample_latents(jax.random.key(3), 20000, LATENT_DIM)
  params = [random_net_params(seed, num_classes) for seed in range(4)]
  stacked = jax.tree.map(lambda *a: jnp.stack(a), *params)
  r_z = list(np.asarray(_random_nets_r_z(stacked, z)))
  labels = np.asarray(_random_nets_probs(stacked, z_prob))
  probs = [np.bincount(row, minlength=num_classes) / len(row) for row in labels]

  centres = kmeans_centres(decode, jax.random.key(4), num_classes)
  kmeans = lambda x: nearest_centre(centres, x)
  r_z.append(np.asarray(empirical.latent_robustness(kmeans, decode, z)[1]))
  probs.append(empirical.class_probabilities(kmeans, decode, jax.random.key(3), LATENT_DIM,
                                             num_classes, 20000, batch_size=5000)[0])
  slack = 3 * np.sqrt(p * (1 - p) / n)
  for radii, class_probs in zip(r_z, probs):
    assert np.isfinite(radii).mean() > 0.99
    assert np.sum(class_probs > 0.02) >= 2  # a real boundary, not a constant classifier
    eta = bounds.robustness_upper_bound(p, class_probs)
    assert np.mean(radii <= eta) >= p - slack, (class_probs, eta)


def _label_changed(logits, y, tol=1e-5):
  """Another class's logit reaches the label's: points the attacks leave on the boundary count,
  as their side depends on the last bit (the estimate and this check compile differently)."""
  logits = np.asarray(logits)
  own = logits[np.arange(len(y)), y]
  others = np.where(np.eye(logits.shape[-1], dtype=bool)[y], -np.inf, logits).max(-1)
  return others - own >= -tol * np.abs(logits).max(-1)


def test_image_estimates_are_adversarial_and_ordered_on_a_toy_generator():
  """x_in lies on g's image, x_unc in the box, both change the label; r_unc <= r_in."""
  decode = mlp_generator()
  params = random_net_params(7, 3)
  logits_fn = lambda x: random_net(params, x)
  z = empirical.sample_latents(jax.random.key(5), 64, LATENT_DIM)
  res = empirical.estimate(logits_fn, decode, z, jax.random.key(6),
                           search=dict(binary_search_steps=4, num_steps=30),
                           pgd=dict(pgd_steps=10, bisection_steps=6))
  found = np.isfinite(res.r_in) & np.isfinite(res.r_unc)
  assert found.mean() > 0.9
  y = np.asarray(res.y)
  assert np.all(_label_changed(logits_fn(res.x_in), y)[found])
  assert np.all(_label_changed(logits_fn(res.x_unc), y)[found])
  assert float(res.x_unc.min()) >= 0 and float(res.x_unc.max()) <= 1
  x = decode(z)
  np.testing.assert_allclose(np.linalg.norm((res.x_in - x).reshape(64, -1), axis=1)[found],
                             np.asarray(res.r_in)[found], rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(res.r_in, np.minimum(res.r_in_deepfool, res.r_in_search))
  np.testing.assert_array_equal(res.r_unc, np.minimum(np.minimum(res.r_unc_deepfool,
                                                               res.r_unc_pgd), res.r_unc_fab))
  # The latent search starts at DeepFool's point and keeps it unless it finds a closer one.
  assert np.all(res.r_in_search[found] <= res.r_in_deepfool[found] * (1 + 1e-5))
  # Theory: r_unc <= r_in (true minima); the attacks are upper estimates, so allow a little.
  assert np.mean((res.r_unc <= 1.05 * res.r_in)[found]) >= 0.95
  assert np.median((res.r_unc / res.r_in)[found]) < 1


def test_unconstrained_robustness_is_exact_for_a_linear_classifier():
  """Distance |w.x + b| / ||w|| inside the box: DeepFool refined on its segment, the PGD
  bisection and FAB-L2 all find it (never below it, the bisection within its resolution)."""
  rng = _rng(8)
  w = jnp.asarray(rng.standard_normal(PIXELS), jnp.float32)
  x = jnp.asarray(rng.uniform(0.45, 0.55, (32,) + IMAGE_SHAPE), jnp.float32)
  bias = -float(jnp.mean(x.reshape(32, -1) @ w))
  score = lambda v: v.reshape(v.shape[0], -1) @ w + bias
  logits_fn = lambda v: jnp.stack([jnp.zeros(v.shape[0]), score(v)], -1)
  exact = np.abs(np.asarray(score(x))) / np.linalg.norm(w)
  keep = exact < 0.05  # the boundary is reached without touching the box
  y = jnp.argmax(logits_fn(x), -1)
  r_unc, r_df, r_pgd, r_fab, x_unc = empirical.unconstrained_robustness(
      logits_fn, x, y, jax.random.key(0), pgd_steps=20, bisection_steps=10, fab_steps=10)
  assert keep.sum() > 10
  np.testing.assert_allclose(np.asarray(r_df)[keep], exact[keep], rtol=1e-4, atol=1e-6)
  assert np.all(np.asarray(r_pgd)[keep] >= exact[keep] * (1 - 1e-4) - 1e-6)
  assert np.all(np.asarray(r_pgd)[keep] <= exact[keep] * 1.05 + 1e-6)
  assert np.all(np.asarray(r_fab)[keep] >= exact[keep] * (1 - 1e-4) - 1e-6)
  assert np.all(np.asarray(r_fab)[keep] <= exact[keep] * 1.01 + 1e-6)
  np.testing.assert_array_equal(r_unc, np.minimum(np.minimum(r_df, r_pgd), r_fab))
  chosen = np.linalg.norm(np.asarray(x_unc - x).reshape(32, -1), axis=1)
  np.testing.assert_allclose(chosen, r_unc, rtol=1e-4, atol=1e-6)  # the image of the smallest


def test_unconstrained_robustness_keeps_fab_where_deepfool_and_pgd_fall_short():
  """A score s + 3 s^3 (s = 4 (w.x + b), ||w|| = 1) has its boundary at distance |s| / 4, but one
  DeepFool step undershoots it (fails) and a one-step PGD bisection overshoots it: FAB-L2 finds
  it, and r_unc and x_unc are FAB's."""
  rng = _rng(10)
  w = rng.standard_normal(PIXELS)
  w = jnp.asarray(w / np.linalg.norm(w), jnp.float32)
  x = jnp.asarray(rng.uniform(0.3, 0.7, (32,) + IMAGE_SHAPE), jnp.float32)
  bias = float(jnp.median(x.reshape(32, -1) @ w))
  s = lambda v: 4 * (v.reshape(v.shape[0], -1) @ w - bias)
  logits_fn = lambda v: jnp.stack([jnp.zeros(v.shape[0]), s(v) + 3 * s(v) ** 3], -1)
  exact = np.abs(np.asarray(s(x))) / 4
  keep = (exact > 0.05) & (exact < 0.15)
  y = jnp.argmax(logits_fn(x), -1)
  r_unc, r_df, r_pgd, r_fab, x_unc = map(np.asarray, empirical.unconstrained_robustness(
      logits_fn, x, y, jax.random.key(1), max_iter=1, pgd_steps=5, bisection_steps=1,
      fab_steps=20))
  assert keep.sum() > 5 and np.all(np.isinf(r_df[keep])) and np.all(r_pgd[keep] > 1.2 * exact[keep])
  np.testing.assert_allclose(r_fab[keep], exact[keep], rtol=0.01)
  np.testing.assert_array_equal(r_unc[keep], r_fab[keep])
  moved = np.linalg.norm((x_unc - np.asarray(x)).reshape(32, -1), axis=1)
  np.testing.assert_allclose(moved[keep], r_fab[keep], rtol=1e-4)


def test_deepfool_without_a_box_is_exact_outside_the_unit_box():
  """Latent codes are not images: box=None must not clip them to [0, 1]."""
  rng = _rng(9)
  w = jnp.asarray(rng.standard_normal(5), jnp.float32)
  z = jnp.asarray(rng.standard_normal((16, 5)) * 3, jnp.float32)
  logits_fn = lambda v: jnp.stack([jnp.zeros(v.shape[0]), v @ w - 0.5], -1)
  y = jnp.argmax(logits_fn(z), -1)
  exact = np.abs(np.asarray(z @ w) - 0.5) / np.linalg.norm(w)
  free = attacks.deepfool(logits_fn, z, y, box=None)
  assert np.all(free.success)
  np.testing.assert_allclose(free.distance, 1.02 * exact, rtol=1e-4)
  np.testing.assert_allclose(free.x_adv, z - 1.02 * (np.asarray(z @ w) - 0.5)[:, None] *
                             np.asarray(w) / np.sum(np.asarray(w) ** 2), rtol=1e-4, atol=1e-5)
  clipped = attacks.deepfool(logits_fn, z, y, max_iter=3)
  assert float(clipped.x_adv.min()) >= 0 and float(clipped.x_adv.max()) <= 1
  assert not np.allclose(clipped.x_adv, free.x_adv)


def test_quantile_and_cdf_count_failures_as_infinite():
  values = np.array([3.0, 1.0, np.inf, 2.0])
  assert empirical.quantile(values, 0.25) == 1.0
  assert empirical.quantile(values, 0.5) == 2.0
  assert empirical.quantile(values, 0.75) == 3.0
  assert empirical.quantile(values, 1.0) == np.inf
  np.testing.assert_allclose(empirical.empirical_cdf(values, [0.5, 1.0, 2.5, 1e9]),
                             [0, 0.25, 0.5, 0.75])
