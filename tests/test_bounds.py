"""Isoperimetric bounds: DESIGN.md fixtures, closed forms, inversion, exact cases, edge cases."""

import warnings

import numpy as np
import pytest
from scipy import integrate, stats

from advgen import bounds

TS = np.linspace(0.0, 6.0, 61)


@pytest.fixture(autouse=True)
def numpy_warnings_are_errors():
  """Edge cases must come out finite or inf without NaN / divide-by-zero warnings."""
  with warnings.catch_warnings(), np.errstate(divide='raise', invalid='raise', over='raise'):
    warnings.simplefilter('error')
    yield


def random_probs(rng, num_classes, max_prob=1.0):
  while True:
    probs = rng.dirichlet(np.ones(num_classes))
    if probs.max() <= max_prob:
      return probs


# Fixtures from DESIGN.md section 4.

def test_two_equiprobable_classes_median_is_0_6745():
  median = bounds.robustness_upper_bound(0.5, bounds.equiprobable(2))
  assert median == pytest.approx(0.6745, abs=1e-4)
  assert median == pytest.approx(stats.norm.ppf(0.75), abs=1e-12)


def test_ten_equiprobable_classes_at_t_1_is_0_8874():
  bound = bounds.isoperimetric_probability(1.0, bounds.equiprobable(10))
  assert bound == pytest.approx(0.8874, abs=1e-4)


def test_expected_gaussian_norm():
  assert bounds.expected_gaussian_norm(10) == pytest.approx(3.084, abs=1e-3)
  samples = np.linalg.norm(np.random.default_rng(0).standard_normal((200_000, 10)), axis=1)
  standard_error = samples.std() / np.sqrt(samples.size)
  assert bounds.expected_gaussian_norm(10) == pytest.approx(samples.mean(), abs=4 * standard_error)
  assert bounds.expected_gaussian_norm(1) == pytest.approx(np.sqrt(2 / np.pi), rel=1e-14)
  dims = np.array([1e2, 1e4, 1e6])
  norms = bounds.expected_gaussian_norm(dims)
  np.testing.assert_allclose(norms / np.sqrt(dims), 1 - 1 / (4 * dims), rtol=1e-5)
  assert np.all(norms < np.sqrt(dims))


# The general bound.

def test_half_space_is_exact():
  """Class 1 = {z_1 <= b}: r_Z = |z_1 - b|, so P(r_Z <= t) = Phi(b + t) - Phi(b - t) exactly."""
  for b in [-2.0, -0.3, 0.0, 0.7, 3.0]:
    probs = [stats.norm.cdf(b), stats.norm.sf(b)]
    exact = stats.norm.cdf(b + TS) - stats.norm.cdf(b - TS)
    np.testing.assert_allclose(bounds.isoperimetric_probability(TS, probs), exact, atol=1e-14)
    # Theorem 4 is then exact too: E|z_1 - b| = 2 phi(b) + b (2 Phi(b) - 1).
    expected = 2 * stats.norm.pdf(b) + b * (2 * stats.norm.cdf(b) - 1)
    assert bounds.expected_robustness_upper_bound(probs) == pytest.approx(expected, rel=1e-12)


def test_bound_is_theorem_1_sum_form():
  """1 - sum Phibar(a_i + t) is Theorem 1 as printed: sum_i [Phi(a_i + t) - Phi(a_i)]."""
  probs = random_probs(np.random.default_rng(1), 7)
  a = stats.norm.ppf(1 - probs)
  paper = (stats.norm.cdf(a[:, None] + TS) - stats.norm.cdf(a[:, None])).sum(0)
  np.testing.assert_allclose(bounds.isoperimetric_probability(TS, probs), paper, atol=1e-12)


def test_monotone_in_t_and_k():
  ks = [2, 3, 5, 10, 100, 1000]
  rows = [bounds.isoperimetric_probability(TS, bounds.equiprobable(k)) for k in ks]
  assert np.all(np.diff(rows, axis=1) >= -1e-15)
  assert np.all(np.diff(rows, axis=0) >= -1e-15)  # more equiprobable classes, more boundary
  assert np.all(np.diff(np.array(rows)[:, 1:31], axis=0) > 0)  # strictly, before rounding to 1
  medians = [bounds.robustness_upper_bound(0.5, bounds.equiprobable(k)) for k in [2, 3, 5, 10, 100]]
  assert np.all(np.diff(medians) < 0)


def test_inversion_reaches_p_and_is_monotone_in_p():
  ps = np.array([1e-9, 0.01, 0.25, 0.5, 0.9, 0.999, 1 - 1e-12])
  for probs in [[0.5, 0.5], bounds.equiprobable(10), [0.01, 0.09, 0.9], [0.0, 0.3, 0.7]]:
    etas = bounds.robustness_upper_bound(ps, probs)
    assert np.all(np.diff(etas) > 0)
    reached = bounds.isoperimetric_probability(etas, probs)
    np.testing.assert_allclose(reached, ps, rtol=1e-9, atol=1e-15)
    # Smallest such eta: a hair below, the bound is below p.
    assert np.all(bounds.isoperimetric_probability(etas * (1 - 1e-4), probs) < ps)


def test_omega_maps_the_latent_radius():
  probs = bounds.equiprobable(10)
  t = bounds.robustness_upper_bound(0.25, probs)
  assert bounds.robustness_upper_bound(0.25, probs, bounds.Linear(3.0)) == pytest.approx(3 * t)
  affine = bounds.robustness_upper_bound(0.25, probs, bounds.Affine(3.0, 0.5))
  assert affine == pytest.approx(3 * t + 0.5)
  # A modulus failing with probability eps: the latent bound must reach p + eps.
  assert bounds.robustness_upper_bound(0.25, probs, failure_prob=0.05) == pytest.approx(
      bounds.robustness_upper_bound(0.30, probs))


def test_expected_robustness_integrates_the_tail():
  """Theorem 4's latent sum is E r_Z's bound: the integral of 1 - (Theorem 1) over t."""
  probs = [0.05, 0.15, 0.3, 0.5]
  tail, _ = integrate.quad(lambda t: 1 - bounds.isoperimetric_probability(t, probs), 0, np.inf)
  assert bounds.expected_robustness_upper_bound(probs) == pytest.approx(tail, rel=1e-8)
  through_omega = bounds.expected_robustness_upper_bound(probs, bounds.Linear(2.0), delta=0.1)
  assert through_omega == pytest.approx(2 * tail + 0.1, rel=1e-8)


# Closed forms.

def test_small_classes_closed_form_is_below_general_bound():
  rng = np.random.default_rng(2)
  for probs in [[0.5, 0.5], random_probs(rng, 3, 0.5), random_probs(rng, 10, 0.5)]:
    closed = bounds.isoperimetric_probability_small_classes(TS, probs)
    assert np.all(closed <= bounds.isoperimetric_probability(TS, probs))
    np.testing.assert_allclose(closed, np.maximum(0, 1 - np.sqrt(np.pi / 2) * np.exp(-TS ** 2 / 2)))
  ps = np.array([0.25, 0.5, 0.9])
  etas = bounds.robustness_upper_bound_small_classes(ps, [0.5, 0.5])
  np.testing.assert_allclose(bounds.isoperimetric_probability_small_classes(etas, [0.5, 0.5]), ps)
  assert np.all(etas >= bounds.robustness_upper_bound(ps, [0.5, 0.5]))


def test_equiprobable_closed_form_is_below_general_bound_and_tightens_with_k():
  gaps = []
  for k in [5, 6, 10, 100, 10_000]:
    closed = bounds.isoperimetric_probability_equiprobable(TS, k)
    general = bounds.isoperimetric_probability(TS, bounds.equiprobable(k))
    assert np.all(closed <= general)
    small = bounds.isoperimetric_probability_small_classes(TS, bounds.equiprobable(k))
    assert np.all(closed >= small)
    ps = np.array([0.25, 0.5, 0.9])
    etas = bounds.robustness_upper_bound_equiprobable(ps, k)
    np.testing.assert_allclose(bounds.isoperimetric_probability_equiprobable(etas, k), ps)
    assert np.all(etas >= bounds.robustness_upper_bound(ps, bounds.equiprobable(k)))
    gaps.append(etas[1] - bounds.robustness_upper_bound(0.5, bounds.equiprobable(k)))
  assert np.all(np.diff(gaps) < 0)


def test_equiprobable_exponent_uses_t_not_eta():
  """With omega = Linear(L) the closed-form eta is L times the latent one, not a different root."""
  t = bounds.robustness_upper_bound_equiprobable(0.5, 10)
  eta = bounds.robustness_upper_bound_equiprobable(0.5, 10, bounds.Linear(4.0))
  assert eta == pytest.approx(4 * t)


def test_transfer_probability():
  np.testing.assert_allclose(bounds.transfer_probability(TS, 0.0),
                             bounds.isoperimetric_probability_small_classes(TS, [0.5, 0.5]))
  assert bounds.transfer_probability(3.0, 0.01) == pytest.approx(
      1 - np.sqrt(np.pi / 2) * np.exp(-4.5) - 0.02)
  assert bounds.transfer_probability(0.1, 0.1) == 0.0
  with pytest.raises(ValueError, match='P_i \\+ delta'):
    bounds.transfer_probability(1.0, 0.1, class_probs=[0.45, 0.55 - 0.1, 0.1])


# Preconditions and edge cases.

@pytest.mark.parametrize('call, message', [
    (lambda: bounds.isoperimetric_probability_small_classes(1.0, [0.6, 0.4]), '<= 1/2'),
    (lambda: bounds.robustness_upper_bound_small_classes(0.5, [0.6, 0.4]), '<= 1/2'),
    (lambda: bounds.isoperimetric_probability_equiprobable(1.0, 4), 'K >= 5'),
    (lambda: bounds.robustness_upper_bound_equiprobable(0.5, 4), 'K >= 5'),
    (lambda: bounds.isoperimetric_probability(1.0, [0.5, 0.6]), 'sum to 1'),
    (lambda: bounds.isoperimetric_probability(1.0, [1.2, -0.2]), '>= 0'),
    (lambda: bounds.isoperimetric_probability(1.0, [[0.5, 0.5]]), '1-D'),
    (lambda: bounds.isoperimetric_probability(-0.1, [0.5, 0.5]), 't must be >= 0'),
    (lambda: bounds.isoperimetric_probability(np.nan, [0.5, 0.5]), 't must be >= 0'),
    (lambda: bounds.robustness_upper_bound(1.5, [0.5, 0.5]), 'p must be in'),
    (lambda: bounds.robustness_upper_bound(-0.1, [0.5, 0.5]), 'p must be in'),
    (lambda: bounds.expected_gaussian_norm(0), 'dimension'),
    (lambda: bounds.equiprobable(2.5), 'positive integer'),
])
def test_preconditions_raise(call, message):
  with pytest.raises(ValueError, match=message):
    call()


def test_edge_cases():
  # One class everywhere: never a label change, bound 0, no finite radius, infinite expectation.
  assert np.all(bounds.isoperimetric_probability(TS, [1.0, 0.0]) == 0)
  assert bounds.isoperimetric_probability(np.inf, [1.0, 0.0]) == 0
  assert bounds.robustness_upper_bound(0.5, [1.0, 0.0]) == np.inf
  assert bounds.expected_robustness_upper_bound([0.0, 1.0]) == np.inf
  # Empty classes change nothing.
  np.testing.assert_array_equal(bounds.isoperimetric_probability(TS, [0.0, 0.3, 0.7, 0.0]),
                                bounds.isoperimetric_probability(TS, [0.3, 0.7]))
  expected = bounds.expected_robustness_upper_bound([0.0, 0.5, 0.5])
  assert expected == pytest.approx(2 / np.sqrt(2 * np.pi))
  # p = 0 is free, p = 1 is never reached, also through a modulus with an offset.
  for probs in [[0.5, 0.5], bounds.equiprobable(10)]:
    assert bounds.robustness_upper_bound(0.0, probs, bounds.Affine(2.0, 1.0)) == 0.0
    assert bounds.robustness_upper_bound(1.0, probs) == np.inf
  assert bounds.robustness_upper_bound_small_classes(1.0, [0.5, 0.5]) == np.inf
  assert bounds.robustness_upper_bound_equiprobable(0.0, 10) == 0.0
  assert bounds.isoperimetric_probability(np.inf, [0.5, 0.5]) == 1.0
  # A tiny class keeps its (small) share of the bound instead of rounding it away.
  b = stats.norm.ppf(1e-12)
  assert bounds.isoperimetric_probability(1.0, [1e-12, 1 - 1e-12]) == pytest.approx(
      stats.norm.cdf(b + 1) - stats.norm.cdf(b - 1), rel=1e-3)
  assert bounds.robustness_upper_bound(1 - 1e-15, bounds.equiprobable(10)) < 10


# Moduli.

def test_moduli_invert():
  ts = np.linspace(0, 5, 11)
  for omega in [bounds.Identity(), bounds.Linear(2.5), bounds.Affine(2.5, 0.3),
                bounds.Empirical([0.5, 1, 2], [0.4, 1.0, 3.0])]:
    np.testing.assert_allclose(omega.inverse(omega(ts)), ts, atol=1e-12)
    assert np.all(np.diff(omega(ts)) > 0)


def test_affine_offset_gives_no_guarantee_below_it():
  omega = bounds.Affine(2.0, 0.5)
  assert omega.inverse(0.3) == 0.0
  assert bounds.isoperimetric_probability(omega.inverse(0.3), [0.5, 0.5]) == 0.0


def test_empirical_is_monotone_from_noisy_measurements():
  omega = bounds.Empirical([1, 2, 3, 4], [1.0, 0.5, 2.0, 1.5])
  ts = np.linspace(0, 8, 81)
  assert np.all(np.diff(omega(ts)) >= 0)
  assert omega(1.5) == 1.0 and omega(4.0) == 2.0
  assert omega(8.0) == pytest.approx(4.0)  # beyond the data: the last ratio, 2 / 4
  assert omega.inverse(1.0) == 2.0  # the right end of the flat stretch, the largest safe step
  etas = np.linspace(0.1, 4, 40)
  np.testing.assert_allclose(omega(omega.inverse(etas)), etas, atol=1e-12)
  assert np.all(omega.inverse(omega(ts)) >= ts - 1e-12)
  with pytest.raises(ValueError, match='strictly increasing'):
    bounds.Empirical([2, 1], [1, 2])


# Figure 2.

def test_figure2_curve(tmp_path):
  curves = bounds.figure2_curve([10, 100, 1000], [2, 10, 100])
  assert curves['bound'].shape == (3, 3)
  assert curves['radius'][0] == pytest.approx(0.6745, abs=1e-4)
  np.testing.assert_allclose(curves['bound'][:, 1] / curves['bound'][:, 0], np.sqrt(0.1))
  assert np.all(np.diff(curves['bound'], axis=0) < 0)
  from advgen.report import bounds as bounds_report
  path = bounds_report.plot_figure2(curves, tmp_path / 'figure2.png')
  assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


# Exact values of the closed forms, not only brackets: a wrong constant stays inside a bracket.

def test_equiprobable_closed_form_exact_values():
  """1 - sqrt(pi/2) exp(-t^2/2) exp(-t sqrt(log(K^2 / (4 pi log K)))), computed here by hand."""
  for k, t in [(5, 0.5), (10, 1.0), (100, 2.0), (10_000, 0.3)]:
    rate = np.sqrt(np.log(k ** 2 / (4 * np.pi * np.log(k))))
    expected = 1 - np.sqrt(np.pi / 2) * np.exp(-t ** 2 / 2) * np.exp(-t * rate)
    assert bounds.isoperimetric_probability_equiprobable(t, k) == pytest.approx(expected, rel=1e-12)
  # K = 10, t = 1: rate = sqrt(log(100 / (4 pi log 10))) = 1.1136..., bound 0.7504...
  assert bounds.isoperimetric_probability_equiprobable(1.0, 10) == pytest.approx(0.75038, abs=1e-4)
  # The radius solves t^2/2 + rate t = log(sqrt(pi/2) / (1 - p)).
  rate = np.sqrt(np.log(100 / (4 * np.pi * np.log(10))))
  t = bounds.robustness_upper_bound_equiprobable(0.5, 10)
  assert t ** 2 / 2 + rate * t == pytest.approx(np.log(np.sqrt(np.pi / 2) / 0.5), rel=1e-12)


def test_small_classes_radius_exact_value():
  """t = sqrt(2 log(sqrt(pi/2) / (1 - p))): p = 0.5 gives 1.3557..."""
  for p in (0.25, 0.5, 0.9):
    expected = np.sqrt(2 * np.log(np.sqrt(np.pi / 2) / (1 - p)))
    assert bounds.robustness_upper_bound_small_classes(p, [0.5, 0.5]) == pytest.approx(
        expected, rel=1e-12)
  assert bounds.robustness_upper_bound_small_classes(0.5, [0.5, 0.5]) == pytest.approx(
      1.3557, abs=1e-4)


def test_general_bound_exact_values():
  """Theorem 1 by hand: K = 10, t = 1 is 1 - 10 Phibar(Phi^-1(0.9) + 1) = 0.8874 (DESIGN.md)."""
  expected = 1 - 10 * stats.norm.sf(stats.norm.ppf(0.9) + 1.0)
  assert bounds.isoperimetric_probability(1.0, bounds.equiprobable(10)) == pytest.approx(
      expected, rel=1e-12)
  probs = np.array([0.1, 0.2, 0.7])
  expected = 1 - np.sum(stats.norm.sf(stats.norm.isf(probs) + 0.8))
  assert bounds.isoperimetric_probability(0.8, probs) == pytest.approx(expected, rel=1e-12)
  # Its inversion: K = 2, p = 0.25 and 0.5 are Phi^-1(0.625) and Phi^-1(0.75).
  np.testing.assert_allclose(bounds.robustness_upper_bound([0.25, 0.5], [0.5, 0.5]),
                             stats.norm.ppf([0.625, 0.75]), rtol=1e-10)


def test_expected_robustness_exact_value():
  """Theorem 4, K = 10 equiprobable: sum_i [phi(a) - a P_i] with a = Phi^-1(0.9)."""
  a = stats.norm.ppf(0.9)
  expected = 10 * (stats.norm.pdf(a) - a * 0.1)
  assert bounds.expected_robustness_upper_bound(bounds.equiprobable(10)) == pytest.approx(
      expected, rel=1e-12)
  assert bounds.expected_robustness_upper_bound(bounds.equiprobable(10), bounds.Affine(2.0, 0.5),
                                                delta=0.25) == pytest.approx(
                                                    2 * expected + 0.5 + 0.25, rel=1e-12)


def test_expected_gaussian_norm_exact_values():
  """d = 2: sqrt(pi/2); d = 3: 2 sqrt(2/pi); and E||z||^2 = d bounds E||z|| by Jensen."""
  assert bounds.expected_gaussian_norm(2) == pytest.approx(np.sqrt(np.pi / 2), rel=1e-14)
  assert bounds.expected_gaussian_norm(3) == pytest.approx(2 * np.sqrt(2 / np.pi), rel=1e-14)
  assert bounds.expected_gaussian_norm(10) == pytest.approx(3.0843, abs=1e-4)


def test_transfer_probability_exact_value():
  assert bounds.transfer_probability(1.5, 0.05) == pytest.approx(
      1 - np.sqrt(np.pi / 2) * np.exp(-1.125) - 0.1, rel=1e-12)
