"""HopSkipJump against a two-class linear model, whose minimal perturbation is known exactly:
|z| / ||w||_2 in L2 and |z| / ||w||_1 in L-inf, where z = w.(x - 0.15) + b is the logit gap.

w > 0, so uniform noise in [0, 1] is always class 1: examples of class 0 start from noise, those
of class 1 from another image of the batch."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advgen import attacks

_KEYS = jax.random.split(jax.random.key(0), 3)
_W = jnp.abs(jax.random.normal(_KEYS[0], (64,)))
_B = 0.1
_X = jax.random.uniform(_KEYS[1], (8, 8, 8, 1), minval=0.05, maxval=0.25)  # the box never binds


def _gap(x):
  return (x.reshape(x.shape[0], -1) - 0.15) @ _W + _B


def linear(x):
  return jnp.stack([jnp.zeros(x.shape[0]), _gap(x)], axis=-1)


def _minimal(x, norm):
  dual = {'l2': 2, 'linf': 1}[norm]
  return np.abs(np.asarray(_gap(x))) / np.linalg.norm(np.asarray(_W), dual)


def _labels():
  """The model's labels, except that the last example is given the wrong one (nothing to do)."""
  y = np.asarray(linear(_X)).argmax(-1)
  assert 0 < y.sum() < len(y) - 1  # both classes among the correctly labelled examples
  assert np.all(np.asarray(linear(jax.random.uniform(_KEYS[2], (100, 8, 8, 1)))).argmax(-1) == 1)
  y[-1] = 1 - y[-1]
  return jnp.asarray(y)


def _monte_carlo_queries(num_iterations, init=100, cap=10000):
  return sum(min(int(np.floor(init * np.sqrt(t))), cap) for t in range(1, num_iterations + 1))


def test_l2_distance_approaches_the_exact_minimum_and_queries_are_counted():
  y = _labels()
  res = attacks.hopskipjump(linear, _X, y, jax.random.key(1))  # the paper's defaults: 40 iterations
  assert isinstance(res, attacks.AttackResult)
  ratio = np.asarray(res.distance)[:-1] / _minimal(_X, 'l2')[:-1]
  assert np.all(res.success)
  assert np.all(ratio >= 1.0) and np.all(ratio <= 1.02), ratio
  np.testing.assert_allclose(res.l2, res.distance, rtol=1e-6)
  assert res.distance[-1] == 0 and res.queries[-1] == 1  # already misclassified: one query
  # Clean check 1, blend search 10 and 41 boundary searches of 9 bisections (theta = 1 / 64**1.5),
  # the Monte-Carlo samples; then >= 1 step-size query per iteration, and 1 noise draw (class 0)
  # or all 100 and then 1 to 7 images of the batch (class 1).
  fixed = 1 + 10 + 41 * 9 + _monte_carlo_queries(40)
  extra = np.asarray(res.queries)[:-1] - fixed - np.where(y[:-1] == 0, 1, 100)
  assert np.all(extra >= 40) and np.all(extra <= 7 + 40 * 31), extra

  cache = attacks.hopskipjump._cache_size()
  attacks.hopskipjump(linear, 1.0 - _X, y, jax.random.key(2))
  assert attacks.hopskipjump._cache_size() == cache  # a new batch: no retrace


def test_linf_distance_approaches_the_exact_minimum():
  y = _labels()
  res = attacks.hopskipjump(linear, _X, y, jax.random.key(1), norm='linf')
  ratio = np.asarray(res.distance)[:-1] / _minimal(_X, 'linf')[:-1]
  assert np.all(res.success)
  assert np.all(ratio >= 1.0) and np.all(ratio <= 1.03), ratio
  np.testing.assert_allclose(res.linf, res.distance, rtol=1e-6)


def test_it_never_differentiates_and_counts_every_image_it_shows():
  """The classifier's gradient raises, and a counter sees exactly `queries` + 1 images (the
  last one is the result's logits), one image per call."""

  @jax.custom_vjp
  def no_gradient(x):
    return linear(x)

  def bwd(residuals, cotangent):
    raise AssertionError('HopSkipJump asked for a gradient')

  no_gradient.defvjp(lambda x: (linear(x), None), bwd)
  with pytest.raises(AssertionError, match='asked for a gradient'):
    jax.grad(lambda x: no_gradient(x).sum())(_X)

  shown = []

  def counted(x):
    jax.debug.callback(lambda images: shown.append(len(images)), x, ordered=True)
    return no_gradient(x)

  y = _labels()[:1]
  res = attacks.hopskipjump(counted, _X[:1], y, jax.random.key(3), num_iterations=5,
                            query_batch=1)
  jax.effects_barrier()
  assert res.success[0]
  assert res.distance[0] <= 1.5 * _minimal(_X[:1], 'l2')[0]
  assert set(shown) == {1} and len(shown) == int(res.queries[0]) + 1
  assert res.queries[0] > _monte_carlo_queries(5)


def test_the_config_entry_passes_the_key():
  y = _labels()
  attack = attacks.build({'attack': 'hopskipjump'})
  batch = {'image': _X, 'label': y}
  res = attack(linear, batch, jax.random.key(1))
  direct = attacks.hopskipjump(linear, _X, y, jax.random.key(1))
  np.testing.assert_array_equal(res.x_adv, direct.x_adv)
  np.testing.assert_array_equal(res.queries, direct.queries)
  other = attack(linear, batch, jax.random.key(2))
  assert not np.array_equal(other.x_adv[:-1], res.x_adv[:-1])


def test_the_normal_estimate_subtracts_the_baseline_off_the_boundary():
  """Just on the adversarial side (97% of the samples adversarial), subtracting the baseline
  mean(phi) cuts the variance of mean(phi * u) by 1 - mean(phi)**2 (Chen et al. section 4.1):
  mean cosine to the normal about 0.9 with 2000 samples, against about 0.6 without."""
  hsj = importlib.import_module('advgen.attacks.hopskipjump')  # the function shadows the module
  y = _labels()[:-1]
  x = _X[:-1]
  w = np.asarray(_W).reshape(8, 8, 1)
  normal = w / np.linalg.norm(w)
  towards = -(2 * np.asarray(y) - 1).reshape(-1, 1, 1, 1) * normal  # into the other class
  on_boundary = x - (np.asarray(_gap(x)) / np.linalg.norm(w)).reshape(-1, 1, 1, 1) * normal
  delta = 0.01
  point = on_boundary + 1.88 / 8 * delta * towards  # P(N(0, 1/64) > -1.88 / 8) = 0.97

  def adversarial_many(images):
    labels = jnp.argmax(linear(images.reshape((-1,) + x.shape[1:])), axis=-1)
    return labels.reshape(images.shape[0], -1) != y[None]

  estimate = jax.jit(lambda p, key: hsj._gradient_direction(
      adversarial_many, p, jnp.full(len(y), delta), 2000, key, 'l2', (0.0, 1.0), 500))
  grad = estimate(jnp.asarray(point, jnp.float32), jax.random.key(4))
  cosine = np.sum(np.asarray(grad) * towards, axis=(1, 2, 3))
  assert np.mean(cosine) >= 0.8, cosine
