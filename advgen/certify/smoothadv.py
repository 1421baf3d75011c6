"""Attacks on the smoothed classifier (Salman et al., 2019, SmoothAdv): any attack of the
registry run on the Monte-Carlo estimate of the smoothed class probabilities, its candidates
confirmed by PREDICT with fresh noise.

The smoothed classifier g is not differentiable, its soft version
G(x) = E_delta[softmax(f(x + delta))] is: `soft_logits_fn` returns log G estimated on a fixed
set of noise samples, a plain `logits_fn` every attack takes (PGD on its cross-entropy is
SmoothAdv-PGD). A candidate counts only if PREDICT on it, with fresh noise, gives another class
than the label (an abstention does not contradict a certificate), so the measured side attacks
the same classifier that CERTIFY bounds.
"""

import jax
import jax.numpy as jnp
import numpy as np

from advgen.certify import smoothing

_CONFIRM = 1 << 30  # fold_in offset of the confirmation keys, apart from the attack's


def soft_logits_fn(logits_fn, key, sigma, num_samples, shape):
  """`x (N, *shape) -> log G(x) (N, C)`: the log of the base classifier's softmax averaged over
  `num_samples` noise samples N(0, sigma^2 I) drawn once from `key` (the same for every image
  and call, so the attack optimizes one deterministic function)."""
  noise = sigma * jax.random.normal(key, (num_samples,) + tuple(shape))

  def fn(x):
    images = (x[:, None] + noise[None]).reshape((-1,) + tuple(shape))
    log_p = jax.nn.log_softmax(logits_fn(images)).reshape(x.shape[0], num_samples, -1)
    return jax.nn.logsumexp(log_p, axis=1) - jnp.log(num_samples)

  return fn


def smoothadv(attack, logits_fn, batch, key, *, sigma, num_samples):
  """The registry attack `attack(logits_fn, batch, key)` (attacks.build) on the soft smoothed
  classifier of `logits_fn` with `num_samples` noise samples; traceable (jit it with the
  closures static). Its `success` is the soft classifier's; see `confirm`."""
  noise_key, attack_key = jax.random.split(key)
  soft = soft_logits_fn(logits_fn, noise_key, sigma, num_samples, batch['image'].shape[1:])
  return attack(soft, batch, attack_key)


def confirm_keys(keys):
  """Fresh keys for PREDICT on the candidates of examples with keys (B,)."""
  return jax.vmap(lambda k: jax.random.fold_in(k, _CONFIRM))(keys)


def confirmed_from_counts(counts, y, alpha):
  """(B,) bool from PREDICT's votes (B, C) on the candidates: another class than y, no
  abstention."""
  prediction = smoothing.predict_from_counts(counts, alpha)
  return (prediction != smoothing.ABSTAIN) & (prediction != np.asarray(y))


def confirm(logits_fn, x_adv, y, key, sigma, num_samples, alpha, chunk_size=None):
  """(B,) bool: PREDICT with fresh noise on the candidates x_adv gives a class other than y and
  does not abstain; `key` one key or (B,) keys (fresh ones are folded from them)."""
  keys = smoothing.example_keys(key, x_adv.shape[0]) if jnp.ndim(key) == 0 else key
  counts = smoothing.noise_counts(logits_fn, x_adv, confirm_keys(keys), sigma, num_samples,
                                  chunk_size)
  return confirmed_from_counts(counts, y, alpha)
