"""Randomized smoothing (Cohen, Rosenfeld & Kolter, 2019): the smoothed classifier
g(x) = argmax_c P(f(x + delta) = c), delta ~ N(0, sigma^2 I), with its PREDICT and CERTIFY.

The noisy votes are counted on the device: one jit-compiled program per batch draws the noise in
chunks inside a loop and accumulates class counts, so the n noisy images never exist at once.
Sample s of an example with key k sees the noise `normal(fold_in(k, s))`: with one key per
example (`example_keys` folds in the example's index in the dataset) counts depend neither on
the batch size, nor on the chunk size, nor on the order of the images. The statistics (binomial
test, Clopper-Pearson bound, radius) are float64 scalar math on the host: counts are integers.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from advgen.errors import UserError

ABSTAIN = -1  # the prediction of a smoothed classifier that abstains (Cohen et al.'s code)
# Noisy images per classifier call: on CPU the fonts conv net counts fastest around 500 per call
# (benchmarks/certify_throughput.py); accelerators take larger batches.
CPU_CHUNK_SIZE = 500
ACCELERATOR_CHUNK_SIZE = 8192
_SELECT, _ESTIMATE = 0, 1  # fold_in offsets of CERTIFY's two sample sets


class Certificate(NamedTuple):
  """CERTIFY's per-example outcome (numpy, B,): the class (ABSTAIN where p_lower < 1/2), the
  certified L2 radius (0 where it abstains), p_A's lower confidence bound, and the count of
  the class among the n estimation samples."""
  prediction: np.ndarray
  radius: np.ndarray
  p_lower: np.ndarray
  count: np.ndarray


def resolve_chunk_size(chunk_size):
  """Noisy images per classifier call: None picks CPU_CHUNK_SIZE on CPU and
  ACCELERATOR_CHUNK_SIZE elsewhere."""
  if chunk_size is None:
    return CPU_CHUNK_SIZE if jax.default_backend() == 'cpu' else ACCELERATOR_CHUNK_SIZE
  if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
    raise UserError(f'chunk_size must be a positive integer, got {chunk_size!r}')
  return chunk_size


def example_keys(key, num, offset=0):
  """One key per example, `fold_in(key, offset + i)`: pass the offset of a batch in the dataset
  and example i's key is the same whatever the batching."""
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(offset + jnp.arange(num))


def _per_example(keys, num):
  keys = jnp.asarray(keys)
  return example_keys(keys, num) if keys.ndim == 0 else keys


def _check(sigma, num_samples, alpha=None):
  if not sigma > 0:
    raise UserError(f'sigma must be positive, got {sigma!r}')
  if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
    raise UserError(f'the number of noise samples must be a positive integer, got '
                    f'{num_samples!r}')
  if alpha is not None and not 0 < alpha < 1:
    raise UserError(f'alpha must be in (0, 1), got {alpha!r}')


def _counts(logits_fn, x, keys, sigma, num_samples, chunk_size):
  """Class counts (B, C) of `logits_fn` on `num_samples` noisy copies of each image, traced."""
  batch = x.shape[0]
  per_call = max(1, min(num_samples, chunk_size // batch))  # samples of each example per call
  num_classes = jax.eval_shape(logits_fn, x[:1]).shape[-1]
  sample = lambda key, s: jax.random.normal(jax.random.fold_in(key, s), x.shape[1:], x.dtype)

  def chunk(j, counts):
    index = j * per_call + jnp.arange(per_call)
    noise = jax.vmap(lambda key: jax.vmap(lambda s: sample(key, s))(index))(keys)
    images = (x[:, None] + sigma * noise).reshape((batch * per_call,) + x.shape[1:])
    votes = jnp.argmax(logits_fn(images), axis=-1).reshape(batch, per_call)
    hits = jax.nn.one_hot(votes, num_classes, dtype=jnp.int32) * (index < num_samples)[:, None]
    return counts + hits.sum(axis=1)

  return jax.lax.fori_loop(0, -(-num_samples // per_call), chunk,
                           jnp.zeros((batch, num_classes), jnp.int32))


@functools.partial(jax.jit, static_argnames=('logits_fn', 'num_samples', 'chunk_size'))
def _noise_counts(logits_fn, x, keys, sigma, *, num_samples, chunk_size):
  return _counts(logits_fn, x, keys, sigma, num_samples, chunk_size)


def noise_counts(logits_fn, x, keys, sigma, num_samples, chunk_size=None):
  """Votes (B, C) int32 of the base classifier `logits_fn` (static: reuse one closure) on
  `num_samples` copies x + N(0, sigma^2 I) of each image x (B, ...), one jit-compiled program;
  `keys` (B,) one per example (or one key: example_keys(key, B)). Inside another jit (e.g. over
  stacked models) it traces inline."""
  _check(sigma, num_samples)
  return _noise_counts(logits_fn, x, _per_example(keys, x.shape[0]), sigma,
                       num_samples=num_samples, chunk_size=resolve_chunk_size(chunk_size))


def binomial_p_value(top, second):
  """Two-sided binomial test of `top` successes in `top + second` trials at probability 1/2
  (PREDICT's test), vectorized; 1 where both are 0."""
  top, second = np.asarray(top, np.int64), np.asarray(second, np.int64)
  return np.minimum(1.0, 2 * stats.binom.sf(top - 1, top + second, 0.5))


def predict_from_counts(counts, alpha):
  """PREDICT on votes (B, C): the top class, ABSTAIN unless the binomial test of the top two
  counts has p <= alpha (then the top class is g(x) with probability >= 1 - alpha)."""
  counts = np.asarray(counts)
  order = np.argsort(-counts, axis=-1, kind='stable')
  top = np.take_along_axis(counts, order[:, :1], -1)[:, 0]
  second = np.take_along_axis(counts, order[:, 1:2], -1)[:, 0]
  return np.where(binomial_p_value(top, second) <= alpha, order[:, 0], ABSTAIN)


def predict(logits_fn, x, key, sigma, num_samples, alpha, chunk_size=None):
  """Cohen et al.'s PREDICT: (B,) classes of the smoothed classifier or ABSTAIN; `key` one key,
  or (B,) keys (one per example)."""
  _check(sigma, num_samples, alpha)
  return predict_from_counts(noise_counts(logits_fn, x, key, sigma, num_samples, chunk_size),
                             alpha)


def lower_confidence_bound(count, n, alpha):
  """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion, float64."""
  count = np.asarray(count, np.float64)
  bound = stats.beta.ppf(alpha, np.maximum(count, 1), n - count + 1)
  return np.where(count > 0, bound, 0.0)


def certify_from_counts(selection_counts, counts, sigma, alpha):
  """CERTIFY from votes: the class guessed from `selection_counts` (B, C), its count among the
  fresh `counts` (B, C), p_A's lower bound and the radius sigma * Phi^-1(p_A)."""
  selection_counts, counts = np.asarray(selection_counts), np.asarray(counts)
  guess = np.argmax(selection_counts, axis=-1)
  count = np.take_along_axis(counts, guess[:, None], -1)[:, 0]
  p_lower = lower_confidence_bound(count, counts.sum(-1), alpha)
  certified = p_lower >= 0.5
  radius = np.where(certified, sigma * stats.norm.ppf(np.maximum(p_lower, 0.5)), 0.0)
  return Certificate(np.where(certified, guess, ABSTAIN), radius, p_lower, count)


def certify_keys(keys):
  """The (selection, estimation) keys of CERTIFY's two independent sample sets."""
  split = lambda offset: jax.vmap(lambda k: jax.random.fold_in(k, offset))(keys)
  return split(_SELECT), split(_ESTIMATE)


def certify(logits_fn, x, key, sigma, n0=100, n=100_000, alpha=0.001, chunk_size=None):
  """Cohen et al.'s CERTIFY on images x (B, ...): guess the class from n0 noisy samples, bound
  its probability p_A from below on n fresh ones (Clopper-Pearson at level alpha), certify the
  L2 radius sigma * Phi^-1(p_A), abstain where the bound is below 1/2. `key`: one key or (B,)
  keys (one per example). With probability >= 1 - alpha per example, the smoothed classifier
  predicts the class everywhere within the radius."""
  _check(sigma, n, alpha)
  _check(sigma, n0)
  select, estimate = certify_keys(_per_example(key, x.shape[0]))
  return certify_from_counts(noise_counts(logits_fn, x, select, sigma, n0, chunk_size),
                             noise_counts(logits_fn, x, estimate, sigma, n, chunk_size), sigma,
                             alpha)


def max_radius(sigma, n, alpha):
  """The largest radius CERTIFY can give with n samples: every vote for the class (about
  3.8 sigma for n = 100,000, alpha = 0.001)."""
  return float(sigma * stats.norm.ppf(lower_confidence_bound(n, n, alpha)))


def certified_accuracy(radii, correct, r):
  """The fraction of examples certified correct at L2 radius r (scalar or array): `correct`
  (the certified class is the label; an abstention never is) and radius >= r."""
  radii, correct = np.asarray(radii, np.float64), np.asarray(correct, bool)
  r = np.asarray(r, np.float64)
  return np.mean(correct & (radii >= r[..., None]), axis=-1)


def accuracy_curve(radii, correct, top, num=200):
  """(r, certified accuracy at r) on `num` radii from 0 to `top` (Cohen et al.'s Fig. 1)."""
  r = np.linspace(0.0, top, num)
  return r, certified_accuracy(radii, correct, r)
