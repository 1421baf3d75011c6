"""Minimal-perturbation attacks (DeepFool, Carlini-Wagner L2) against linear closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advgen import attacks

SHAPE = (6, 8, 8, 1)
_KEYS = jax.random.split(jax.random.key(0), 4)
_W_BINARY = jax.random.normal(_KEYS[0], (64, 2))
_W_MULTI = jax.random.normal(_KEYS[1], (64, 10)) / 4
_X = jax.random.uniform(_KEYS[2], SHAPE, minval=0.4, maxval=0.6)  # far from the box edges


def binary(x):
  return x.reshape(x.shape[0], -1) @ _W_BINARY + jnp.array([0.3, -0.2])


def multi(x):
  return x.reshape(x.shape[0], -1) @ _W_MULTI


def _distances_to_boundaries(logits_fn, weights, norm):
  """|z_y - z_k| / ||w_y - w_k||_dual for every k != y: exact for an affine classifier."""
  logits = np.asarray(logits_fn(_X))
  y = logits.argmax(-1)
  w = np.asarray(weights)
  dual = {'l2': 2, 'linf': 1}[norm]
  out = np.full(logits.shape, np.inf)
  for b, label in enumerate(y):
    for k in range(logits.shape[1]):
      if k != label:
        out[b, k] = (logits[b, label] - logits[b, k]) / np.linalg.norm(w[:, label] - w[:, k], dual)
  return out, y


@pytest.mark.parametrize('norm', ['l2', 'linf'])
def test_deepfool_is_exact_in_one_step_on_a_binary_linear_model(norm):
  distances, y = _distances_to_boundaries(binary, _W_BINARY, norm)
  res = attacks.deepfool(binary, _X, jnp.asarray(y), norm=norm)
  assert np.all(res.success)
  np.testing.assert_allclose(res.distance, 1.02 * distances.min(-1), rtol=1e-4)


def test_deepfool_finds_the_nearest_of_many_linear_boundaries():
  distances, y = _distances_to_boundaries(multi, _W_MULTI, 'l2')
  res = attacks.build({'attack': 'deepfool'})(multi, {'image': _X, 'label': jnp.asarray(y)}, None)
  assert np.all(res.success)
  np.testing.assert_allclose(res.distance, 1.02 * distances.min(-1), rtol=1e-4)

  # With only the two highest other logits as candidates, the nearest of those two is found.
  top2 = np.argsort(-np.where(np.eye(10, dtype=bool)[y], -np.inf, multi(_X)), axis=-1)[:, :2]
  restricted = np.take_along_axis(distances, top2, axis=-1).min(-1)
  res2 = attacks.deepfool(multi, _X, jnp.asarray(y), num_classes=2)
  np.testing.assert_allclose(res2.distance, 1.02 * restricted, rtol=1e-4)
  cache = attacks.deepfool._cache_size()
  attacks.deepfool(multi, 1.0 - _X, jnp.asarray(y), num_classes=2)
  assert attacks.deepfool._cache_size() == cache  # a new batch: no retrace

  mapped = jax.vmap(lambda xi, yi: attacks.deepfool(multi, xi[None], yi[None], num_classes=2))(
      _X, jnp.asarray(y))
  np.testing.assert_allclose(mapped.distance[:, 0], res2.distance, rtol=1e-5)


def test_carlini_wagner_approaches_the_minimal_l2_perturbation():
  distances, y = _distances_to_boundaries(binary, _W_BINARY, 'l2')
  w_norm = np.linalg.norm(np.asarray(_W_BINARY[:, 0] - _W_BINARY[:, 1]))
  caches = set()
  for kappa in (0.0, 0.5):  # kappa is traced: one compiled program
    res = attacks.carlini_wagner_l2(binary, _X, jnp.asarray(y), kappa=kappa, c_init=0.1,
                                    binary_search_steps=8, num_steps=150, lr=0.02)
    minimal = distances.min(-1) + kappa / w_norm  # the margin must pass -kappa
    assert np.all(res.success)
    assert np.all(-np.asarray(attacks.margin(res.logits, jnp.asarray(y))) >= kappa - 1e-4)
    assert np.all(res.distance >= minimal * (1 - 1e-3))
    assert np.all(res.distance <= minimal * 1.05)
    caches.add(attacks.carlini_wagner_l2._cache_size())
  assert len(caches) == 1


def test_constant_classifier_is_never_fooled():
  constant = lambda x: jnp.zeros((x.shape[0], 3)) + jnp.array([1.0, 0.0, -1.0])
  y = jnp.zeros(SHAPE[0], jnp.int32)
  res = attacks.deepfool(constant, _X, y, max_iter=5)
  assert not np.any(res.success)
  np.testing.assert_array_equal(res.x_adv, _X)
  cw = attacks.build({'attack': 'cw_l2', 'binary_search_steps': 2, 'num_steps': 5})(
      constant, {'image': _X, 'label': y}, None)
  assert not np.any(cw.success)
  np.testing.assert_array_equal(cw.x_adv, _X)
