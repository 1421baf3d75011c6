"""Square Attack against a two-class linear model, whose distance to the boundary is known
exactly: |z| / ||w||_1 in L-inf and |z| / ||w||_2 in L2, z = w.(x - 0.5) the logit gap.

The model records the logits of every call and its gradient raises, so the tests see every
query the attack makes and that it never differentiates. Each image has a few pixels at 0 and 1
(the box binds there); the rest is shifted so that example b lies at _RATIOS[b] * epsilon from
the boundary, on alternating sides; the last example gets the wrong label."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from advgen import attacks
from advgen.errors import UserError

square_lib = importlib.import_module('advgen.attacks.square')  # the function shadows the module

_KEYS = jax.random.split(jax.random.key(0), 2)
_W = np.asarray(jnp.abs(jax.random.normal(_KEYS[0], (128,)))) + 0.1
_EPS = {'linf': 0.05, 'l2': 0.5}
_DUAL = {'linf': 1, 'l2': 2}
_RATIOS = np.array([0.05, 0.1, 0.12, 0.15, 1.01, 1.1, 1.5, 0.5])
_BROKEN, _FAR = slice(0, 4), slice(4, 7)
_QUERIES = 200
_CALLS, _SHOWN = [], []


def _gap(x):
  return (np.asarray(x).reshape(len(x), -1) - 0.5) @ _W


def _images(norm):
  """The batch (8, 8, 8, 2) for `norm` and its labels (the last one wrong)."""
  u = np.array(jax.random.uniform(_KEYS[1], (8, 128), minval=0.35, maxval=0.65))
  u[:, :4], u[:, 4:8] = 0.0, 1.0
  free = np.ones(128)
  free[:8] = 0.0
  direction = free if norm == 'linf' else free * _W
  sides = np.where(np.arange(8) % 2 == 0, 1.0, -1.0)
  target = sides * _RATIOS * _EPS[norm] * np.linalg.norm(_W, _DUAL[norm])
  x = u + ((target - _gap(u)) / (direction @ _W))[:, None] * direction
  y = (sides > 0).astype(np.int32)
  y[-1] = 1 - y[-1]
  return jnp.asarray(x.reshape(8, 8, 8, 2), jnp.float32), jnp.asarray(y)


def _linear(x):
  gap = (x.reshape(x.shape[0], -1) - 0.5) @ jnp.asarray(_W, jnp.float32)
  return jnp.stack([jnp.zeros_like(gap), gap], axis=-1)


@jax.custom_vjp
def _no_gradient(x):
  return _linear(x)


def _raise(residuals, cotangent):
  raise AssertionError('Square asked for a gradient')


_no_gradient.defvjp(lambda x: (_linear(x), None), _raise)


def _record(images, logits):
  _SHOWN.append(np.asarray(images))
  _CALLS.append(np.asarray(logits))


def model(x):
  jax.debug.callback(_record, x, _linear(x), ordered=True)
  return _no_gradient(x)


def _run(norm, x, y, key=1, **settings):
  """Square with the recorded model, one call per batch: the result and the logits (calls, B, 2)
  and images (calls, B, ...) of every call."""
  _CALLS.clear()
  _SHOWN.clear()
  res = attacks.square(model, x, y, jax.random.key(key), norm=norm, epsilon=_EPS[norm],
                       num_queries=_QUERIES, chunk_size=0, **settings)
  jax.effects_barrier()
  return res, np.stack(_CALLS), np.stack(_SHOWN)


def _margin(logits, y):
  return np.where(np.asarray(y) == 1, 1.0, -1.0) * (logits[..., 1] - logits[..., 0])


@pytest.fixture(scope='module', params=['linf', 'l2'])
def attacked(request):
  norm = request.param
  x, y = _images(norm)
  return (norm, x, y) + _run(norm, x, y)


def test_it_breaks_close_points_and_never_farther_than_epsilon(attacked):
  norm, x, y, res, _, _ = attacked
  distance = np.abs(_gap(x)) / np.linalg.norm(_W, _DUAL[norm]) / _EPS[norm]
  np.testing.assert_allclose(distance, _RATIOS, rtol=1e-4)  # the closed form of the fixture
  success = np.asarray(res.success)
  assert np.all(success[_BROKEN]) and not np.any(success[_FAR]), success
  assert success[-1] and np.array_equal(res.x_adv[-1], x[-1])  # mislabelled: left alone
  assert np.array_equal(success, np.asarray(res.logits).argmax(-1) != np.asarray(y))


def test_every_point_stays_in_the_ball_and_the_box(attacked):
  norm, x, _, res, _, shown = attacked
  delta = np.asarray(res.x_adv - x)
  size = np.linalg.norm(delta.reshape(8, -1), axis=-1) if norm == 'l2' else np.abs(delta).max(
      axis=(1, 2, 3))
  assert np.all(size <= _EPS[norm] * (1 + 1e-5)), size
  np.testing.assert_allclose(res.distance, size, rtol=1e-5)
  assert np.all(res.x_adv >= 0.0) and np.all(res.x_adv <= 1.0)
  shown = shown[1:] - np.asarray(x)[None]  # every point the model was shown, but x
  size = np.linalg.norm(shown.reshape(len(shown), 8, -1), axis=-1) if norm == 'l2' else np.abs(
      shown).max(axis=(2, 3, 4))
  assert np.all(size <= _EPS[norm] * (1 + 1e-5))
  assert np.all(shown + np.asarray(x)[None] >= 0.0) and np.all(shown + np.asarray(x)[None] <= 1.0)


def test_queries_are_counted_exactly_and_each_example_stops_at_its_first_success(attacked):
  """Call 0 is the clean check, call 1 the start, call 1 + i iteration i. An example costs the
  calls up to its first success; the mislabelled one costs the clean check only."""
  _, _, y, res, calls, _ = attacked
  margins = _margin(calls, y)  # (calls, B)
  queries = np.asarray(res.queries)
  assert queries[-1] == 1
  assert np.all(queries[_FAR] == _QUERIES + 2)
  assert len(calls) == queries.max()  # the loop exits once every example has succeeded
  for b in range(7):
    hits = np.flatnonzero(margins[1:, b] < 0)
    first = hits[0] + 1 if len(hits) else len(calls) - 1
    assert queries[b] == first + 1, (b, queries[b], first)
    if len(hits):
      np.testing.assert_array_equal(res.logits[b], calls[first, b])


@pytest.mark.parametrize('attacked', ['linf'], indirect=True)
def test_each_linf_candidate_changes_one_window_of_the_scheduled_side(attacked):
  """Replaying the accepted points: candidate i differs from the point it was drawn from
  inside one window no larger than the schedule's side at iteration i."""
  _, _, y, res, calls, shown = attacked
  sides = square_lib.window_sides(square_lib.p_schedule(_QUERIES, 0.8), 'linf', (8, 8, 2))
  margins = _margin(calls, y)
  best, best_margin = shown[1].copy(), margins[1].copy()
  widest = np.zeros(len(calls) - 2, int)
  for i in range(len(calls) - 2):
    candidate = shown[2 + i]
    for b in np.flatnonzero(best_margin[:7] >= 0):
      rows, cols = np.nonzero(np.any(candidate[b] != best[b], axis=-1))
      if len(rows):
        widest[i] = max(widest[i], np.ptp(rows) + 1, np.ptp(cols) + 1)
    better = margins[2 + i] < best_margin
    best[better], best_margin[better] = candidate[better], margins[2 + i][better]
  assert np.all(widest <= sides[:len(widest)]), np.flatnonzero(widest > sides[:len(widest)])
  assert widest[0] == sides[0] == 7 and sides[-1] == 1


def test_the_loop_exits_once_every_example_has_succeeded():
  """With the far examples given wrong labels (nothing to do), the loop stops at the last
  first success; the others come out as in the full batch."""
  x, y = _images('linf')
  full, _, _ = _run('linf', x, y)
  res, calls, _ = _run('linf', x, y.at[_FAR].set(1 - y[_FAR]))
  assert np.all(res.queries[_FAR] == 1)
  assert len(calls) == res.queries.max() < _QUERIES + 2
  np.testing.assert_array_equal(res.x_adv[_BROKEN], full.x_adv[_BROKEN])
  np.testing.assert_array_equal(res.queries[_BROKEN], full.queries[_BROKEN])


def test_the_margin_only_drops(attacked):
  """A never-broken example ends at the lowest margin of all its queries, the start included
  (a candidate is kept exactly when its margin is lower); every result is below its start."""
  _, _, y, res, calls, _ = attacked
  margins = _margin(calls, y)
  result = _margin(np.asarray(res.logits), y)
  np.testing.assert_allclose(-np.asarray(res.loss), result, rtol=1e-6)
  np.testing.assert_array_equal(result[_FAR], margins[1:, _FAR].min(axis=0))
  assert np.all(result[:7] <= margins[1, :7])
  assert np.all(result[_FAR] < margins[1, _FAR])  # it made progress


def test_it_never_differentiates():
  x, _ = _images('linf')
  with pytest.raises(AssertionError, match='asked for a gradient'):
    jax.grad(lambda x: model(x).sum())(x)


def test_an_example_does_not_depend_on_the_rest_of_the_batch(attacked):
  """Same key and batch size: example 1 comes out the same when the others are replaced; the
  result is the same for the same key and differs for another one."""
  norm, x, y, res, _, _ = attacked
  others = jnp.asarray(np.roll(np.arange(8), 3))
  mixed_x, mixed_y = x[others].at[1].set(x[1]), y[others].at[1].set(y[1])
  mixed, *_ = _run(norm, mixed_x, mixed_y)
  np.testing.assert_array_equal(mixed.x_adv[1], res.x_adv[1])
  assert mixed.queries[1] == res.queries[1]
  again, *_ = _run(norm, x, y)
  np.testing.assert_array_equal(again.x_adv, res.x_adv)
  np.testing.assert_array_equal(again.queries, res.queries)
  other, *_ = _run(norm, x, y, key=2)
  assert not np.array_equal(other.x_adv[_FAR], res.x_adv[_FAR])


def test_the_schedule_halves_p_after_the_authors_iterations():
  p = square_lib.p_schedule(10000, 0.8)
  for i, halvings in ((0, 0), (10, 0), (11, 1), (50, 1), (51, 2), (200, 2), (201, 3), (500, 3),
                      (501, 4), (1000, 4), (1001, 5), (2001, 6), (4001, 7), (6001, 8),
                      (8000, 8), (8001, 9), (9999, 9)):
    assert p[i] == 0.8 / 2**halvings, (i, p[i])
  rescaled = square_lib.p_schedule(5000, 0.8)  # a 5000-query budget: iteration i counts as 2i
  assert rescaled[5] == 0.8 and rescaled[6] == 0.4 and rescaled[4001] == 0.8 / 2**9
  assert len(rescaled) == 5000
  kept = square_lib.p_schedule(5000, 0.8, rescale=False)  # as AutoAttack runs Square
  np.testing.assert_array_equal(kept, p[:5000])
  # 28 x 28 x 3: round(sqrt(0.8 * 784)) = 25, then down to one pixel (L-inf) or three (L2)
  sides = square_lib.window_sides(p, 'linf', (28, 28, 3))
  assert sides[0] == 25 and sides[11] == 18 and sides[-1] == 1
  assert set(square_lib.window_sides(p, 'l2', (28, 28, 3))) == {25, 19, 13, 9, 7, 5, 3}


def test_the_linf_start_is_stripes_of_plus_minus_epsilon():
  x = jnp.full((4, 8, 8, 2), 0.5)
  start = np.asarray(square_lib._linf_start(jax.random.key(3), x, 0.1)) - 0.5
  np.testing.assert_allclose(np.abs(start), 0.1, rtol=1e-6)
  assert np.all(start == start[:, :1])  # constant down each column, per channel
  assert len(np.unique(np.sign(start[:, 0]))) == 2


def test_an_linf_step_sets_one_window_per_channel():
  x = jnp.full((16, 8, 8, 2), 0.5)
  best = square_lib._linf_start(jax.random.key(3), x, 0.1)
  candidate = square_lib._linf_candidate(jax.random.key(4), x, best, 0.1, 3)
  changed = np.any(np.asarray(candidate != best), axis=-1)
  for b in range(16):
    rows, cols = np.nonzero(changed[b])
    assert len(rows) and np.ptp(rows) < 3 and np.ptp(cols) < 3
  np.testing.assert_allclose(np.abs(np.asarray(candidate) - 0.5), 0.1, rtol=1e-6)


def test_the_l2_pattern_is_the_authors_pyramid():
  top = np.array([0.25, 1.25, 0.25])
  bottom = np.array([[0.25, 0.25, 0.25], [0.25, 1.25, 0.25]])
  expected = np.concatenate([top[None] / np.linalg.norm(top), -bottom / np.linalg.norm(bottom)])
  np.testing.assert_allclose(square_lib.eta(3), expected / np.linalg.norm(expected))
  np.testing.assert_allclose(np.linalg.norm(square_lib.eta(7)), 1.0)


def test_an_l2_step_keeps_the_norm_at_epsilon():
  """Away from the box, the start and every candidate lie on the sphere of radius epsilon."""
  x = jnp.full((16, 25, 25, 2), 0.5)
  best = square_lib._l2_start(jax.random.key(3), x, 0.2)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(best - x).reshape(16, -1), axis=-1), 0.2,
                             rtol=1e-5)
  pattern = jnp.zeros((9, 9)).at[:5, :5].set(square_lib.eta(5))
  candidate = square_lib._l2_candidate(jax.random.key(4), x, best, 0.2, 5, pattern)
  assert not np.array_equal(candidate, best)
  np.testing.assert_allclose(
      np.linalg.norm(np.asarray(candidate - x).reshape(16, -1), axis=-1), 0.2, rtol=1e-5)


def test_restarts_attack_only_the_robust_examples_and_the_entry_builds_it():
  x, y = _images('linf')
  spec = {'attack': 'square', 'norm': 'linf', 'epsilon': _EPS['linf'], 'num_queries': _QUERIES,
          'restarts': 2, 'chunk_size': 0}
  _CALLS.clear()
  res = attacks.build(spec)(model, {'image': x, 'label': y}, jax.random.key(1))
  jax.effects_barrier()
  assert np.all(res.queries[_FAR] == 1 + 2 * (_QUERIES + 1))
  single, *_ = _run('linf', x, y)
  np.testing.assert_array_equal(res.queries[_BROKEN], single.queries[_BROKEN])
  np.testing.assert_array_equal(res.x_adv[_BROKEN], single.x_adv[_BROKEN])
  assert np.array_equal(res.restart_success[:, 0], single.success)
  assert np.array_equal(res.restart_success[:, 1], res.success)
  with pytest.raises(UserError, match='norm'):
    attacks.build({**spec, 'norm': 'l1'})(model, {'image': x, 'label': y}, jax.random.key(1))


def test_targeted_moves_to_the_target_by_its_cross_entropy():
  """Three classes: every example reaches its target (the next class; the last one is there
  already and costs one query), and `loss` is minus the target's cross-entropy."""
  w = jax.random.normal(jax.random.key(5), (128, 3))
  three = lambda images: (images.reshape(images.shape[0], -1) - 0.5) @ w
  x, _ = _images('linf')
  prediction = three(x).argmax(-1)
  target = ((prediction + 1) % 3).at[-1].set(prediction[-1])
  res = attacks.square(three, x, target, jax.random.key(1), epsilon=0.1, num_queries=_QUERIES,
                       targeted=True, chunk_size=0)
  assert np.all(res.success) and np.array_equal(res.logits.argmax(-1), target)
  assert res.queries[-1] == 1 and np.all(res.queries[:-1] > 2)
  np.testing.assert_allclose(res.loss, -optax.softmax_cross_entropy_with_integer_labels(
      three(res.x_adv), target), rtol=1e-5)
