"""APGD and the DLR losses: hand-written logits, the checkpoint schedule and rule, closed forms on
linear models, invariants of every ball, early exit, determinism, errors and the registry."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from advgen import attacks
from advgen.attacks import losses
from advgen.errors import UserError
from test_attacks_pgd import _KEYS, SHAPE, blocks, interior, mlp

apgd_lib = importlib.import_module('advgen.attacks.apgd')  # the module (attacks.apgd: the function)

_W = 0.1 * jax.random.normal(_KEYS[2], (SHAPE[1] * SHAPE[2], 2))
_B = jnp.array([3.0, 0.0])  # class 0 wins everywhere by more than any radius used below moves


def robust_binary(x):
  return x.reshape(x.shape[0], -1) @ _W + _B


def test_dlr_losses_on_hand_written_logits():
  z = jnp.array([[3.0, 1.0, 0.0, -1.0], [3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 2.0, 1.0]])
  y, target = jnp.array([0, 2, 1]), jnp.array([3, 0, 2])
  # -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3): the max over the other classes, ties included.
  np.testing.assert_allclose(losses.dlr(z, y), [-2 / 3, 1.0, 0.0], rtol=1e-6)
  # -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
  np.testing.assert_allclose(losses.dlr_targeted(z, y, target),
                             [-4 / 3.5, 3 / 3.5, 0.0], rtol=1e-6)
  shifted = 2.5 * z - 7.0  # both are invariant to shifting and scaling the logits
  np.testing.assert_allclose(losses.dlr(shifted, y), losses.dlr(z, y), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(losses.dlr_targeted(shifted, y, target),
                             losses.dlr_targeted(z, y, target), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(losses.objective(z, y, loss='dlr', targeted=False, kappa=0.0),
                             losses.dlr(z, y))
  np.testing.assert_allclose(
      losses.objective(z, y, target, loss='dlr_targeted', targeted=False, kappa=0.0),
      losses.dlr_targeted(z, y, target))
  with pytest.raises(UserError, match='at least 3 classes'):
    losses.dlr(z[:, :2], y * 0)
  with pytest.raises(UserError, match='at least 4 classes'):
    losses.dlr_targeted(z[:, :3], y, target % 3)
  with pytest.raises(UserError, match='needs target classes'):
    losses.objective(z, y, loss='dlr_targeted', targeted=False, kappa=0.0)
  with pytest.raises(UserError, match='targeted=False'):
    losses.objective(z, y, loss='dlr', targeted=True, kappa=0.0)


def test_checkpoints_follow_the_reference_schedule():
  assert apgd_lib.checkpoints(100) == (22, 41, 57, 70, 80, 87, 93, 99)
  assert apgd_lib.checkpoints(1000) == (220, 410, 570, 700, 800, 870, 930, 990)
  # Lengths floored to whole steps, at least one: 2, then 1 each.
  assert apgd_lib.checkpoints(10) == (2, 3, 4, 5, 6, 7, 8, 9, 10)
  assert apgd_lib.checkpoints(100, 'l1') == tuple(range(4, 101, 4))
  assert apgd_lib.checkpoints(10, 'l1') == tuple(range(1, 11))


def _rule(trace, best_at_check, halved_at_check, rho=0.75):
  """The checkpoint rule on a loss trace: the loss at the last checkpoint, then one per step."""
  trace = np.asarray(trace, np.float32)
  increases = np.sum(np.diff(trace) > 0)
  best = max(best_at_check, trace.max())
  return bool(apgd_lib.halve_step(jnp.asarray(increases), len(trace) - 1, jnp.asarray(best),
                                  jnp.asarray(best_at_check, jnp.float32),
                                  jnp.asarray(halved_at_check), rho))


def test_each_halving_condition_on_hand_made_loss_traces():
  rising = np.arange(23.0)  # 22 steps, every one an increase
  # Condition 1: the loss rose on at most 0.75 * 22 = 16.5 of the 22 steps.
  seventeen = np.concatenate([np.arange(18.0), np.arange(17.0, 12.0, -1)])
  sixteen = np.concatenate([np.arange(17.0), np.arange(16.0, 10.0, -1)])
  assert len(seventeen) == len(sixteen) == 23
  assert not _rule(seventeen, best_at_check=-1.0, halved_at_check=True)
  assert _rule(sixteen, best_at_check=-1.0, halved_at_check=True)
  # At exactly rho * period increases the authors' code halves (<=): 12 of 16 steps.
  twelve = np.concatenate([np.arange(13.0), np.arange(12.0, 8.0, -1)])
  assert len(twelve) == 17 and _rule(twelve, best_at_check=-1.0, halved_at_check=True)
  assert not _rule(twelve, best_at_check=-1.0, halved_at_check=True, rho=0.7)
  # Condition 2: not halved last time and the best loss did not rise since.
  assert _rule(rising, best_at_check=100.0, halved_at_check=False)
  assert not _rule(rising, best_at_check=100.0, halved_at_check=True)
  assert not _rule(rising, best_at_check=21.5, halved_at_check=False)  # it rose to 22
  assert _rule(rising, best_at_check=22.0, halved_at_check=False)  # it only matched the best


def test_random_starts_lie_on_the_sphere_of_their_norm():
  """L-inf, L2: x + eps t / ||t|| (inside the box here); L1: the projection of x + N(0, I),
  on the sphere too as the Gaussian's L1 norm far exceeds eps."""
  x = interior(_KEYS[3])
  for ball, radius in ((attacks.LinfBall, 0.05), (attacks.L2Ball, 0.5), (attacks.L1Ball, 2.0)):
    threat = ball(x, radius)
    starts = [apgd_lib._start(threat, jax.random.key(k)) for k in (0, 1)]
    np.testing.assert_allclose(threat.distance(starts[0]), radius, rtol=1e-5)
    assert not np.allclose(starts[0], starts[1])
  linf = apgd_lib._start(attacks.LinfBall(x, 0.05), jax.random.key(0))
  assert np.mean(np.abs(np.asarray(linf - x)) > 0.049) < 0.1  # t is uniform, not its sign


def _state(v, grad, best_v, increases, best_loss_at_check=-1.0, halved_at_check=True):
  one = lambda a: jnp.full(v.shape[:1], a, jnp.float32)
  control = apgd_lib._Halving(jnp.full(v.shape[:1], increases, jnp.int32),
                              one(best_loss_at_check), jnp.full(v.shape[:1], halved_at_check))
  kept = apgd_lib._Iterate(v, one(0.0), jnp.zeros(v.shape[:1], bool), jnp.zeros((v.shape[0], 2)))
  return apgd_lib._State(v=v, previous=v - 0.01, grad=grad, loss=one(0.0), scale=one(1.0),
                         best_v=best_v, best_grad=-grad, best_loss=one(5.0), control=control,
                         kept=kept)


def test_steps_momentum_and_the_restart_at_a_checkpoint():
  x = jnp.full((1, 2, 2, 1), 0.5)
  grad = jnp.array([1.0, -2.0, 0.5, 0.0]).reshape(x.shape)
  threat = attacks.LinfBall(x, 0.1)
  state = _state(x + 0.02, grad, best_v=x - 0.03, increases=21)
  z = threat.project(state.v + 0.2 * jnp.sign(grad))  # eta = 2 eps along sign(g)
  np.testing.assert_allclose(apgd_lib._propose(threat, state, 0), z, atol=1e-7)
  momentum = 0.75 * (z - state.v) + 0.25 * (state.v - state.previous)
  np.testing.assert_allclose(apgd_lib._propose(threat, state, 1), state.v + momentum, atol=1e-7)
  l2 = attacks.L2Ball(x, 0.1)
  np.testing.assert_allclose(apgd_lib._propose(l2, state, 0),
                             l2.project(state.v + 0.2 * grad / jnp.linalg.norm(grad)), atol=1e-7)
  # L1: the signs of the top 20% (here: the largest of 4) magnitudes, unit L1 norm, eta = eps.
  l1 = attacks.L1Ball(x, 0.1)
  sparse = state.replace(control=apgd_lib._Sparsity(jnp.array([0.2]), jnp.array([4.0])))
  top = jnp.array([0, -1.0, 0, 0]).reshape(x.shape)
  np.testing.assert_allclose(apgd_lib._propose(l1, sparse, 3), l1.project(state.v + 0.1 * top),
                             atol=1e-7)
  # Step 22 of 100 ends the first period (22 steps): 21 increases keep the step, 5 halve it and
  # move the search back to the best point and its gradient.
  schedule = apgd_lib._schedule(100, 'sign')
  update = lambda s, i: apgd_lib._update(threat, jnp.array([0]), schedule, 0.75, i, s, state.v,
                                         jnp.array([1.0]), jnp.array([[1.0, 0.0]]), grad)
  kept = update(state, 21)
  np.testing.assert_allclose(kept.scale, 1.0)
  np.testing.assert_allclose(kept.v, state.v)
  np.testing.assert_allclose(kept.grad, grad)
  assert int(kept.control.increases[0]) == 0 and not kept.control.halved_at_check[0]
  halved = update(state.replace(control=state.control.replace(increases=jnp.array([5]))), 21)
  np.testing.assert_allclose(halved.scale, 0.5)
  np.testing.assert_allclose(halved.v, state.best_v)
  np.testing.assert_allclose(halved.grad, -grad)
  assert bool(halved.control.halved_at_check[0])
  between = update(state.replace(control=state.control.replace(increases=jnp.array([5]))), 20)
  np.testing.assert_allclose(between.scale, 1.0)  # no checkpoint after step 21
  assert int(between.control.increases[0]) == 6  # the loss rose from 0 to 1
  np.testing.assert_allclose(between.previous, state.v)


def test_linear_binary_model_reaches_the_closed_form_optimum():
  """On a binary linear model CE grows as the margin (w_0 - w_1) x + b_0 - b_1 falls, so the
  L-inf optimum is the corner clip(x - eps sign(w_0 - w_1), 0, 1) (box included) and the L2 one,
  away from the box, lowers the margin by eps ||w_0 - w_1||_2."""
  w = np.asarray(_W[:, 0] - _W[:, 1])
  ce = lambda m: np.log1p(np.exp(-m))
  x = jax.random.uniform(_KEYS[3], SHAPE)  # box-binding coordinates included
  y = jnp.zeros(SHAPE[0], jnp.int32)
  margin = lambda images: np.asarray(images.reshape(SHAPE[0], -1)) @ w + 3.0
  corner = np.clip(np.asarray(x) - 0.1 * np.sign(w).reshape(1, 8, 8, 1), 0.0, 1.0)
  res = attacks.apgd(robust_binary, attacks.LinfBall(x, 0.1), y, jax.random.key(0),
                     num_steps=10)
  assert margin(corner).min() > 0 and not np.any(res.success)  # nobody can be fooled
  np.testing.assert_allclose(res.loss, ce(margin(corner)), rtol=1e-2)
  x = interior(_KEYS[3])
  res = attacks.apgd(robust_binary, attacks.L2Ball(x, 0.5), y, jax.random.key(0), num_steps=10)
  optimum = ce(margin(x) - 0.5 * np.linalg.norm(w))
  assert not np.any(res.success)
  np.testing.assert_allclose(res.loss, optimum, rtol=1e-2)


RADII = {attacks.LinfBall: 0.1, attacks.L2Ball: 1.0, attacks.L1Ball: 4.0}


@pytest.mark.parametrize('ball', list(RADII))
def test_every_point_is_feasible_zero_radius_fools_nothing_and_one_key_fixes_all(ball):
  x = jax.random.uniform(_KEYS[3], SHAPE)
  y = jnp.argmax(mlp(x), -1)
  radii = jnp.asarray(np.random.default_rng(0).uniform(0.3, 1.0, SHAPE[0]) * RADII[ball],
                      jnp.float32)
  settings = dict(num_steps=10, restarts=2)
  res = attacks.apgd(mlp, ball(x, radii), y, jax.random.key(1), **settings)
  assert np.all(np.asarray(res.distance) <= radii * (1 + 1e-5) + 1e-6)
  assert res.x_adv.min() >= 0.0 and res.x_adv.max() <= 1.0
  logits = mlp(res.x_adv)
  np.testing.assert_allclose(res.loss, optax.softmax_cross_entropy_with_integer_labels(logits, y),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(res.success, jnp.argmax(logits, -1) != y)
  np.testing.assert_array_equal(res.success, res.restart_success.any(-1))
  assert res.restart_success.shape == (SHAPE[0], 2) and np.any(res.success)

  again = attacks.apgd(mlp, ball(x, radii), y, jax.random.key(1), **settings)
  jax.tree.map(np.testing.assert_array_equal, again, res)
  other = attacks.apgd(mlp, ball(x, radii), y, jax.random.key(2), **settings)
  assert not np.array_equal(other.x_adv, res.x_adv)

  zero = attacks.apgd(mlp, ball(x, jnp.zeros_like(radii)), y, jax.random.key(1), **settings)
  np.testing.assert_allclose(zero.x_adv, x, atol=1e-6)
  assert not np.any(zero.success)


def _assert_same_result(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_targeted_early_exit_gives_the_result_of_every_step():
  """APGD-T: one run per target; the loop of each target stops once every example has
  succeeded (in this or an earlier target), with the result of running every step."""
  x = jax.random.uniform(_KEYS[3], SHAPE)
  y = jnp.argmax(blocks(x), -1)
  calls = []

  def counting(images):
    jax.debug.callback(lambda: calls.append(None))
    return blocks(images)

  settings = dict(num_steps=30, restarts=2, loss='dlr_targeted', num_targets=3, chunk_size=0)
  runs = {}
  for early_exit in (True, False):
    calls.clear()
    runs[early_exit] = attacks.apgd(counting, attacks.LinfBall(x, 0.3), y, jax.random.key(3),
                                    early_exit=early_exit, **settings)
    jax.block_until_ready(runs[early_exit])
    runs[early_exit, 'calls'] = len(calls) - 1  # the clean logits that pick the targets
  _assert_same_result(runs[True], runs[False])
  assert np.all(runs[True].success)
  assert runs[False, 'calls'] == 3 * (30 + 1)  # per target: the start and every step
  assert runs[True, 'calls'] < 30  # all succeeded within the first target
  assert np.all(np.asarray(runs[True].distance) <= 0.3 + 1e-6)


def test_errors_for_too_few_classes_targets_and_unknown_losses():
  x = interior(_KEYS[3])
  y = jnp.zeros(SHAPE[0], jnp.int32)
  run = lambda fn, **kw: attacks.apgd(fn, attacks.LinfBall(x, 0.1), y, jax.random.key(0),
                                      num_steps=2, **kw)
  with pytest.raises(UserError, match='at least 3 classes'):
    run(robust_binary, loss='dlr')
  with pytest.raises(UserError, match=r'num_targets must be in \[1, classes - 1 = 9\], got 10'):
    run(mlp, loss='dlr_targeted', num_targets=10)
  with pytest.raises(UserError, match='unknown APGD loss'):
    run(mlp, loss='margin')


def test_registry_builds_each_entry_and_validates_its_settings():
  x = jax.random.uniform(_KEYS[3], SHAPE)
  batch = {'image': x, 'label': jnp.argmax(mlp(x), -1)}
  entries = {'apgd_ce': dict(norm='l2', epsilon=1.0), 'apgd_dlr': dict(epsilon=0.1),
             'apgd_t': dict(norm='linf', epsilon=0.1, num_targets=2)}
  for name, spec in entries.items():
    spec = dict(attack=name, num_steps=10, restarts=2, **spec)
    res = attacks.build(spec)(mlp, batch, jax.random.key(1))
    assert np.all(np.asarray(res.distance) <= spec['epsilon'] * (1 + 1e-5))
    assert attacks.settings(spec)['norm'] == spec.get('norm', 'linf')
  direct = attacks.apgd(mlp, attacks.L2Ball(x, 1.0), batch['label'], jax.random.key(1),
                        num_steps=10, restarts=2)
  built = attacks.build(dict(attack='apgd_ce', norm='l2', epsilon=1.0, num_steps=10,
                             restarts=2))(mlp, batch, jax.random.key(1))
  _assert_same_result(built, direct)  # the entry is apgd with loss 'ce' on the L2 ball
  dlr = attacks.build(dict(attack='apgd_dlr', epsilon=0.1, num_steps=10, restarts=2))(
      mlp, batch, jax.random.key(1))
  np.testing.assert_allclose(dlr.loss, losses.dlr(mlp(dlr.x_adv), batch['label']), rtol=1e-4,
                             atol=1e-6)
  bad = {'norm': 'l3', 'epsilon': float('nan'), 'num_targets': 0, 'rho': 1.5}
  for key, value in bad.items():
    spec = {'attack': 'apgd_t', 'epsilon': 0.1, key: value}
    with pytest.raises(UserError, match=key):
      attacks.validate(spec)
  with pytest.raises(UserError, match='finite'):
    attacks.validate(dict(attack='apgd_ce', epsilon=float('inf')))
  for setting in ('num_targets', 'loss'):  # fixed by the entry, or not its own
    with pytest.raises(UserError, match='has no setting'):
      attacks.validate({'attack': 'apgd_ce', 'epsilon': 0.1, setting: 3})
