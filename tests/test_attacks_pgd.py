"""PGD and FGSM: invariants, closed forms on linear models, compilation behaviour."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from advgen import attacks, evaluate
from advgen.attacks import losses
from advgen.attacks.pgd import chunked
from advgen.errors import UserError

SHAPE = (6, 8, 8, 1)
DIM = 64
_KEYS = jax.random.split(jax.random.key(0), 4)
_W1, _W2 = jax.random.normal(_KEYS[0], (DIM, 16)), jax.random.normal(_KEYS[1], (16, 10))
_W_BINARY = jax.random.normal(_KEYS[2], (DIM, 2))
_B_BINARY = jnp.array([0.3, -0.2])
# Class j reads the mean of pixel block j: every class is reachable inside the box.
_W_BLOCKS = jnp.concatenate([jnp.asarray(np.kron(np.eye(10), np.ones((6, 1))) / 6),
                             jnp.zeros((DIM - 60, 10))])


def mlp(x):
  return jnp.tanh(x.reshape(x.shape[0], -1) @ _W1) @ _W2


def binary(x):
  return x.reshape(x.shape[0], -1) @ _W_BINARY + _B_BINARY


def blocks(x):
  return 10.0 * x.reshape(x.shape[0], -1) @ _W_BLOCKS


def interior(key, shape=SHAPE):
  """Images in [0.4, 0.6], far from the box edges for the radii used with them."""
  return jax.random.uniform(key, shape, minval=0.4, maxval=0.6)


RADII = {attacks.LinfBall: 0.3, attacks.L2Ball: 3.0, attacks.L1Ball: 8.0}
LOSS = {attacks.LinfBall: 'ce', attacks.L2Ball: 'margin', attacks.L1Ball: 'ce'}


@pytest.mark.parametrize('ball', list(RADII))
def test_pgd_stays_feasible_never_loses_and_zero_radius_is_identity(ball):
  x = jax.random.uniform(_KEYS[3], SHAPE)
  y = jnp.argmax(mlp(x), -1)
  radii = jnp.asarray(np.random.default_rng(0).uniform(0.0, RADII[ball], SHAPE[0]), jnp.float32)
  settings = dict(num_steps=5, step_size=RADII[ball] / 4, random_start=False, early_stop=False,
                  loss=LOSS[ball])
  res = attacks.pgd(mlp, ball(x, radii), y, jax.random.key(1), **settings)
  assert np.all(np.asarray(res.distance) <= radii * (1 + 1e-5) + 1e-6)
  assert res.x_adv.min() >= 0.0 and res.x_adv.max() <= 1.0
  start = losses.objective(mlp(x), y, loss=LOSS[ball], targeted=False, kappa=0.0)
  at_result = losses.objective(mlp(res.x_adv), y, loss=LOSS[ball], targeted=False, kappa=0.0)
  np.testing.assert_allclose(res.loss, at_result, rtol=1e-5, atol=1e-6)
  assert np.all(np.asarray(at_result) >= np.asarray(start) - 1e-6)
  assert np.mean(np.asarray(at_result) > np.asarray(start) + 1e-3) > 0.5  # it does move

  zero = attacks.pgd(mlp, ball(x, jnp.zeros_like(radii)), y, jax.random.key(1), **settings)
  np.testing.assert_allclose(zero.x_adv, x, atol=1e-6)
  assert not np.any(zero.success)


def _margin_drop(x, x_adv):
  y = jnp.argmax(binary(x), -1)
  return np.asarray(losses.margin(binary(x), y) - losses.margin(binary(x_adv), y)), y


_DUAL_NORM = {'linf': 1, 'l2': 2, 'l1': np.inf}  # the norm of w_y - w_j each step size scales
_EPSILON = {'linf': 0.05, 'l2': 0.3, 'l1': 0.3}


@pytest.mark.parametrize('norm', list(_DUAL_NORM))
def test_linear_closed_form_of_the_optimal_step(norm):
  """On f(x) = Wx + b (binary) an optimal step of radius eps moves the margin z_y - z_j by exactly
  eps * ||w_y - w_j||_*, the dual norm; PGD's steps along a constant gradient add up to it."""
  x = interior(_KEYS[3])
  y = jnp.argmax(binary(x), -1)
  w = np.asarray(_W_BINARY[:, 0] - _W_BINARY[:, 1])
  expected = _EPSILON[norm] * np.linalg.norm(w, _DUAL_NORM[norm])
  ball = {'linf': attacks.LinfBall, 'l2': attacks.L2Ball, 'l1': attacks.L1Ball}[norm]
  one_step = attacks.fgsm(binary, ball(x, _EPSILON[norm]), y)
  drop, _ = _margin_drop(x, one_step.x_adv)
  np.testing.assert_allclose(drop, expected, rtol=1e-4)
  np.testing.assert_allclose(one_step.distance, _EPSILON[norm], rtol=1e-5)

  attack = attacks.build(dict(attack=f'pgd_{norm}', epsilon=_EPSILON[norm], num_steps=3,
                              step_size=_EPSILON[norm] / 3, random_start=False, early_stop=False))
  res = attack(binary, {'image': x, 'label': y}, jax.random.key(0))
  drop, _ = _margin_drop(x, res.x_adv)
  np.testing.assert_allclose(drop, expected, rtol=1e-4)


def test_early_stop_keeps_the_first_successful_iterate():
  x = interior(_KEYS[3])
  y = jnp.argmax(binary(x), -1)
  step = 0.002
  w = np.asarray(_W_BINARY[:, 0] - _W_BINARY[:, 1])
  minimal = np.abs(np.asarray(losses.margin(binary(x), y))) / np.abs(w).sum()
  assert minimal.max() < 0.3 - step  # every example can be fooled within the budget
  res = attacks.pgd(binary, attacks.LinfBall(x, 0.3), y, jax.random.key(0), num_steps=200,
                    step_size=step, random_start=False)
  assert np.all(res.success)
  np.testing.assert_allclose(res.distance, np.ceil(minimal / step) * step, atol=1e-4)


def test_constant_classifier_is_never_fooled():
  constant = lambda x: jnp.zeros((x.shape[0], 3)) + jnp.array([1.0, 0.0, -1.0])
  x = jax.random.uniform(_KEYS[3], SHAPE)
  y = jnp.zeros(SHAPE[0], jnp.int32)
  res = attacks.pgd(constant, attacks.LinfBall(x, 0.5), y, jax.random.key(0), num_steps=3,
                    step_size=0.1, restarts=2)
  assert not np.any(res.success) and not np.any(res.restart_success)
  fast = attacks.fgsm(constant, attacks.L2Ball(x, 2.0), y, jax.random.key(1), random_start=True,
                      step_size=2.5)  # FGSM with random start and a step beyond the radius
  assert not np.any(fast.success)
  assert np.all(np.asarray(fast.distance) <= 2.0 * (1 + 1e-5)) and fast.x_adv.min() >= 0.0


def test_targeted_attack_reaches_the_target_and_restarts_report_each_run():
  x = jax.random.uniform(_KEYS[3], SHAPE)
  target = (jnp.argmax(blocks(x), -1) + 1) % 10
  attack = attacks.build(dict(attack='pgd_linf', epsilon=0.6, num_steps=10, step_size=0.1,
                              targeted=True, restarts=3))
  res = attack(blocks, {'image': x, 'label': target}, jax.random.key(0))
  np.testing.assert_array_equal(jnp.argmax(res.logits, -1), target)
  np.testing.assert_array_equal(jnp.argmax(blocks(res.x_adv), -1), target)
  assert res.restart_success.shape == (SHAPE[0], 3)
  np.testing.assert_array_equal(res.success, res.restart_success.any(-1))


def test_optax_step_rule_attacks_with_adam():
  x = jax.random.uniform(_KEYS[3], SHAPE)
  y = jnp.argmax(blocks(x), -1)
  res = attacks.pgd(blocks, attacks.LinfBall(x, 0.3), y, jax.random.key(0), num_steps=20,
                    step_rule=optax.adam(0.05), random_start=False)
  assert np.all(res.success)
  assert np.all(np.asarray(res.distance) <= 0.3 + 1e-6)
  with pytest.raises(UserError):
    attacks.pgd(blocks, attacks.LinfBall(x, 0.3), y, jax.random.key(0), num_steps=2,
                step_rule=optax.adam(0.05), step_size=0.1)


def test_no_retrace_for_a_new_batch_and_vmap_matches_the_batch():
  traces = []

  def counting(x):
    traces.append(None)
    return mlp(x)

  settings = dict(num_steps=4, step_size=0.05, random_start=False)
  x = jax.random.uniform(_KEYS[3], SHAPE)
  y = jnp.argmax(mlp(x), -1)
  first = attacks.pgd(counting, attacks.LinfBall(x, 0.2), y, jax.random.key(0), **settings)
  count, cache = len(traces), attacks.pgd._cache_size()
  second = attacks.pgd(counting, attacks.LinfBall(1.0 - x, 0.25), y, jax.random.key(1), **settings)
  jax.block_until_ready(second)
  assert len(traces) == count and attacks.pgd._cache_size() == cache

  one = lambda xi, yi: attacks.pgd(counting, attacks.LinfBall(xi[None], 0.2), yi[None],
                                   jax.random.key(0), **settings)
  mapped = jax.vmap(one)(x, y)
  np.testing.assert_allclose(mapped.x_adv[:, 0], first.x_adv, atol=1e-6)
  np.testing.assert_array_equal(mapped.success[:, 0], first.success)


def test_sweep_runs_every_radius_in_one_program():
  x = interior(_KEYS[3])
  y = jnp.argmax(binary(x), -1)
  epsilons = [0.0, 0.01, 0.05, 0.3]
  res = attacks.sweep(attacks.pgd, binary, attacks.LinfBall(x, 0.0), y, jax.random.key(0),
                      epsilons, num_steps=5, step_size=0.07, random_start=False)
  assert res.success.shape == (4, SHAPE[0])
  np.testing.assert_allclose(res.x_adv[0], x)
  assert np.all(np.asarray(res.linf) <= np.asarray(epsilons)[:, None] + 1e-6)
  success = np.asarray(res.success)
  assert np.all(success[1:] >= success[:-1]) and success[-1].all() and not success[0].any()
  robust = evaluate.robust_accuracy(res, np.ones(SHAPE[0], bool), epsilons)
  assert robust['robust_accuracy@0'] == 1.0 and robust['robust_accuracy@0.3'] == 0.0


def test_registry_names_and_errors():
  assert set(attacks.ATTACKS) >= {'pgd_linf', 'pgd_l2', 'pgd_l1', 'fgsm', 'deepfool', 'cw_l2',
                                  'on_true_manifold', 'on_learned_manifold', 'transform'}
  with pytest.raises(UserError, match='pgd_linf'):
    attacks.build(dict(attack='pgd', epsilon=0.1))
  with pytest.raises(UserError):
    attacks.build(dict(attack='transform', epsilon=0.1, ranges='impossible'))
  x = jnp.zeros(SHAPE)
  with pytest.raises(UserError):
    attacks.pgd(mlp, attacks.LinfBall(x, 0.1), jnp.zeros(6, jnp.int32), jax.random.key(0),
                num_steps=1, step_size=0.1, restarts=2, random_start=False)


def test_margin_masks_the_true_class():
  logits = jnp.array([[3.0, 1.0, 2.0], [0.0, 5.0, 5.0], [-jnp.inf, 0.0, 1.0]])
  y = jnp.array([0, 1, 2])
  np.testing.assert_allclose(losses.margin(logits, y), [1.0, 0.0, 1.0])
  grad = jax.grad(lambda z: losses.margin(z, y[:1]).sum())(logits[:1])
  np.testing.assert_allclose(grad, [[1.0, 0.0, -1.0]])
  clamped = losses.objective(logits[:2], y[:2], loss='margin', targeted=False, kappa=0.5)
  np.testing.assert_allclose(clamped, [-1.0, 0.0])


def _assert_same_result(a, b, exact=True):
  for field in ('x_adv', 'v', 'success', 'distance', 'linf', 'loss', 'logits', 'restart_success'):
    if exact:
      np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    else:
      np.testing.assert_allclose(getattr(a, field), getattr(b, field), rtol=1e-5, atol=1e-5,
                                 err_msg=field)


def test_early_exit_gives_the_result_of_every_step_and_stops_when_all_succeeded():
  x = interior(_KEYS[3], (12, 8, 8, 1))
  y = jnp.argmax(binary(x), -1)
  w = np.asarray(_W_BINARY[:, 0] - _W_BINARY[:, 1])
  minimal = np.abs(np.asarray(losses.margin(binary(x), y))) / np.abs(w).sum()
  step, num_steps = 0.005, 50
  # Examples 0 and 1 pushed 0.45 towards their own class: out of reach, and 50 steps of 0.005
  # never reach the ball's edge, so their last iterate (the highest loss) is the one kept.
  away = jnp.where(y[:2, None] == 0, 1.0, -1.0) * jnp.sign(jnp.asarray(w))[None]
  mixed = x.at[:2].set(jnp.clip(x[:2] + 0.45 * away.reshape(2, 8, 8, 1), 0.0, 1.0))
  settings = dict(num_steps=num_steps, step_size=step, restarts=4, loss='margin')  # CE is 0 there
  for images, never in ((mixed, 2), (x, 0)):  # restarts succeed at different steps
    masked = attacks.pgd(binary, attacks.LinfBall(images, 0.3), y, jax.random.key(5),
                         early_exit=False, **settings)
    early = attacks.pgd(binary, attacks.LinfBall(images, 0.3), y, jax.random.key(5), **settings)
    _assert_same_result(early, masked)
    restarts = np.asarray(masked.restart_success)
    assert restarts[never:].all() and not restarts[:never].any()
  # Deterministic starts: example b first succeeds after k_b = ceil(minimal_b / step) steps, so
  # the loop evaluates the classifier max(k) + 1 times and stops, plus one final evaluation;
  # running every step: num_steps + 1.
  calls = []

  def counting(images):
    jax.debug.callback(lambda: calls.append(None))
    return binary(images)

  last = int(np.ceil(minimal.max() / step))
  assert last + 1 < num_steps
  for early_exit, expected in ((True, last + 2), (False, num_steps + 1)):
    calls.clear()
    res = attacks.pgd(counting, attacks.LinfBall(x, 0.3), y, jax.random.key(0),
                      num_steps=num_steps, step_size=step, random_start=False,
                      early_exit=early_exit, chunk_size=0)
    jax.block_until_ready(res)
    assert np.all(res.success) and len(calls) == expected
  before = attacks.pgd._cache_size()  # a new batch: no retrace, and it exits at its own step
  calls.clear()
  jax.block_until_ready(attacks.pgd(counting, attacks.LinfBall(x, 0.3), 1 - y, jax.random.key(1),
                                    num_steps=num_steps, step_size=step, random_start=False,
                                    early_exit=True, chunk_size=0))
  assert attacks.pgd._cache_size() == before and len(calls) == 2  # 1 - y: all wrong at the start


def test_early_exit_inside_vmap_and_sweep_matches_every_step():
  """vmap turns the loop's exit test into 'every lane done'; finished lanes must not move."""
  x = interior(_KEYS[3])
  y = jnp.argmax(binary(x), -1)
  settings = dict(num_steps=60, step_size=0.005, restarts=2)
  epsilons = [0.0, 0.02, 0.3]
  early = attacks.sweep(attacks.pgd, binary, attacks.LinfBall(x, 0.0), y, jax.random.key(0),
                        epsilons, **settings)
  masked = attacks.sweep(attacks.pgd, binary, attacks.LinfBall(x, 0.0), y, jax.random.key(0),
                         epsilons, early_exit=False, **settings)
  _assert_same_result(early, masked)
  assert np.asarray(early.success)[-1].all() and not np.asarray(early.success)[0].any()


def _conv_net(x):
  """A tiny conv net: its gradients go through the canonical-convolution rewrite in chunks."""
  h = jax.lax.conv_general_dilated(x, _CONV, (2, 2), 'SAME',
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return jnp.tanh(h).reshape(x.shape[0], -1) @ _CONV_DENSE


_CONV = jax.random.normal(jax.random.key(7), (3, 3, 1, 4)) / 3
_CONV_DENSE = jax.random.normal(jax.random.key(8), (64, 10)) / 8


@pytest.mark.parametrize('model', [mlp, _conv_net])
def test_chunks_change_no_result(model):
  """5 examples x 3 restarts = 15 images in chunks of 4: 4 chunks of 4, one padded image."""
  x = jax.random.uniform(_KEYS[3], (5, 8, 8, 1))
  y = jnp.argmax(model(x), -1)
  settings = dict(num_steps=8, step_rule=optax.adam(0.02), restarts=3, early_stop=False)
  whole = attacks.pgd(model, attacks.LinfBall(x, 0.1), y, jax.random.key(0), chunk_size=0,
                      **settings)
  in_chunks = attacks.pgd(model, attacks.LinfBall(x, 0.1), y, jax.random.key(0), chunk_size=4,
                        **settings)
  _assert_same_result(in_chunks, whole, exact=False)
  assert np.asarray(whole.loss).std() > 0.1  # the examples differ, so a mix-up would show


def test_chunked_maps_any_leading_length():
  fn = lambda a, b: (a * 2.0 + b[:, None], jnp.cumsum(a, axis=1))  # per row
  for n in (1, 5, 6, 7, 17):
    a = jnp.arange(n * 3, dtype=jnp.float32).reshape(n, 3)
    b = jnp.arange(n, dtype=jnp.float32)
    for size in (0, 2, 4):
      for got, want in zip(chunked(fn, size, a, b), fn(a, b)):
        np.testing.assert_array_equal(got, want)
