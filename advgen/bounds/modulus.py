"""Moduli of continuity omega of a generator g, and their estimation from g itself.

A modulus bounds image steps by latent steps, ||g(z) - g(z')|| <= omega(||z - z'||), which turns
the latent isoperimetric bounds into bounds on image-space robustness. Each modulus is a frozen
dataclass with `__call__(t)` (omega) and `inverse(eta)`: the largest latent step guaranteed to stay
within eta, i.e. sup {t >= 0 : omega(t) <= eta}. Both are float64 numpy and work elementwise.

Two estimators of omega for any batched `decode_fn(z) -> x`: `estimate_modulus` samples ratios
||g(z + r u) - g(z)|| / r at several radii and keeps a high quantile (which fails with probability
1 - quantile, to be paid in the bound); `jacobian_spectral_norm` gives local Lipschitz constants.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np


def _f64(x):
  return np.asarray(x, np.float64)


@dataclasses.dataclass(frozen=True)
class Identity:
  """omega(t) = t: the bounds are then on the latent robustness r_Z and need no smoothness."""

  def __call__(self, t):
    return _f64(t)[()]

  def inverse(self, eta):
    return _f64(eta)[()]


@dataclasses.dataclass(frozen=True)
class Linear:
  """omega(t) = L t: g is L-Lipschitz."""
  lipschitz: float

  def __post_init__(self):
    if not (np.isfinite(self.lipschitz) and self.lipschitz > 0):
      raise ValueError(f'Linear modulus needs a finite Lipschitz constant > 0, '
                       f'got {self.lipschitz}.')

  def __call__(self, t):
    return (self.lipschitz * _f64(t))[()]

  def inverse(self, eta):
    return (_f64(eta) / self.lipschitz)[()]


@dataclasses.dataclass(frozen=True)
class Affine:
  """omega(t) = L t + c.

  An offset c > 0 (e.g. a decoder that is not exactly continuous, or a quantization floor) means
  no latent step is guaranteed to stay within eta < c: `inverse(eta)` is 0 there, so the bound at
  such eta is the trivial one (probability 0), and robustness bounds are never below c.
  """
  lipschitz: float
  offset: float = 0.0

  def __post_init__(self):
    if not (np.isfinite(self.lipschitz) and self.lipschitz > 0):
      raise ValueError(f'Affine modulus needs a finite Lipschitz constant > 0, '
                       f'got {self.lipschitz}.')
    if not (np.isfinite(self.offset) and self.offset >= 0):
      raise ValueError(f'Affine modulus needs a finite offset >= 0, got {self.offset}.')

  def __call__(self, t):
    return (self.lipschitz * _f64(t) + self.offset)[()]

  def inverse(self, eta):
    return np.maximum((_f64(eta) - self.offset) / self.lipschitz, 0.0)[()]


@dataclasses.dataclass(frozen=True)
class Empirical:
  """Piecewise-linear omega through measured (radius, value) pairs, starting at omega(0) = 0.

  A modulus must be non-decreasing, so the values are replaced by their running maximum (sampling
  noise would otherwise make omega dip). Beyond the last radius r_n the ratio omega(r_n) / r_n is
  assumed to stay constant (the ray through the origin and the last point), which keeps omega
  strictly increasing there and so invertible; measure up to the largest radius you need.
  Flat stretches are inverted to their right end (the largest guaranteed step).
  """
  radii: tuple
  values: tuple

  def __post_init__(self):
    radii, values = _f64(self.radii), _f64(self.values)
    if radii.ndim != 1 or radii.shape != values.shape or radii.size == 0:
      raise ValueError(f'Empirical modulus needs 1-D radii and values of equal non-zero length, '
                       f'got shapes {radii.shape} and {values.shape}.')
    if not (np.all(np.isfinite(radii)) and radii[0] > 0 and np.all(np.diff(radii) > 0)):
      raise ValueError(f'Empirical modulus needs finite, positive, strictly increasing radii, '
                       f'got {radii}.')
    if not (np.all(np.isfinite(values)) and np.all(values >= 0) and values.max() > 0):
      raise ValueError(f'Empirical modulus needs finite values >= 0, one of them > 0, '
                       f'got {values}.')
    object.__setattr__(self, 'radii', tuple(radii.tolist()))
    object.__setattr__(self, 'values', tuple(values.tolist()))

  def _knots(self):
    radii = np.concatenate([[0.0], self.radii])
    values = np.maximum.accumulate(np.concatenate([[0.0], self.values]))
    return radii, values

  def __call__(self, t):
    t = _f64(t)
    radii, values = self._knots()
    ray = t * (values[-1] / radii[-1])
    return np.where(t <= radii[-1], np.interp(t, radii, values), ray)[()]

  def inverse(self, eta):
    eta = _f64(eta)
    radii, values = self._knots()
    # Segment j has values[j - 1] <= eta < values[j]: side='right' skips flat stretches whole.
    j = np.clip(np.searchsorted(values, eta, side='right'), 1, values.size - 1)
    rise = values[j] - values[j - 1]
    slope = (radii[j] - radii[j - 1]) / np.where(rise > 0, rise, 1.0)
    inside = radii[j - 1] + (eta - values[j - 1]) * slope
    return np.where(eta < values[-1], inside, eta * (radii[-1] / values[-1]))[()]


@dataclasses.dataclass(frozen=True, eq=False)
class ModulusEstimate:
  """Per-radius quantile of the sampled ratios and the modulus omega(r) = r * ratio_quantile(r).

  The quantile is exceeded with probability `failure_prob` = 1 - quantile over (z, direction):
  pass it as `failure_prob` to the robustness bounds, which then ask Theorem 1 for p +
  failure_prob (equivalently, subtract it from the probability bound). The sampling error of the
  empirical quantile itself is not included: use enough points that it is small.
  """
  radii: np.ndarray
  ratio_quantile: np.ndarray
  quantile: float
  omega: Empirical

  @property
  def failure_prob(self):
    return 1.0 - self.quantile


def _flatten(x):
  return x.reshape(x.shape[0], -1)


@functools.partial(jax.jit, static_argnames='decode_fn')
def step_ratios(decode_fn, z, directions, radii):
  """||g(z + r u) - g(z)|| / r with unit u along `directions` (N, M, d); shape (R, N, M).

  The same directions serve every radius, so the curve over r is smooth (common random numbers).
  Radii are vmapped: the decoder sees one batch of R * N * M latents.
  """
  num_points, num_directions, dim = directions.shape
  units = directions / jnp.linalg.norm(directions, axis=-1, keepdims=True)
  base = _flatten(decode_fn(z))[:, None]

  def at_radius(radius):
    moved = (z[:, None] + radius * units).reshape(num_points * num_directions, dim)
    images = _flatten(decode_fn(moved)).reshape(num_points, num_directions, -1)
    return jnp.linalg.norm(images - base, axis=-1) / radius

  return jax.vmap(at_radius)(radii)


def estimate_modulus(decode_fn, key, latent_dim, radii, num_points=256, num_directions=8,
                     quantile=0.99):
  """Estimates omega from z ~ N(0, I) and Gaussian directions (all orientations, not only positive).

  Returns a ModulusEstimate whose `omega` is an Empirical modulus and whose `failure_prob` must be
  carried into the probability bound. The decoder sees one batch of
  len(radii) * num_points * num_directions latents: size those to fit in memory.
  """
  radii = _f64(radii)
  if not 0 < quantile <= 1:
    raise ValueError(f'quantile must be in (0, 1], got {quantile}.')
  if radii.ndim != 1 or radii.size == 0 or radii[0] <= 0 or np.any(np.diff(radii) <= 0):
    raise ValueError(f'radii must be positive and strictly increasing, got {radii}.')
  z_key, direction_key = jax.random.split(key)
  z = jax.random.normal(z_key, (num_points, latent_dim))
  directions = jax.random.normal(direction_key, (num_points, num_directions, latent_dim))
  ratios = step_ratios(decode_fn, z, directions, jnp.asarray(radii, z.dtype))
  ratio_quantile = np.quantile(_f64(ratios).reshape(radii.size, -1), quantile, axis=1)
  return ModulusEstimate(radii, ratio_quantile, float(quantile),
                         Empirical(radii, radii * ratio_quantile))


@functools.partial(jax.jit, static_argnames=('decode_fn', 'num_iters'))
def jacobian_spectral_norm(decode_fn, z, key, num_iters=50):
  """Largest singular value of the decoder's Jacobian at each latent of z (B, d); shape (B,).

  Power iteration on J^T J with one jvp and one vjp per step, never forming J (image size x d).
  The estimate approaches sigma_max from below, at a rate set by the gap to sigma_2; it gives local
  Lipschitz constants, a second estimate of omega's slope next to the sampled ratios.
  """
  def one(latent, start):
    decode = lambda v: decode_fn(v[None]).reshape(-1)
    _, jvp = jax.linearize(decode, latent)
    _, vjp = jax.vjp(decode, latent)
    unit = lambda v: v / jnp.maximum(jnp.linalg.norm(v), jnp.finfo(v.dtype).tiny)
    step = lambda _, v: unit(vjp(jvp(v))[0])
    return jnp.linalg.norm(jvp(jax.lax.fori_loop(0, num_iters, step, unit(start))))

  return jax.vmap(one)(z, jax.random.normal(key, z.shape, z.dtype))
