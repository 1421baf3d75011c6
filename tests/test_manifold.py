import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advgen import manifold
from advgen.errors import UserError
from advgen.models import class_models, generators

LATENT = 4


@pytest.fixture(scope='module')
def class_generators():
  """Three small random class decoders (a smooth, generically injective map from R^4)."""
  module = generators.create('vae', (12, 12, 1), latent_dim=LATENT, encoder_channels=(4, 8),
                             decoder_channels=(16, 8))
  keys = jax.random.split(jax.random.key(0), 3)
  variables = jax.jit(jax.vmap(lambda k: module.init(k, jnp.zeros((1, 12, 12, 1)))))(keys)
  return module, variables


def test_inversion_recovers_the_latent_of_generated_samples(class_generators):
  module, variables = class_generators
  decode = jax.jit(class_models.decode_fn(module, variables))
  z_true = generators.truncated_prior(jax.random.key(1), (8, LATENT), 1.5)
  y = jnp.array([0, 1, 2, 0, 1, 2, 0, 1])
  x = decode(z_true, y)
  kwargs = dict(latent_dim=LATENT, num_restarts=4, num_steps=200, learning_rate=0.05)
  z, decoded, residual = manifold.invert(decode, x, jax.random.key(2), y, **kwargs)
  assert z.shape == (8, LATENT) and decoded.shape == x.shape and residual.shape == (8,)
  np.testing.assert_allclose(residual, jnp.linalg.norm((decoded - x).reshape(8, -1), axis=1),
                             rtol=1e-4, atol=1e-6)
  norms = np.linalg.norm(np.asarray(x).reshape(8, -1), axis=1)
  assert np.all(np.asarray(residual) < 0.02 * norms)
  assert np.median(np.linalg.norm(np.asarray(z - z_true), axis=1)) < 0.1
  # An image off the generator's image stays far from it; a latent box is respected.
  noise = jax.random.uniform(jax.random.key(3), x.shape)
  z_box, _, far = manifold.invert(decode, noise, jax.random.key(2), y, bound=0.5, **kwargs)
  assert np.all(np.asarray(far) > 10 * np.asarray(residual).max())
  assert float(jnp.abs(z_box).max()) <= 0.5


def test_inversion_starts_from_a_given_code_and_never_retraces(class_generators):
  module, variables = class_generators
  decode = jax.jit(class_models.class_decode_fn(module, variables, 1))
  z_true = generators.truncated_prior(jax.random.key(4), (5, LATENT))
  x = decode(z_true)
  kwargs = dict(latent_dim=LATENT, num_restarts=1, num_steps=0)
  z, _, residual = manifold.invert(decode, x, jax.random.key(0), None, z_true, **kwargs)
  np.testing.assert_allclose(z, z_true)  # zero steps from the true code: the true code
  np.testing.assert_allclose(residual, 0.0, atol=1e-5)
  before = manifold.invert._cache_size()
  manifold.invert(decode, x + 0.1, jax.random.key(1), None, z_true, **kwargs)
  assert manifold.invert._cache_size() == before


def test_latent_codes_follow_each_images_class_in_the_input_order(class_generators):
  module, variables = class_generators
  x = jax.random.uniform(jax.random.key(5), (23, 12, 12, 1))
  y = np.array([2, 0, 1] * 7 + [2, 2])
  mean, log_var = manifold.latent_codes(module, variables, x, y, batch_size=4)
  direct_mean, direct_log_var = jax.jit(class_models.encode_fn(module, variables))(x, y)
  np.testing.assert_allclose(mean, direct_mean, atol=1e-5)
  np.testing.assert_allclose(log_var, direct_log_var, atol=1e-5)
  other_class = jax.jit(class_models.class_encode_fn(module, variables, 0))(x[:1])[0][0]
  assert not np.allclose(mean[0], other_class)  # example 0 is of class 2
  gan = generators.create('dcgan', (12, 12, 1), latent_dim=3, decoder_channels=(4, 4),
                          discriminator_channels=(4,))
  with pytest.raises(UserError, match='no encoder'):
    manifold.latent_codes(gan, variables, x, y)


def test_subspace_distance_is_the_residual_off_the_neighbours_affine_span():
  rng = np.random.default_rng(0)
  basis = np.linalg.qr(rng.normal(size=(20, 3)))[0]  # orthonormal 3-dim subspace of R^20
  offset = rng.normal(size=20)
  reference = offset + rng.normal(size=(200, 3)) @ basis.T
  normal = rng.normal(size=20)
  normal -= basis @ (basis.T @ normal)
  normal /= np.linalg.norm(normal)
  on = offset + rng.normal(size=(4, 3)) @ basis.T
  x = np.concatenate([on, on + 0.7 * normal]).reshape(8, 4, 5, 1)
  distance = manifold.subspace_distance(x, reference.reshape(200, 4, 5, 1), num_neighbours=10,
                                        batch_size=3)
  np.testing.assert_allclose(distance[:4], 0.0, atol=1e-4)
  np.testing.assert_allclose(distance[4:], 0.7, atol=1e-4)
  with pytest.raises(UserError, match='num_neighbours'):
    manifold.subspace_distance(x, reference[:5].reshape(5, 4, 5, 1), num_neighbours=10)
