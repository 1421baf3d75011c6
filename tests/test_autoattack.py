"""AutoAttack's cascade on a linear classifier: every point counted robust survived every stage,
stages run only on the points still robust (counted classifier calls), the chunked robust-first
execution is the stage's own result, and the sanity checks fire on models made to trip them."""

import os
import re
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advgen import attacks
from advgen.attacks.autoattack import MISCLASSIFIED, ROBUST, plan, stage_accuracy
from advgen.cli import load_config
from advgen.errors import UserError
from advgen.studies import attack as attack_study
from conftest import ROOT

B, SIDE, CLASSES = 12, 6, 10
SMALL = dict(num_steps=5, num_queries=20)
_SEEN = []  # images per classifier call, appended on the host as the compiled programs run
W = jax.random.normal(jax.random.key(0), (SIDE * SIDE, CLASSES)) * 0.5
B0 = jax.random.normal(jax.random.key(1), (CLASSES,)) * 0.1


def linear(x):
  return x.reshape(x.shape[0], -1) @ W + B0


def counted(x):
  """The linear model, counting the images of each call (one function: one compile per test)."""
  size = x.shape[0]
  jax.debug.callback(lambda: _SEEN.append(size))
  return linear(x)


def images_seen(run):
  """(result, images the classifier saw while `run()` ran)."""
  jax.effects_barrier()
  _SEEN.clear()
  out = jax.block_until_ready(run())
  jax.effects_barrier()
  return out, sum(_SEEN)


@pytest.fixture(scope='module')
def batch():
  x = jax.random.uniform(jax.random.key(2), (B, SIDE, SIDE, 1))
  clean = jnp.argmax(linear(x), -1)
  y = clean.at[:3].set((clean[:3] + 1) % CLASSES)  # the first three are wrong when clean
  return x, y


@pytest.fixture(scope='module')
def standard(batch):
  x, y = batch
  run = lambda eps, seed=3: attacks.autoattack(counted, x, y, jax.random.key(seed),
                                               epsilon=eps, chunk_size=4, **SMALL)
  return {eps: jax.device_get(run(eps)) for eps in (0.0, 0.05)}, run


def test_a_point_is_robust_only_if_no_stage_broke_it(batch, standard):
  x, y = batch
  res = standard[0][0.05]
  assert res.names == ('apgd_ce', 'apgd_t', 'fab_t', 'square')
  clean_wrong = np.asarray(jnp.argmax(linear(x), -1) != y)
  np.testing.assert_array_equal(res.stage == MISCLASSIFIED, clean_wrong)
  broken = res.stage >= 0
  assert broken.any() and (res.stage == ROBUST).any()  # the radius splits the batch
  np.testing.assert_array_equal(res.success, broken | clean_wrong)
  after = res.robust_after
  assert np.all(after[:, 1:] <= after[:, :-1])  # robustness is only ever lost
  for s in range(len(res.names)):  # robust after stage s: correct and not broken by 0..s
    np.testing.assert_array_equal(after[:, s], ~clean_wrong & ~((res.stage >= 0) &
                                                                (res.stage <= s)))
  fooled = np.asarray(jnp.argmax(linear(jnp.asarray(res.x_adv)), -1) != y)
  assert np.all(fooled[broken])  # the breaking stage's point is adversarial
  np.testing.assert_array_equal(res.x_adv[~broken], np.asarray(x)[~broken])
  accuracy = stage_accuracy(res)
  assert accuracy['robust_accuracy'] == pytest.approx(np.mean(res.stage == ROBUST))
  assert accuracy['robust_accuracy'] <= accuracy['robust_accuracy_apgd_ce'] <= (
      accuracy['clean_accuracy'])


def test_every_returned_point_is_inside_the_ball_and_the_box(batch, standard):
  x, _ = batch
  res = standard[0][0.05]
  assert np.all((res.x_adv >= 0) & (res.x_adv <= 1))
  linf = np.max(np.abs(res.x_adv - np.asarray(x)).reshape(B, -1), axis=-1)
  assert np.all(linf <= 0.05 + 1e-5)
  np.testing.assert_allclose(res.distance, linf, atol=1e-6)


def test_epsilon_zero_gives_clean_accuracy(batch, standard):
  res = standard[0][0.0]
  accuracy = stage_accuracy(res)
  assert accuracy['robust_accuracy'] == accuracy['clean_accuracy'] == 0.75
  np.testing.assert_array_equal(res.x_adv, np.asarray(batch[0]))


def test_one_key_fixes_every_random_choice(standard):
  again = jax.device_get(standard[1](0.05))
  for name in ('x_adv', 'stage', 'robust_after', 'logits'):
    np.testing.assert_array_equal(getattr(again, name), getattr(standard[0][0.05], name))


def test_robust_accuracy_is_at_most_a_deterministic_stages_own(batch, standard):
  """FAB-T from x (one restart) decides each point alone, so the cascade that runs it on every
  point still robust cannot be more robust than FAB-T by itself."""
  x, y = batch
  own = attacks.fab(counted, x, y, jax.random.key(4), epsilon=0.05, targeted=True, num_steps=5,
                    chunk_size=0)
  correct = np.asarray(jnp.argmax(linear(x), -1) == y)
  fab_robust = np.mean(correct & ~np.asarray(own.success))
  assert stage_accuracy(standard[0][0.05])['robust_accuracy'] <= fab_robust


def _fab_t(x, y, eps):
  return attacks.autoattack(counted, x, y, jax.random.key(5), epsilon=eps, version='custom',
                            attacks_to_run=('fab_t',), num_steps=5, chunk_size=4)


def test_chunked_robust_first_stage_equals_the_stage_on_the_whole_batch(batch):
  x, y = batch
  cascade = _fab_t(x, y, 0.05)
  whole = attacks.fab(counted, x, y, jax.random.key(6), epsilon=0.05, targeted=True, num_steps=5,
                      chunk_size=0)
  correct = np.asarray(jnp.argmax(linear(x), -1) == y)
  broken = np.asarray(cascade.stage) == 0
  assert broken.any() and (correct & ~broken).any()
  np.testing.assert_array_equal(broken, correct & np.asarray(whole.success))
  np.testing.assert_allclose(np.asarray(cascade.x_adv)[broken], np.asarray(whole.x_adv)[broken],
                             atol=1e-6)


def test_stages_run_only_on_the_points_still_robust(batch):
  """Three chunks of robust points cost three times one chunk; no robust point, no stage."""
  x, y = batch
  clean = jnp.argmax(linear(x), -1)
  wrong = (clean + 1) % CLASSES
  unbreakable = 1e-4
  _, all_robust = images_seen(lambda: _fab_t(x, clean, unbreakable))
  one_chunk = jnp.where(jnp.arange(B) < 4, clean, wrong)
  res, one = images_seen(lambda: _fab_t(x, one_chunk, unbreakable))
  assert np.sum(res.stage == ROBUST) == 4
  _, none = images_seen(lambda: _fab_t(x, wrong, unbreakable))
  assert none == B  # the clean check alone
  assert one > B and all_robust - B == 3 * (one - B)


def test_checks_fire_on_models_made_to_trip_them(batch):
  x, y = batch
  key = jax.random.key(7)
  assert attacks.autoattack_checks(linear, x, y, key) == []
  probabilities = attacks.autoattack_checks(lambda a: jax.nn.softmax(linear(a)), x, y, key)
  assert len(probabilities) == 1 and 'probabilities' in probabilities[0]
  rng = np.random.default_rng(0)
  noisy = lambda a: linear(a) + rng.normal(size=(a.shape[0], CLASSES)).astype(np.float32)
  randomized = attacks.autoattack_checks(noisy, x, y, key)
  assert len(randomized) == 1 and "version='rand'" in randomized[0]
  assert attacks.autoattack_checks(noisy, x, y, key, version='rand', randomized=False) == []
  masked = attacks.autoattack_checks(lambda a: linear(jnp.round(a)), x, y, key)
  assert len(masked) == 1 and masked[0].startswith(f'{B} of {B} points')
  three = attacks.autoattack_checks(lambda a: linear(a)[:, :3], x, y % 3, key)
  assert [w.split(':')[0] for w in three] == ['apgd_t left out', 'fab_t']
  assert 'capped at classes - 1 = 2' in three[1]


def test_versions_are_the_authors():
  names = lambda *args: [name for name, _ in plan(*args)[0]]
  assert names('linf', 'standard', 10) == ['apgd_ce', 'apgd_t', 'fab_t', 'square']
  assert names('l1', 'standard', 10) == ['apgd_ce', 'apgd_t']
  assert names('l2', 'plus', 10) == ['apgd_ce', 'apgd_dlr', 'fab', 'square', 'apgd_t', 'fab_t']
  assert names('linf', 'rand', 10) == ['apgd_ce', 'apgd_dlr']
  assert names('linf', 'rand', 2) == ['apgd_ce']
  assert dict(plan('l1', 'standard', 10)[0])['apgd_ce'] == {'restarts': 5}


def test_eot_over_identical_draws_is_the_deterministic_attack(batch):
  x, y = batch
  threat = attacks.LinfBall(x, 0.05)
  plain = attacks.apgd(linear, threat, y, jax.random.key(8), num_steps=3, chunk_size=0)
  drawn = attacks.apgd(lambda a, _: linear(a), threat, y, jax.random.key(8), num_steps=3,
                       chunk_size=0, eot_iter=2)
  np.testing.assert_array_equal(plain.x_adv, drawn.x_adv)


def test_the_attack_run_reports_each_stage_next_to_stutz_pgd(trained_tiny, tmp_path):
  """configs/attack_fonts_autoattack_tiny.py through the attack run on the tiny classifiers: per
  model the robust accuracy after every stage, falling to the final one, which is the clean
  accuracy times the share of correct points not broken; the sanity warnings per model."""
  config = load_config(os.path.join(ROOT, 'configs', 'attack_fonts_autoattack_tiny.py'))
  del config.attacks['autoattack_l2']  # the L2 cascade is the same program with another ball
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained_tiny[0], workdir)
  results = attack_study.run(config, workdir)
  entry = results['attacks']['autoattack']
  assert set(results['attacks']) == {'autoattack', 'pgd_linf'}
  assert entry['settings']['version'] == 'standard' and entry['settings']['norm'] == 'linf'
  assert len(entry['warnings']) == results['num_models'] == 2
  per_model = entry['per_model']
  stages = [f'robust_accuracy_{s}' for s in ('apgd_ce', 'apgd_t', 'fab_t', 'square')]
  for k in range(2):
    after = [per_model[name][k] for name in stages]
    clean = per_model['clean_accuracy'][k]
    assert clean == pytest.approx(1 - per_model['test_error'][k])
    assert clean >= after[0] and all(a >= b for a, b in zip(after, after[1:]))
    assert per_model['robust_accuracy'][k] == after[-1]
    if clean > 0:  # (the success rate is over the correct points)
      assert after[-1] == pytest.approx(clean * (1 - per_model['success_rate'][k]))


@pytest.mark.parametrize('kwargs, message', [
    (dict(epsilon=-0.05), 'finite epsilon >= 0 for the batch, got -0.05'),
    (dict(epsilon=float('nan')), 'finite epsilon >= 0'),
    (dict(epsilon=np.full(B, 0.1)), 'one finite epsilon >= 0 for the batch'),
    (dict(epsilon=0.1, version='custom', attacks_to_run='fab'), "write ('fab',)"),
    (dict(epsilon=0.1, version='custom'), "version='custom' runs the stages of attacks_to_run, "
     'which is empty'),
    (dict(epsilon=0.1, version='custom', attacks_to_run=('pgd',)), "unknown AutoAttack stage 'pgd'"),
    (dict(epsilon=0.1, attacks_to_run=('fab',)), "attacks_to_run goes with version='custom'"),
    (dict(epsilon=0.1, norm='l1', version='custom', attacks_to_run=('square',)),
     'Square runs in the linf and l2 balls only'),
    (dict(epsilon=0.1, num_steps=0), 'num_steps and num_queries >= 1'),
])
def test_bad_settings_are_refused_before_any_work(batch, kwargs, message):
  x, y = batch
  calls = []
  model = lambda a: calls.append(1) or linear(a)
  with pytest.raises(UserError, match=re.escape(message)):
    attacks.autoattack(model, x, y, jax.random.key(0), **kwargs)
  assert calls == []  # refused before the model is called (or traced)


@pytest.mark.parametrize('spec, message', [
    ({'attack': 'autoattack', 'epsilon': 0.3, 'version': 'custom'}, 'which is empty'),
    ({'attack': 'autoattack', 'epsilon': 0.3, 'version': 'standrad'}, "unknown AutoAttack version"),
    ({'attack': 'square', 'epsilon': 0.3, 'norm': 'l1'}, 'Square runs in the linf and l2 balls'),
    ({'attack': 'apgd_ce', 'epsilon': 0.3, 'eot_iter': 2}, "has no setting 'eot_iter'"),
])
def test_the_registry_refuses_what_the_attack_would_refuse_later(spec, message):
  with pytest.raises(UserError, match=message):
    attacks.validate(spec)


def test_apgd_t_on_too_few_classes_names_the_loss_not_the_targets(batch):
  x, _ = batch
  three = lambda a: linear(a)[:, :3]
  with pytest.raises(UserError, match='the dlr_targeted loss needs at least 4 classes, the model '
                     'has 3; use the ce loss'):
    attacks.apgd(three, attacks.LinfBall(x, 0.1), jnp.zeros(B, jnp.int32), jax.random.key(0),
                 loss='dlr_targeted', num_targets=9, num_steps=2)


def test_the_cascade_runs_square_on_the_references_unscaled_schedule(batch, monkeypatch):
  """The reference's AutoAttack builds Square with resc_schedule=False."""
  autoattack_module = sys.modules['advgen.attacks.autoattack']  # attacks.autoattack: the function
  seen = []
  real = autoattack_module.square
  monkeypatch.setattr(autoattack_module, 'square',
                      lambda *a, **k: seen.append(k.get('rescale_schedule')) or real(*a, **k))
  x, y = batch
  attacks.autoattack(linear, x[:4], y[:4], jax.random.key(9), epsilon=0.3, version='custom',
                     attacks_to_run=('square',), num_queries=3, chunk_size=4)
  assert seen == [False]
