"""FAB: the exact projection onto a hyperplane within the box, and the attack on affine models,
where the smallest adversarial perturbation is known in closed form."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from advgen import attacks
from advgen.attacks.fab import project
from advgen.errors import UserError

_NORM = {'linf': lambda d: np.abs(d).max(-1), 'l2': lambda d: np.linalg.norm(d, axis=-1),
         'l1': lambda d: np.abs(d).sum(-1)}
_DUAL_ORD = {'linf': 1, 'l2': 2, 'l1': np.inf}

_RNG = np.random.default_rng(1)
_W = _RNG.normal(size=(16, 4)).astype(np.float32)  # 4 classes on 4x4x1 images
_B = np.array([0.02, 0.0, -0.01, 0.01], np.float32)
_W_BINARY = _RNG.normal(size=(16, 2)).astype(np.float32)
_INTERIOR = 5  # the first examples sit near 0.5, where the box stays inactive; 3 more on its
_X = np.concatenate([_RNG.uniform(0.45, 0.55, (_INTERIOR, 4, 4, 1)),  # vertices, where it binds
                     _RNG.integers(0, 2, (3, 4, 4, 1))]).astype(np.float32)


def multi(x):
  return (x.reshape(x.shape[0], -1) - 0.5) @ _W + _B


def binary(x):
  return (x.reshape(x.shape[0], -1) - 0.5) @ _W_BINARY


@functools.partial(jax.jit, static_argnames='norm')
def _project(t, w, c, norm):
  return project(t, w, c, norm)


def _corner(t, w, c):
  """The step to the box vertex nearest the hyperplane (where the hyperplane misses the box)."""
  toward = -np.sign(c) * np.sign(w)
  return np.where(toward < 0, -t, np.where(toward > 0, 1.0 - t, 0.0))


def _brute_force(t, w, c, norm):
  """The smallest norm of d with <w, d> = -c and t + d in [0, 1] (None: infeasible), in float64:
  L2 by enumerating which coordinates sit at a bound, L-inf and L1 as linear programs."""
  n = t.size
  if norm == 'l2':
    best = None
    for states in itertools.product((-1, 0, 1), repeat=n):  # at 0, free, at 1
      states = np.array(states)
      d = np.where(states < 0, -t, np.where(states > 0, 1.0 - t, 0.0))
      free = states == 0
      rest = -c - w[~free] @ d[~free]
      if np.sum(w[free] ** 2) > 0:
        d[free] = rest * w[free] / np.sum(w[free] ** 2)
      elif abs(rest) > 1e-9:
        continue
      if np.all(t + d >= -1e-9) and np.all(t + d <= 1 + 1e-9):
        best = np.linalg.norm(d) if best is None else min(best, np.linalg.norm(d))
    return best
  bounds = [(-ti, 1.0 - ti) for ti in t]
  if norm == 'linf':  # variables (d, s): min s, -s <= d_i <= s
    cost = np.r_[np.zeros(n), 1.0]
    a_ub = np.block([[np.eye(n), -np.ones((n, 1))], [-np.eye(n), -np.ones((n, 1))]])
    lp = optimize.linprog(cost, a_ub, np.zeros(2 * n), np.r_[w, 0.0][None], [-c],
                          bounds + [(0, None)])
  else:  # variables (p, q) with d = p - q, both >= 0
    lp = optimize.linprog(np.ones(2 * n), A_eq=np.r_[w, -w][None], b_eq=[-c],
                          bounds=[(0, 1.0 - ti) for ti in t] + [(0, ti) for ti in t])
  return lp.fun if lp.status == 0 else None


@pytest.mark.parametrize('norm', ['linf', 'l2', 'l1'])
def test_projection_matches_brute_force_in_three_dimensions(norm):
  rng = np.random.default_rng(0)
  t = rng.uniform(size=(60, 3))
  t[:10, 0] = 1.0  # points on the box's faces
  w = rng.normal(size=(60, 3))
  w[10:15, 1] = 0.0  # coordinates the hyperplane ignores
  c = rng.normal(size=60)
  d = np.asarray(_project(*(jnp.asarray(a, jnp.float32) for a in (t, w, c)), norm), np.float64)
  assert np.all(t + d >= -1e-6) and np.all(t + d <= 1 + 1e-6)
  feasible = 0
  for i in range(60):
    best = _brute_force(t[i], w[i], c[i], norm)
    if best is None:
      np.testing.assert_allclose(d[i], _corner(t[i], w[i], c[i]), atol=1e-6)
    else:
      feasible += 1
      np.testing.assert_allclose(w[i] @ d[i], -c[i], atol=1e-5)
      np.testing.assert_allclose(_NORM[norm](d[i]), best, rtol=1e-4, atol=1e-6)
  assert 20 <= feasible <= 50  # both cases are exercised


@pytest.mark.parametrize('norm', ['linf', 'l2', 'l1'])
def test_projection_is_the_closed_form_when_the_box_is_inactive(norm):
  rng = np.random.default_rng(1)
  t = np.full((4, 50), 0.5)
  w = rng.normal(size=(4, 50))
  c = np.array([0.3, -0.2, 0.05, 0.0])
  d = np.asarray(_project(*(jnp.asarray(a, jnp.float32) for a in (t, w, c)), norm))
  if norm == 'l2':
    expected = -c[:, None] * w / np.sum(w ** 2, -1, keepdims=True)
  elif norm == 'linf':
    expected = -c[:, None] * np.sign(w) / np.abs(w).sum(-1, keepdims=True)
  else:
    top = np.abs(w) == np.abs(w).max(-1, keepdims=True)
    expected = -c[:, None] * top / (w * top).sum(-1, keepdims=True)
  assert np.all(np.abs(expected) < 0.5)  # the box is indeed inactive
  np.testing.assert_allclose(d, expected, atol=1e-6)


def _minimal(logits_fn, weights, norm, classes=None):
  """Per example: the smallest `norm` of a perturbation within the box that reaches a boundary
  f_k = f_y (k in `classes` (B, M), default every other class), by linear programs (L-inf, L1)
  or bisection on the multiplier of the KKT solution clip(lam * |w|) (L2), in float64."""
  logits = np.asarray(logits_fn(_X), np.float64)
  y = logits.argmax(-1)
  flat = _X.reshape(len(_X), -1).astype(np.float64)
  out = []
  for i, label in enumerate(y):
    ks = [k for k in range(logits.shape[1]) if k != label] if classes is None else classes[i]
    best = np.inf
    for k in ks:
      w, c = weights[:, k] - weights[:, label], logits[i, k] - logits[i, label]
      if norm == 'l2':
        cap = np.where(-np.sign(c) * w < 0, flat[i], 1.0 - flat[i])
        reduce = lambda lam: np.sum(np.abs(w) * np.minimum(lam * np.abs(w), cap))
        low, high = 0.0, 1e3
        if reduce(high) < abs(c):
          continue
        for _ in range(200):
          low, high = ((low + high) / 2, high) if reduce((low + high) / 2) < abs(c) else (
              low, (low + high) / 2)
        distance = np.linalg.norm(np.minimum(high * np.abs(w), cap))
      else:
        distance = _brute_force(flat[i], w, c, norm)
      best = min(best, np.inf if distance is None else distance)
    out.append(best)
  return np.array(out), jnp.asarray(y)


@pytest.mark.parametrize('norm', ['linf', 'l2', 'l1'])
def test_fab_finds_the_minimal_perturbation_of_an_affine_classifier(norm):
  minimal, y = _minimal(multi, _W, norm)
  # Near 0.5 the minimal perturbation is the unconstrained closed form |z_y - z_k| / ||w||_dual.
  logits = np.asarray(multi(_X))
  closed = [min((logits[i, y[i]] - logits[i, k]) / np.linalg.norm(_W[:, y[i]] - _W[:, k],
                                                                   _DUAL_ORD[norm])
                for k in range(4) if k != y[i]) for i in range(_INTERIOR)]
  np.testing.assert_allclose(minimal[:_INTERIOR], closed, rtol=1e-5)
  assert np.any(minimal[_INTERIOR:] > 1.001 * np.array([  # the box binds somewhere
      min((logits[i, y[i]] - logits[i, k]) / np.linalg.norm(_W[:, y[i]] - _W[:, k],
                                                             _DUAL_ORD[norm])
          for k in range(4) if k != y[i]) for i in range(_INTERIOR, len(_X))]))

  res = attacks.fab(multi, jnp.asarray(_X), y, jax.random.key(0), norm=norm, num_steps=100)
  assert np.all(res.success)
  assert np.all(np.asarray(res.logits).argmax(-1) != np.asarray(y))
  distance = np.asarray(res.distance)
  np.testing.assert_allclose(distance, _NORM[norm](np.asarray(res.x_adv - _X).reshape(8, -1)),
                             rtol=1e-5)
  assert np.all(distance >= minimal * (1 - 1e-4))
  assert np.all(distance <= minimal * 1.01)
  assert np.all(res.x_adv >= 0.0) and np.all(res.x_adv <= 1.0)


def test_fab_on_a_binary_classifier():
  minimal, y = _minimal(binary, _W_BINARY, 'linf')
  res = attacks.fab(binary, jnp.asarray(_X), y, jax.random.key(0), norm='linf', num_steps=100)
  assert np.all(res.success)
  assert np.all(np.asarray(res.distance) >= minimal * (1 - 1e-4))
  assert np.all(np.asarray(res.distance) <= minimal * 1.01)


def _targets(count):
  """The 2nd, 3rd, ... largest clean logits of the affine model: FAB-T's targets."""
  return np.argsort(-np.asarray(multi(_X)), axis=-1)[:, 1:1 + count]


def test_bounded_fab_t_succeeds_only_within_epsilon_and_early_exit_changes_nothing():
  targets = _targets(2)
  first, y = _minimal(multi, _W, 'l2', classes=targets[:, :1])
  second, _ = _minimal(multi, _W, 'l2', classes=targets[:, 1:])
  reach = np.minimum(first, second)
  gaps = np.sort(reach)
  epsilon = float((gaps[4] + gaps[5]) / 2)  # five examples within reach, three beyond
  assert gaps[5] > 1.02 * epsilon and gaps[4] * 1.02 < epsilon
  run = functools.partial(attacks.fab, multi, jnp.asarray(_X), norm='l2', num_steps=30,
                          restarts=2, targeted=True, num_targets=2)
  res = run(y=y, key=jax.random.key(3), epsilon=epsilon)
  np.testing.assert_array_equal(res.success, reach <= epsilon)
  assert np.all(res.distance <= epsilon + 1e-6)
  np.testing.assert_array_equal(np.asarray(res.x_adv)[~res.success], _X[~res.success])
  np.testing.assert_array_equal(res.restart_success, np.stack([res.success] * 2, -1))
  assert np.all(res.x_adv >= 0.0) and np.all(res.x_adv <= 1.0)

  again = run(y=y, key=jax.random.key(3), epsilon=epsilon)  # one key fixes every random choice
  jax.tree.map(np.testing.assert_array_equal, res, again)
  # Every example is broken by the first run (first target, first restart) and then stays as it
  # is, as in AutoAttack, though the second target's boundary is closer for the last example:
  # the other three runs are skipped and would change nothing.
  assert second[-1] * 1.02 < first[-1]
  wide = run(y=y, key=jax.random.key(3), epsilon=2.0)
  full = run(y=y, key=jax.random.key(3), epsilon=2.0, early_exit=False)
  assert np.all(wide.success) and np.all(wide.restart_success)
  assert np.all(wide.distance <= 1.01 * first) and wide.distance[-1] > 1.01 * second[-1]
  jax.tree.map(np.testing.assert_array_equal, wide, full)

  # An input the classifier already gets wrong is a success at distance 0.
  wrong = run(y=(y + 1) % 4, key=jax.random.key(3), epsilon=epsilon)
  assert np.all(wrong.success)
  np.testing.assert_array_equal(wrong.x_adv, _X)


def test_fab_t_reaches_its_targets_boundaries():
  through_targets, y = _minimal(multi, _W, 'linf', classes=_targets(2))
  minimal, _ = _minimal(multi, _W, 'linf')
  spec = {'attack': 'fab_t', 'norm': 'linf', 'num_steps': 100, 'num_targets': 2}
  res = attacks.build(spec)(multi, {'image': jnp.asarray(_X), 'label': y}, jax.random.key(0))
  assert np.all(res.success)
  assert np.all(np.asarray(res.distance) >= minimal * (1 - 1e-4))
  assert np.all(np.asarray(res.distance) <= through_targets * 1.01)

  with pytest.raises(UserError, match='num_targets'):
    attacks.fab(multi, jnp.asarray(_X), y, jax.random.key(0), targeted=True, num_targets=4)
  with pytest.raises(UserError, match='norm'):
    attacks.fab(multi, jnp.asarray(_X), y, jax.random.key(0), norm='l3')


def test_registry_builds_fab():
  minimal, y = _minimal(multi, _W, 'l1')
  spec = {'attack': 'fab', 'norm': 'l1', 'num_steps': 100}
  attack = attacks.build(spec)
  res = attack(multi, {'image': jnp.asarray(_X), 'label': y}, jax.random.key(0))
  assert np.all(res.success) and np.all(np.asarray(res.distance) <= minimal * 1.01)
  cache = attacks.fab._cache_size()
  attack(multi, {'image': jnp.asarray(1.0 - _X), 'label': y}, jax.random.key(1))
  assert attacks.fab._cache_size() == cache  # a new batch: no retrace
  attacks.validate({'attack': 'fab', 'norm': 'linf', 'epsilon': 0.1, 'restarts': 2})
  with pytest.raises(UserError, match='num_targets'):
    attacks.validate({'attack': 'fab', 'num_targets': 3})
  with pytest.raises(UserError, match='epsilon'):
    attacks.validate({'attack': 'fab_t', 'epsilon': -1.0})
