"""Gaussian-isoperimetric upper bounds on the robustness of any classifier (Fawzi et al., 2018).

Data x = g(z), z ~ N(0, I_d); a classifier splits latent space into regions of measure P_i and
omega is a modulus of continuity of g (see `modulus`). All math is float64 numpy/scipy with
survival-function forms (Phibar(a + t) = Phi(Phi^-1(P) - t)), so small classes and far tails
neither round to 0 nor cancel. Probability bounds are clipped to [0, 1]: a negative lower bound on a
probability says no more than 0. Radii bounds are inf where no finite radius reaches p.
"""

import functools

import numpy as np
from scipy import optimize, special

from advgen.bounds.modulus import Identity

SQRT_HALF_PI = np.sqrt(np.pi / 2)
PROB_TOL = 1e-6


def expected_gaussian_norm(d):
  """E||z||_2, z ~ N(0, I_d): sqrt(2) Gamma((d+1)/2) / Gamma(d/2), via log-gamma (no overflow)."""
  d = np.asarray(d, np.float64)
  if np.any(~(d > 0)):
    raise ValueError(f'dimension must be > 0, got {d}.')
  return (np.sqrt(2.0) * np.exp(special.gammaln((d + 1) / 2) - special.gammaln(d / 2)))[()]


def equiprobable(num_classes):
  """Class probabilities 1/K each: the case of Fawzi's Figure 2 and of the K >= 5 closed form."""
  if int(num_classes) != num_classes or num_classes < 1:
    raise ValueError(f'num_classes must be a positive integer, got {num_classes}.')
  return np.full(int(num_classes), 1.0 / num_classes)


def check_class_probs(class_probs):
  """Float64 copy rescaled to sum exactly 1: the bounds assume the classes tile latent space."""
  probs = np.asarray(class_probs, np.float64)
  if probs.ndim != 1 or probs.size == 0:
    raise ValueError(f'class_probs must be a non-empty 1-D array, got shape {probs.shape}.')
  if not np.all(np.isfinite(probs) & (probs >= 0)):
    raise ValueError(f'class_probs must be finite and >= 0, got {probs}.')
  if abs(probs.sum() - 1) > PROB_TOL:
    raise ValueError(f'class_probs must sum to 1, got sum {probs.sum():.8g}.')
  return probs / probs.sum()


def _check_radius(t):
  t = np.asarray(t, np.float64)
  if np.any(~(t >= 0)):
    raise ValueError(f'latent radius t must be >= 0, got {t}.')
  return t


def _check_probability(p, name='p'):
  p = np.asarray(p, np.float64)
  if np.any(~((p >= 0) & (p <= 1))):
    raise ValueError(f'{name} must be in [0, 1], got {p}.')
  return p


def _check_equiprobable(num_classes):
  probs = equiprobable(num_classes)
  if probs.size < 5:
    raise ValueError(f'the equiprobable closed form needs K >= 5 classes, got K = {probs.size}.')
  return probs.size


def isoperimetric_probability(t, class_probs):
  """Theorem 1: P(r_Z <= t) >= 1 - sum_i Phibar(a_i + t), a_i = -Phi^-1(P_i); elementwise in t.

  With t = omega^-1(eta) it bounds P(r_in <= eta). Classes with P_i = 0 contribute 0; one class
  with P_i = 1 leaves no boundary, so the bound is 0 for every t. Exact for two half-spaces.
  """
  t = _check_radius(t)
  probs = check_class_probs(class_probs)
  if np.any(probs == 1):
    return np.zeros_like(t)[()]
  quantiles = special.ndtri(probs[probs > 0])
  tails = special.ndtr(quantiles - t[..., None]).sum(-1)
  return np.clip(1 - tails, 0, 1)[()]


def _latent_radius(target, probs):
  """Smallest t >= 0 with Theorem 1's bound >= target, solved in log space for target near 1."""
  if target <= 0:
    return 0.0
  if target >= 1 or np.any(probs == 1):
    return np.inf
  quantiles = special.ndtri(probs[probs > 0])
  log_slack = np.log1p(-target)
  excess = lambda t: special.logsumexp(special.log_ndtr(quantiles - t)) - log_slack
  # At `high` every tail is <= (1 - target) / K, so their sum is <= 1 - target.
  high = quantiles.max() - special.ndtri((1 - target) / quantiles.size)
  if excess(0.0) <= 0:
    return 0.0
  if excess(high) >= 0:
    return high
  return optimize.brentq(excess, 0.0, high, xtol=1e-14, rtol=4 * np.finfo(float).eps)


def _invert(p, failure_prob, omega, latent_radius):
  """eta = omega(t) for the smallest t whose bound reaches p + failure_prob; 0 for p = 0.

  A modulus that holds except with probability failure_prob lowers the probability bound by
  failure_prob, so the latent bound must reach p + failure_prob.
  """
  p = _check_probability(p)
  failure_prob = float(_check_probability(failure_prob, 'failure_prob'))
  omega = Identity() if omega is None else omega
  t = latent_radius(np.minimum(p + failure_prob, 1.0))
  return np.where(p > 0, omega(t), 0.0)[()]


def robustness_upper_bound(p, class_probs, omega=None, failure_prob=0.0):
  """Smallest eta with Theorem 1's bound on P(r_in <= eta) at least p: bounds r_in's p-quantile.

  omega None bounds the latent robustness r_Z. inf for p = 1 or when one class has P_i = 1.
  """
  probs = check_class_probs(class_probs)
  solve = np.vectorize(functools.partial(_latent_radius, probs=probs), otypes=[np.float64])
  return _invert(p, failure_prob, omega, solve)


def isoperimetric_probability_small_classes(t, class_probs):
  """Theorem 1 when every P_i <= 1/2: 1 - sqrt(pi/2) exp(-t^2/2), below the general bound."""
  if np.any(check_class_probs(class_probs) > 0.5):
    raise ValueError('the small-classes closed form needs every class probability <= 1/2.')
  return np.clip(1 - SQRT_HALF_PI * np.exp(-_check_radius(t) ** 2 / 2), 0, 1)[()]


def robustness_upper_bound_small_classes(p, class_probs, omega=None, failure_prob=0.0):
  """The small-classes closed form solved for eta: t = sqrt(2 log(sqrt(pi/2) / (1 - p)))."""
  if np.any(check_class_probs(class_probs) > 0.5):
    raise ValueError('the small-classes closed form needs every class probability <= 1/2.')

  def solve(target):
    with np.errstate(divide='ignore'):  # target = 1 gives t = inf on purpose
      return np.sqrt(2 * (np.log(SQRT_HALF_PI) - np.log1p(-target)))

  return _invert(p, failure_prob, omega, solve)


def _equiprobable_rate(num_classes):
  """sqrt(log(K^2 / (4 pi log K))), real for K >= 5."""
  return np.sqrt(np.log(num_classes ** 2 / (4 * np.pi * np.log(num_classes))))


def isoperimetric_probability_equiprobable(t, num_classes):
  """Theorem 1 for K >= 5 equiprobable classes, below the general bound:

  1 - sqrt(pi/2) exp(-t^2/2) exp(-t sqrt(log(K^2 / (4 pi log K)))). The second exponent holds
  t = omega^-1(eta); the published formula prints eta there, which is wrong unless omega = id.
  """
  rate = _equiprobable_rate(_check_equiprobable(num_classes))
  t = _check_radius(t)
  return np.clip(1 - SQRT_HALF_PI * np.exp(-t ** 2 / 2 - rate * t), 0, 1)[()]


def robustness_upper_bound_equiprobable(p, num_classes, omega=None, failure_prob=0.0):
  """The equiprobable closed form solved for eta: t^2/2 + c t = log(sqrt(pi/2) / (1 - p))."""
  rate = _equiprobable_rate(_check_equiprobable(num_classes))

  def solve(target):
    with np.errstate(divide='ignore'):  # target = 1 gives t = inf on purpose
      log_ratio = np.log(SQRT_HALF_PI) - np.log1p(-target)
    return np.sqrt(rate ** 2 + 2 * log_ratio) - rate

  return _invert(p, failure_prob, omega, solve)


def transfer_probability(t, delta, class_probs=None):
  """Theorem 3 at t = omega^-1(eta): 1 - sqrt(pi/2) exp(-t^2/2) - 2 delta.

  Two classifiers that disagree with probability <= delta share a perturbation of norm <= eta that
  fools both with at least this probability. Needs P_i + delta <= 1/2 for every class; pass
  `class_probs` to have that checked.
  """
  delta = float(_check_probability(delta, 'delta'))
  if class_probs is not None and np.any(check_class_probs(class_probs) + delta > 0.5):
    raise ValueError('Theorem 3 needs P_i + delta <= 1/2 for every class.')
  return np.clip(1 - SQRT_HALF_PI * np.exp(-_check_radius(t) ** 2 / 2) - 2 * delta, 0, 1)[()]


def expected_robustness_upper_bound(class_probs, omega=None, delta=0.0):
  """Theorem 4: E r_unc <= omega(sum_i [phi(a_i) - a_i Phi(-a_i)]) + delta, a_i = Phi^-1(1 - P_i).

  The sum is the integral over t of Theorem 1's tail sum_i Phibar(a_i + t), i.e. a bound on E r_Z
  (exact for two half-spaces). Moving it through omega needs omega concave (Jensen; Identity, Linear
  and Affine are, an Empirical modulus usually is not); delta is the generator's 1-Wasserstein
  distance to the data. inf when one class has P_i = 1.
  """
  probs = check_class_probs(class_probs)
  if not (np.isfinite(delta) and delta >= 0):
    raise ValueError(f'delta must be finite and >= 0, got {delta}.')
  if np.any(probs == 1):
    return np.inf
  omega = Identity() if omega is None else omega
  probs = probs[probs > 0]
  a = -special.ndtri(probs)  # accurate for small P_i, unlike ndtri(1 - P_i)
  latent = np.sum(np.exp(-a ** 2 / 2) / np.sqrt(2 * np.pi) - a * probs)
  return float(omega(latent) + delta)


def figure2_curve(dims, num_classes_list, p=0.5):
  """Fawzi's Figure 2: bound on the p-quantile of r_Z / sqrt(d), equiprobable classes, omega = id.

  The latent bound does not depend on d, so the normalized bound falls as 1 / sqrt(d). Returns
  plain arrays: 'radius' (K,) unnormalized and 'bound' (K, len(dims)); E||z|| = sqrt(d) up to a
  factor 1 - 1/(4d) (see expected_gaussian_norm) if that normalization is preferred.
  """
  dims = np.asarray(dims, np.float64)
  num_classes = np.asarray(num_classes_list, np.int64)
  radius = np.array([robustness_upper_bound(p, equiprobable(k)) for k in num_classes])
  return {'dims': dims, 'num_classes': num_classes, 'p': float(p), 'radius': radius,
          'bound': radius[:, None] / np.sqrt(dims)}


def bound_curve(class_probs, omega=None, failure_prob=0.0, num=200, top=0.99):
  """(radii, probability lower bound) of Theorem 1 over latent radii t up to where the bound
  reaches `top`: (t, B(t)) with omega the identity, else (omega(t), B(t) - failure_prob)."""
  probs = np.asarray(class_probs, np.float64)
  last = robustness_upper_bound(top, probs)
  t = np.linspace(0.0, last if np.isfinite(last) else 10.0, num)
  probability = isoperimetric_probability(t, probs)
  if omega is None:
    return t, probability
  return np.asarray(omega(t)), np.clip(probability - failure_prob, 0.0, 1.0)
