"""Randomized smoothing against closed forms: a linear binary classifier w.x + b has exact
p_A = Phi(|w.x + b| / (sigma ||w||)) and its smoothed classifier is its own sign, so the exact
certified radius is the distance |w.x + b| / ||w|| to its boundary."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from advgen import attacks, certify
from advgen.errors import UserError

SHAPE = (4, 4, 1)
D = 16
SIGMA = 0.25
W = np.where(np.arange(D) % 3, 1.25, -1.25).astype(np.float32)  # ||w|| = 5, |w_i| equal
B = -0.5 * W.sum()  # the boundary passes through the centre 0.5 of the box
UNIT = W / np.linalg.norm(W)


def linear(x):
  score = x.reshape(x.shape[0], -1) @ W + B
  return jnp.stack([jnp.zeros_like(score), score], axis=-1)


def first_pixel(x):
  """Class 1 iff the first pixel exceeds 0.3: no sum, so no batch shape changes a vote."""
  score = x.reshape(x.shape[0], -1)[:, 0] - 0.3
  return jnp.stack([-score, score], axis=-1)


def three_pixels(x):
  return x.reshape(x.shape[0], -1)[:, :3]


def at_distances(t):
  """Images 0.5 + t * w / ||w||: signed distance t from the linear boundary, inside the box."""
  t = np.asarray(t, np.float32)
  return (0.5 + t[:, None] * UNIT).reshape((-1,) + SHAPE).astype(np.float32)


def test_linear_radius_stays_below_the_exact_distance_and_approaches_it():
  t = np.linspace(-0.7, 0.7, 32)
  x, exact = at_distances(t), np.abs(t)
  gaps = {}
  for n in (1000, 100_000):
    cert = certify.certify(linear, x, jax.random.key(0), SIGMA, n0=100, n=n, alpha=0.001)
    certified = cert.prediction != certify.ABSTAIN
    assert np.all(cert.prediction[certified] == (t[certified] > 0))
    assert np.all(cert.radius <= exact + 1e-6)  # alpha = 0.001 per example: about no exception
    assert np.all(certified[np.abs(t) > 0.2])
    gaps[n] = np.mean(exact[certified] - cert.radius[certified])
    p_exact = stats.norm.cdf(exact / SIGMA)
    assert np.all(cert.p_lower <= p_exact + 1e-9)
  assert gaps[100_000] < gaps[1000] / 2 and gaps[100_000] < 0.03  # tends to it from below


def test_certify_fails_at_most_alpha_of_the_time():
  """With alpha = 0.05 on 400 examples, the certificates that are wrong (another class, or a
  radius beyond the exact one) number at most alpha's share plus a 1e-6-level margin."""
  alpha, num = 0.05, 400
  t = np.random.default_rng(0).uniform(-0.5, 0.5, num)
  cert = certify.certify(linear, at_distances(t), jax.random.key(1), SIGMA, n0=20, n=200,
                         alpha=alpha)
  certified = cert.prediction != certify.ABSTAIN
  wrong = certified & ((cert.prediction != (t > 0)) | (cert.radius > np.abs(t)))
  assert wrong.sum() <= stats.binom.ppf(1 - 1e-6, num, alpha)
  assert certified.mean() > 0.5  # the test has certificates to get wrong


def test_abstains_where_p_a_is_below_one_half():
  x = np.zeros((8,) + SHAPE, np.float32)
  x[4:, 0, 0, 0] = 1.0  # class 0 by 4 sigma: p_A ~ 1
  cert = certify.certify(three_pixels, x, jax.random.key(2), SIGMA, n0=50, n=2000)
  np.testing.assert_array_equal(cert.prediction[:4], certify.ABSTAIN)  # p_A = 1/3 < 1/2
  np.testing.assert_array_equal(cert.radius[:4], 0.0)
  assert np.all(cert.prediction[4:] == 0) and np.all(cert.radius[4:] > 2 * SIGMA)
  assert np.all((cert.p_lower >= 0.5) == (cert.prediction != certify.ABSTAIN))
  at_boundary = at_distances(np.zeros(8))  # p_A = 1/2 exactly
  assert np.all(certify.certify(linear, at_boundary, jax.random.key(3), SIGMA, n0=50,
                                n=2000).prediction == certify.ABSTAIN)


def test_predict_abstains_on_ties_and_answers_away_from_them():
  t = np.concatenate([np.zeros(40), np.full(8, 0.5), np.full(8, -0.5)])
  prediction = certify.predict(linear, at_distances(t), jax.random.key(4), SIGMA, 1000, 0.001)
  assert np.sum(prediction[:40] != certify.ABSTAIN) <= 1  # a false answer: at most alpha
  np.testing.assert_array_equal(prediction[40:], [1] * 8 + [0] * 8)
  assert certify.binomial_p_value(60, 40) == pytest.approx(stats.binomtest(60, 100).pvalue)


def test_same_keys_same_radii_whatever_the_batching_the_chunks_or_the_order():
  x = np.random.default_rng(5).uniform(0.1, 0.5, (8,) + SHAPE).astype(np.float32)
  key = jax.random.key(6)
  run = lambda images, keys, chunk=64: certify.certify(first_pixel, images, keys, SIGMA, n0=20,
                                                       n=300, chunk_size=chunk)
  whole = run(x, key)
  np.testing.assert_array_equal(whole.count, run(x, key).count)
  keys = certify.example_keys(key, 8)
  parts = [run(x[:3], certify.example_keys(key, 3)), run(x[3:], certify.example_keys(key, 5, 3))]
  for field in ('prediction', 'radius', 'count'):
    np.testing.assert_array_equal(getattr(whole, field),
                                  np.concatenate([getattr(p, field) for p in parts]))
  np.testing.assert_array_equal(whole.count, run(x, keys, chunk=40).count)
  order = np.random.default_rng(7).permutation(8)
  np.testing.assert_array_equal(whole.radius[order], run(x[order], keys[order]).radius)
  assert len(set(whole.count.tolist())) > 1  # the examples differ (the check is not vacuous)


def test_certified_accuracy_counts_correct_examples_certified_at_the_radius():
  radii = np.array([0.0, 0.2, 0.5, 1.0])
  correct = np.array([False, True, True, False])
  assert certify.certified_accuracy(radii, correct, 0.0) == 0.5
  np.testing.assert_allclose(certify.certified_accuracy(radii, correct, [0.2, 0.3, 0.6]),
                             [0.5, 0.25, 0.0])
  r, curve = certify.accuracy_curve(radii, correct, 1.0, num=11)
  assert r[0] == 0 and r[-1] == 1 and np.all(np.diff(curve) <= 0)
  assert certify.max_radius(1.0, 100_000, 0.001) == pytest.approx(3.8, abs=0.05)  # Cohen et al.


def test_smoothadv_breaks_beyond_the_boundary_and_never_within_the_certificate():
  """SmoothAdv-PGD (L2) on the soft smoothed linear classifier: at the exact distance plus 0.1
  every example flips, confirmed by PREDICT; at the certified radius none does."""
  t = np.concatenate([np.linspace(0.15, 0.5, 6), -np.linspace(0.15, 0.5, 6)])
  x, y = at_distances(t), (t > 0).astype(np.int32)
  cert = certify.certify(linear, x, jax.random.key(8), SIGMA, n0=50, n=2000)
  assert np.all(cert.prediction == y)

  def l2_pgd(epsilon):
    return lambda fn, batch, key: attacks.pgd(
        fn, attacks.L2Ball(batch['image'], epsilon), batch['label'], key, num_steps=20,
        step_rule='l2', step_size=epsilon[:, None, None, None] / 8, random_start=False,
        early_stop=False)

  run = jax.jit(lambda eps, key: certify.smoothadv(l2_pgd(eps), linear, {'image': x, 'label': y},
                                                   key, sigma=SIGMA, num_samples=64))
  for radius, expected in ((np.abs(t) + 0.1, True), (cert.radius, False)):
    result = run(jnp.asarray(radius, jnp.float32), jax.random.key(9))
    assert np.all(np.asarray(result.l2) <= radius + 1e-4)
    confirmed = certify.confirm(linear, np.asarray(result.x_adv), y, jax.random.key(10), SIGMA,
                                1000, 0.001)
    assert np.all(confirmed == expected)


@pytest.mark.parametrize('kwargs, message', [
    (dict(sigma=0.0), 'sigma must be positive'),
    (dict(sigma=0.25, n=0), 'positive integer'),
    (dict(sigma=0.25, alpha=1.5), r'alpha must be in \(0, 1\)'),
    (dict(sigma=0.25, chunk_size=0), 'chunk_size must be a positive'),
])
def test_bad_settings_are_user_errors(kwargs, message):
  with pytest.raises(UserError, match=message):
    certify.certify(linear, at_distances([0.1]), jax.random.key(0), **kwargs)
