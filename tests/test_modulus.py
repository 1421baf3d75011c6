"""Modulus-of-continuity estimation on generators whose Lipschitz behaviour is known exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advgen import bounds

LATENT_DIM = 6
RADII = [0.1, 0.5, 2.0]


def matrix_with_singular_values(seed, singular_values, out_dim):
  """A (out_dim, d) float32 matrix U diag(s) V^T with random orthonormal U, V."""
  rng = np.random.default_rng(seed)
  u, _ = np.linalg.qr(rng.standard_normal((out_dim, len(singular_values))))
  v, _ = np.linalg.qr(rng.standard_normal((len(singular_values),) * 2))
  return jnp.asarray(u @ np.diag(singular_values) @ v.T, jnp.float32)


def linear_decoder(matrix):
  """g(z) = A z, shaped like a batch of 4x4x2 images."""
  return lambda z: (z @ matrix.T).reshape(z.shape[0], 4, 4, 2)


def test_scaled_isometry_has_every_ratio_equal_to_the_scale():
  """A = s Q with orthonormal columns: ||A(z + r u) - A z|| / r = s for every z, u, r."""
  scale = 1.7
  decode = linear_decoder(matrix_with_singular_values(0, [scale] * LATENT_DIM, 32))
  estimate = bounds.estimate_modulus(decode, jax.random.key(1), LATENT_DIM, RADII,
                                     num_points=64, num_directions=4, quantile=0.99)
  np.testing.assert_allclose(estimate.ratio_quantile, scale, rtol=1e-5)
  assert estimate.failure_prob == pytest.approx(0.01)
  ts = np.linspace(0, 5, 11)
  np.testing.assert_allclose(estimate.omega(ts), scale * ts, rtol=1e-5)
  np.testing.assert_allclose(estimate.omega.inverse(estimate.omega(ts)), ts, atol=1e-12)


def test_linear_generator_ratios_lie_between_extreme_singular_values():
  singular_values = np.array([3.0, 2.0, 1.5, 1.0, 0.7, 0.5])
  decode = linear_decoder(matrix_with_singular_values(2, singular_values, 32))
  z = jax.random.normal(jax.random.key(3), (64, LATENT_DIM))
  directions = jax.random.normal(jax.random.key(4), (64, 8, LATENT_DIM))
  ratios = bounds.modulus.step_ratios(decode, z, directions, jnp.asarray(RADII))
  assert ratios.shape == (len(RADII), 64, 8)
  assert np.all(ratios <= 3.0 * (1 + 1e-5)) and np.all(ratios >= 0.5 * (1 - 1e-5))
  # Linear: the ratio does not depend on the radius, only on the direction.
  np.testing.assert_allclose(ratios[0], ratios[-1], rtol=1e-4)
  estimate = bounds.estimate_modulus(decode, jax.random.key(5), LATENT_DIM, RADII,
                                     num_points=64, num_directions=8, quantile=0.99)
  rms = np.sqrt(np.mean(singular_values ** 2))  # ratio^2 averages sigma_i^2 over directions
  assert np.all((estimate.ratio_quantile > rms) & (estimate.ratio_quantile <= 3.0 * (1 + 1e-5)))


def test_ratios_match_an_eager_float64_reference():
  """A small MLP decoder: the jitted, vmapped ratios equal a plain numpy computation."""
  rng = np.random.default_rng(14)
  w1, w2 = rng.standard_normal((LATENT_DIM, 16)), rng.standard_normal((16, 12)) / 4
  decode = lambda z: jax.nn.sigmoid(jnp.tanh(z @ w1.astype(np.float32)) @ w2.astype(np.float32))
  z = rng.standard_normal((32, LATENT_DIM))
  directions = rng.standard_normal((32, 4, LATENT_DIM))
  ratios = bounds.modulus.step_ratios(decode, jnp.asarray(z, jnp.float32),
                                      jnp.asarray(directions, jnp.float32), jnp.asarray(RADII))
  numpy_decode = lambda v: 1 / (1 + np.exp(-np.tanh(v @ w1) @ w2))
  units = directions / np.linalg.norm(directions, axis=-1, keepdims=True)
  expected = [np.linalg.norm(numpy_decode(z[:, None] + r * units) - numpy_decode(z)[:, None],
                             axis=-1) / r for r in RADII]
  np.testing.assert_allclose(ratios, expected, rtol=1e-4)


def test_estimated_modulus_is_monotone_and_feeds_the_bound():
  decode = lambda z: jnp.tanh(3.0 * z)  # saturates: the ratio falls with the radius
  estimate = bounds.estimate_modulus(decode, jax.random.key(6), 3, [0.05, 0.2, 1.0, 4.0],
                                     num_points=64, num_directions=4, quantile=0.9)
  assert np.all(np.diff(estimate.ratio_quantile) < 0)
  ts = np.linspace(0, 6, 61)
  assert np.all(np.diff(estimate.omega(ts)) >= 0)
  probs = bounds.equiprobable(10)
  eta = bounds.robustness_upper_bound(0.5, probs, estimate.omega, estimate.failure_prob)
  t = bounds.robustness_upper_bound(0.6, probs)
  assert eta == pytest.approx(estimate.omega(t))


def test_power_iteration_finds_top_singular_value():
  singular_values = [2.5, 1.5, 1.0, 0.5, 0.25, 0.1]
  decode = linear_decoder(matrix_with_singular_values(7, singular_values, 32))
  z = jax.random.normal(jax.random.key(8), (5, LATENT_DIM))
  norms = bounds.jacobian_spectral_norm(decode, z, jax.random.key(9), num_iters=30)
  assert norms.shape == (5,)
  np.testing.assert_allclose(norms, 2.5, atol=1e-3)


def test_power_iteration_matches_full_jacobian_of_a_nonlinear_decoder():
  matrix = matrix_with_singular_values(10, [2.0, 1.0, 0.8, 0.5, 0.3, 0.2], 12)
  decode = lambda z: jnp.tanh(z @ matrix.T)
  z = 0.5 * jax.random.normal(jax.random.key(11), (4, LATENT_DIM))
  jacobians = jax.vmap(jax.jacfwd(lambda v: decode(v[None])[0]))(z)
  exact = np.linalg.svd(np.asarray(jacobians), compute_uv=False)[:, 0]
  norms = bounds.jacobian_spectral_norm(decode, z, jax.random.key(12), num_iters=100)
  np.testing.assert_allclose(norms, exact, rtol=1e-3)
  assert np.all(norms <= exact * (1 + 1e-5))  # a Rayleigh quotient never overshoots


def test_estimators_do_not_retrace():
  decode = linear_decoder(matrix_with_singular_values(13, [1.0] * LATENT_DIM, 32))
  z = jnp.zeros((3, LATENT_DIM))
  bounds.jacobian_spectral_norm(decode, z, jax.random.key(0), num_iters=5)
  before = bounds.jacobian_spectral_norm._cache_size()
  bounds.jacobian_spectral_norm(decode, z + 1, jax.random.key(1), num_iters=5)
  assert bounds.jacobian_spectral_norm._cache_size() == before


def test_estimate_rejects_bad_settings():
  decode = lambda z: z
  with pytest.raises(ValueError, match='quantile'):
    bounds.estimate_modulus(decode, jax.random.key(0), 2, RADII, quantile=1.5)
  with pytest.raises(ValueError, match='strictly increasing'):
    bounds.estimate_modulus(decode, jax.random.key(0), 2, [1.0, 0.5])


def test_estimate_samples_standard_normal_latents_and_independent_signed_directions(monkeypatch):
  """The ratios come from z ~ N(0, I) and Gaussian directions of every orientation, drawn with
  their own keys; the quantile kept is the requested one of exactly those ratios."""
  seen = {}
  original = bounds.modulus.step_ratios

  def spy(decode_fn, z, directions, radii):
    seen.update(z=np.asarray(z), directions=np.asarray(directions))
    seen['ratios'] = np.asarray(original(decode_fn, z, directions, radii), np.float64)
    return seen['ratios']

  monkeypatch.setattr(bounds.modulus, 'step_ratios', spy)
  decode = lambda z: jnp.tanh(2.0 * z) + 0.3 * z[:, :1] ** 2
  estimate = bounds.estimate_modulus(decode, jax.random.key(0), 4, RADII, num_points=500,
                                     num_directions=6, quantile=0.9)
  z, directions = seen['z'], seen['directions']
  assert z.shape == (500, 4) and directions.shape == (500, 6, 4)
  assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05
  assert abs(directions.mean()) < 0.05 and abs(np.mean(directions < 0) - 0.5) < 0.02
  # Independent draws: the directions are not the latents again (a key used twice).
  flat = directions.reshape(-1)[:z.size]
  assert abs(np.corrcoef(flat, z.reshape(-1))[0, 1]) < 0.05
  assert abs(np.corrcoef(directions[:, 0].reshape(-1), z.reshape(-1))[0, 1]) < 0.05
  expected = np.quantile(seen['ratios'].reshape(len(RADII), -1), 0.9, axis=1)
  np.testing.assert_allclose(estimate.ratio_quantile, expected, rtol=1e-6)
  np.testing.assert_allclose(estimate.omega(np.asarray(RADII)), np.asarray(RADII) * expected,
                             rtol=1e-6)
