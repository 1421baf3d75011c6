"""Which iterate an attack keeps: PGD's restart choice and early stopping, Carlini-Wagner's
smallest success, FGSM's random start. Only the public `advgen.attacks` API is used.

The problems are built so that the right choice differs from every plausible wrong one (the
first, the last, the strongest instead of the closest, the start).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from advgen import attacks
from advgen.attacks import losses


def _threshold_classifier(tau, gain=10.0):
  """Two classes; class 1 wins iff pixel 0 exceeds 0.5 + tau. CE of class 0 grows with it."""

  def logits_fn(x):
    score = gain * (x.reshape(x.shape[0], -1)[:, 0] - 0.5 - tau)
    return jnp.stack([jnp.zeros_like(score), score], -1)

  return logits_fn


def _restart_starts(threat, key, restarts):
  """PGD's documented randomness: one key per restart split from `key`, each a threat.init."""
  return np.stack([np.asarray(threat.init(k)) for k in jax.random.split(key, restarts)])


def test_pgd_keeps_the_closest_successful_restart_else_the_strongest():
  """Zero-size steps: each restart keeps its random start, so the choice among restarts is
  visible. 2-pixel images in an L2 ball: start distances spread over [0, eps]."""
  batch, restarts, epsilon, tau = 64, 6, 0.3, 0.1
  x = jnp.full((batch, 1, 2, 1), 0.5)
  threat = attacks.L2Ball(x, epsilon)
  logits_fn = _threshold_classifier(tau)
  y = jnp.zeros(batch, jnp.int32)
  key = jax.random.key(3)
  res = attacks.pgd(logits_fn, threat, y, key, num_steps=1, step_size=0.0, restarts=restarts)

  starts = _restart_starts(threat, key, restarts)  # (R, B, 1, 2, 1)
  offsets = (starts - np.asarray(x)).reshape(restarts, batch, 2)
  success = offsets[..., 0] > tau
  np.testing.assert_array_equal(res.restart_success, success.T)  # the same starts as PGD's
  distance = np.linalg.norm(offsets, axis=-1)
  closest = np.argmin(np.where(success, distance, np.inf), axis=0)
  strongest = np.argmax(offsets[..., 0], axis=0)  # the highest loss: CE of class 0
  pick = np.where(success.any(0), closest, strongest)
  # The test has teeth: the closest success is often neither the strongest nor the first.
  first = np.argmax(success, axis=0)
  assert np.sum(success.any(0) & (closest != strongest)) >= 5
  assert np.sum(success.any(0) & (closest != first)) >= 5
  assert np.sum(~success.any(0)) >= 1
  expected = starts[pick, np.arange(batch)]
  np.testing.assert_allclose(res.x_adv, expected, atol=1e-6)
  np.testing.assert_allclose(res.v, expected, atol=1e-6)
  np.testing.assert_array_equal(res.success, success.any(0))
  # The reported numbers belong to the kept iterate.
  np.testing.assert_allclose(res.distance, distance[pick, np.arange(batch)], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(res.l2, res.distance, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(res.logits, logits_fn(res.x_adv), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
      res.loss, losses.objective(logits_fn(res.x_adv), y, loss='ce', targeted=False, kappa=0.0),
      rtol=1e-5, atol=1e-6)


def test_pgd_without_any_success_keeps_the_strongest_restart():
  batch, restarts, epsilon = 32, 5, 0.3
  x = jnp.full((batch, 1, 2, 1), 0.5)
  threat = attacks.LinfBall(x, epsilon)
  logits_fn = _threshold_classifier(tau=1.0)  # out of reach
  key = jax.random.key(4)
  y = jnp.zeros(batch, jnp.int32)
  res = attacks.pgd(logits_fn, threat, y, key, num_steps=1, step_size=0.0, restarts=restarts)
  starts = _restart_starts(threat, key, restarts)
  strongest = np.argmax(starts.reshape(restarts, batch, 2)[..., 0], axis=0)
  assert not np.any(res.success) and not np.any(res.restart_success)
  np.testing.assert_allclose(res.x_adv, starts[strongest, np.arange(batch)], atol=1e-6)
  assert len(set(strongest.tolist())) > 1  # not always the same restart


def _bump(peak, gain=1.0):
  """Objective (margin loss, y = 0) f(x) = -gain (d - peak)^2 - 1 of d = pixel - 0.5: never a
  success, and the loss peaks inside the ball."""

  def logits_fn(x):
    d = x.reshape(x.shape[0], -1)[:, 0] - 0.5
    return jnp.stack([jnp.zeros_like(d), -gain * (d - peak) ** 2 - 1.0], -1)

  return logits_fn


def test_an_example_that_never_succeeds_keeps_its_highest_loss_iterate():
  """Sign steps of 0.15 around a peak at d = 0.1 oscillate: d = 0, .15, 0, .15, 0. The best
  iterate is d = 0.15, neither the start nor the last iterate (both d = 0)."""
  x = jnp.full((1, 1, 1, 1), 0.5)
  y = jnp.zeros(1, jnp.int32)
  for early_stop in (True, False):
    res = attacks.pgd(_bump(0.1), attacks.LinfBall(x, 0.3), y, jax.random.key(0), num_steps=4,
                      step_size=0.15, random_start=False, early_stop=early_stop, loss='margin',
                      kappa=100.0)
    assert not res.success[0]
    np.testing.assert_allclose(res.x_adv[0, 0, 0, 0], 0.65, atol=1e-6)
    np.testing.assert_allclose(res.loss, -(0.15 - 0.1) ** 2 - 1.0, rtol=1e-5)


def test_early_stop_keeps_the_first_success_and_otherwise_the_strongest():
  """Sign steps of 0.15 with success beyond d = 0.1: d = 0, .15 (first success), .3, .3. A
  second example (at 0, out of reach) keeps every step running."""
  x = jnp.array([0.5, 0.0]).reshape(2, 1, 1, 1)
  y = jnp.zeros(2, jnp.int32)
  logits_fn = _threshold_classifier(tau=0.1)
  settings = dict(num_steps=3, step_size=0.15, random_start=False, loss='margin', kappa=100.0)
  first = attacks.pgd(logits_fn, attacks.LinfBall(x, 0.3), y, jax.random.key(0), **settings)
  np.testing.assert_allclose(first.x_adv[:, 0, 0, 0], [0.65, 0.3], atol=1e-6)
  np.testing.assert_array_equal(first.success, [True, False])
  strongest = attacks.pgd(logits_fn, attacks.LinfBall(x, 0.3), y, jax.random.key(0),
                          early_stop=False, **settings)
  np.testing.assert_allclose(strongest.x_adv[:, 0, 0, 0], [0.8, 0.3], atol=1e-6)
  np.testing.assert_array_equal(strongest.success, [True, False])


def test_pgd_random_start_is_random_and_drawn_from_the_key():
  """One zero-size step: the result is the random start itself."""
  x = jax.random.uniform(jax.random.key(0), (8, 3, 3, 1), minval=0.3, maxval=0.7)
  threat = attacks.LinfBall(x, 0.2)
  logits_fn = _threshold_classifier(tau=1.0)
  y = jnp.zeros(8, jnp.int32)
  run = lambda key, **kw: attacks.pgd(logits_fn, threat, y, key, num_steps=1, step_size=0.0, **kw)
  a, b = run(jax.random.key(1)), run(jax.random.key(2))
  np.testing.assert_allclose(a.x_adv, _restart_starts(threat, jax.random.key(1), 1)[0], atol=1e-6)
  assert np.mean(np.asarray(a.x_adv) != np.asarray(b.x_adv)) > 0.9
  assert np.all(np.asarray(a.linf) > 0.1)  # away from the centre
  centre = run(jax.random.key(1), random_start=False)
  np.testing.assert_array_equal(centre.x_adv, x)


# FGSM from a random start ("fast" adversarial training).

_W = jax.random.normal(jax.random.key(5), (27, 2))


def _linear(x):
  return x.reshape(x.shape[0], -1) @ _W


def test_fgsm_random_start_steps_from_the_threat_models_random_start():
  x = jax.random.uniform(jax.random.key(6), (8, 3, 3, 3), minval=0.3, maxval=0.7)
  threat = attacks.LinfBall(x, 0.1)
  y = jnp.argmax(_linear(x), -1)
  key = jax.random.key(7)
  res = attacks.fgsm(_linear, threat, y, key, random_start=True, step_size=0.05)
  start = threat.init(key)
  grad = jax.grad(lambda v: losses.objective(_linear(v), y, loss='ce', targeted=False,
                                             kappa=0.0).sum())(start)
  expected = threat.project(start + 0.05 * jnp.sign(grad))
  np.testing.assert_allclose(res.x_adv, expected, atol=1e-6)
  # Not the deterministic FGSM, and another key gives another point.
  plain = attacks.fgsm(_linear, threat, y, key, step_size=0.05)
  np.testing.assert_allclose(plain.x_adv, threat.project(x + 0.05 * jnp.sign(
      jax.grad(lambda v: losses.objective(_linear(v), y, loss='ce', targeted=False,
                                          kappa=0.0).sum())(x))), atol=1e-6)
  assert np.mean(np.abs(np.asarray(res.x_adv - plain.x_adv)) > 1e-4) > 0.5
  other = attacks.fgsm(_linear, threat, y, jax.random.key(8), random_start=True, step_size=0.05)
  assert np.mean(np.abs(np.asarray(res.x_adv - other.x_adv)) > 1e-4) > 0.5


# Carlini-Wagner: the smallest confident success over every iterate of every search step.

_W_CW = jax.random.normal(jax.random.key(9), (64, 2))


def _cw_logits(x):
  return x.reshape(x.shape[0], -1) @ _W_CW + jnp.array([0.3, -0.2])


def _cw_reference(logits_fn, x, y, *, c_init, binary_search_steps, num_steps, lr, kappa):
  """Every iterate of the documented algorithm, eagerly; returns the smallest confident
  success's squared L2 distance (inf if none) and the last one's."""
  w0 = jnp.arctanh((2.0 * x - 1.0) * (1.0 - 1e-6))
  optimizer = optax.adam(lr)

  @jax.jit
  def value_and_grad(w, c):
    def penalized(w):
      image = (jnp.tanh(w) + 1.0) / 2.0
      logits = logits_fn(image)
      distance = jnp.sum(jnp.square(image - x), axis=(1, 2, 3))
      hinge = jnp.maximum(losses.margin(logits, y), -kappa)
      return jnp.sum(distance + c * hinge), (distance, logits)
    return jax.value_and_grad(penalized, has_aux=True)(w)

  batch = x.shape[0]
  c = jnp.full((batch,), c_init)
  lower, upper = jnp.zeros(batch), jnp.full(batch, 1e10)
  best, last = np.full(batch, np.inf), np.full(batch, np.inf)
  for _ in range(binary_search_steps):
    w, state, found = w0, optimizer.init(w0), np.zeros(batch, bool)
    for i in range(num_steps + 1):
      (_, (distance, logits)), grad = value_and_grad(w, c)
      hit = np.asarray(-losses.margin(logits, y) > kappa)
      best = np.where(hit, np.minimum(best, distance), best)
      last = np.where(hit, distance, last)
      found |= hit
      if i < num_steps:
        updates, state = optimizer.update(grad, state, w)
        w = optax.apply_updates(w, updates)
    upper = jnp.where(found, jnp.minimum(upper, c), upper)
    lower = jnp.where(found, lower, jnp.maximum(lower, c))
    c = jnp.where(upper < 1e10, (lower + upper) / 2, c * 10)
  return best, last


def test_carlini_wagner_keeps_the_smallest_success_of_all_iterates():
  x = jax.random.uniform(jax.random.key(10), (8, 8, 8, 1), minval=0.3, maxval=0.7)
  y = jnp.argmax(_cw_logits(x), -1)
  # c_init is too small for every example: the search raises c, then halves the bracket.
  settings = dict(c_init=0.01, binary_search_steps=4, num_steps=25, lr=0.05, kappa=0.2)
  res = attacks.carlini_wagner_l2(_cw_logits, x, y, **settings)
  best, last = _cw_reference(_cw_logits, x, y, **settings)
  found = np.isfinite(best)
  assert found.sum() >= 4
  assert np.any(last[found] > best[found] * 1.05)  # the last success is not the smallest
  np.testing.assert_array_equal(res.success, found)
  np.testing.assert_allclose(res.distance[found], np.sqrt(best[found]), rtol=2e-3)
  np.testing.assert_allclose(res.l2[found], res.distance[found], rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(res.x_adv)[~found], np.asarray(x)[~found])
  # The kept example is confident and its logits are its own.
  np.testing.assert_allclose(res.logits, _cw_logits(res.x_adv), rtol=1e-4, atol=1e-4)
  assert np.all(-np.asarray(losses.margin(res.logits, y))[found] > 0.2)
