import json
import os
import shutil
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from advgen import attacks, evaluate, manifold, models
from advgen.cli import load_config
from advgen.data import fonts
from advgen.errors import UserError
from advgen.models import stacked
from advgen.studies import attack as attack_study, distances, runs
from conftest import ROOT, built_once


@pytest.fixture(scope='module')
def attacked(trained_tiny, tmp_path_factory):
  config = load_config(os.path.join(ROOT, 'configs', 'attack_fonts_tiny.py'))

  def attack(path):
    shutil.copytree(trained_tiny[0], path)
    attack_study.run(config, path)

  workdir = built_once(tmp_path_factory, 'attacked_tiny', attack)
  return workdir, config, json.load(open(attack_study.paths(workdir, config.name)['results']))


def test_every_configured_attack_is_reported_for_every_model(attacked):
  workdir, config, results = attacked
  out = attack_study.paths(workdir, config.name)
  assert out['dir'] == os.path.join(workdir, 'attacks', 'default')
  assert results['num_images'] == config.num_images and results['num_models'] == 2
  for name in config.attacks:
    entry = results['attacks'][name]
    per_model = entry['per_model']
    assert len(per_model['success_rate']) == 2
    for rate, any_rate, attacked, error in zip(per_model['success_rate'],
                                               per_model['success_rate_any'],
                                               per_model['num_attacked'], per_model['test_error']):
      assert 0 <= rate <= any_rate <= 1
      assert attacked == pytest.approx(config.num_images * (1 - error))
    assert entry['mean']['success_rate'] == pytest.approx(np.mean(per_model['success_rate']))
    assert [t['target'] for t in entry['transfer']] == [1, 0]
    assert entry['settings'] == attacks.settings(config.attacks[name])
  assert results['attacks']['pgd_linf']['settings']['start'] == 'gaussian_linf'
  assert os.path.getsize(out['figure']) > 0


def _over(statistic, values):
  """`statistic` of `values` as the results report it (NaN over an empty selection), for
  pytest to compare: NaN equals NaN, and a number never equals NaN."""
  return pytest.approx(float(statistic(values)) if values.size else float('nan'), nan_ok=True)


def test_examples_hold_per_example_results_and_the_first_adversarial_images(attacked):
  workdir, config, results = attacked
  with np.load(attack_study.paths(workdir, config.name)['examples']) as f:
    stored = dict(f)
  x, y = stored['image'], stored['label']
  assert x.shape == (config.num_examples, 28, 28, 1) and y.shape == (config.num_images,)
  for name in config.attacks:
    per_model = results['attacks'][name]['per_model']
    success, correct = stored[f'{name}.success'], stored['clean_correct']
    assert success.shape == (2, config.num_images)
    np.testing.assert_array_equal(stored[f'{name}.counted_success'], success & correct)
    for k in range(2):
      assert per_model['success_rate_any'][k] == _over(np.mean, success[k][correct[k]])
      assert per_model['success_rate'][k] == _over(
          np.mean, stored[f'{name}.restart_success'][k][correct[k]])
      # Which images an attack breaks depends on the CPU's float rounding: the set can be empty.
      assert per_model['l2_median'][k] == _over(
          np.median, stored[f'{name}.l2'][k][success[k] & correct[k]])
    x_adv = stored[f'{name}.x_adv']
    assert x_adv.shape == (2, config.num_examples, 28, 28, 1)
    np.testing.assert_allclose(np.sqrt(((x_adv - x) ** 2).sum((2, 3, 4))),
                               stored[f'{name}.l2'][:, :config.num_examples], rtol=1e-4,
                               atol=1e-5)
  pgd = stored['pgd_linf.x_adv'] - x
  assert np.abs(pgd).max() <= config.attacks.pgd_linf.epsilon + 1e-5 and np.abs(pgd).max() > 0


def test_distances_to_the_manifold_are_those_of_the_adversarial_examples(attacked):
  """On-true-manifold examples lie on the manifold of their true class; regular ones leave it,
  never farther than their clean image (a point of the manifold the projection is given); the
  stored distances are the library's of the stored images, and the reported statistics are those
  of the counted successes."""
  workdir, config, results = attacked
  with np.load(attack_study.paths(workdir, config.name)['examples']) as f:
    stored = dict(f)
  m, e = config.distance.num_images, config.num_examples
  assert results['distance_methods'] == ['true', 'subspace']  # no generator workdir
  assert np.median(stored['on_true_manifold.true_distance']) < 1e-3
  assert np.median(stored['clean.true_distance']) < 1e-3
  moved = stored['pgd_linf.l2'][:, :m] > 0.1
  assert np.median(stored['pgd_linf.true_distance'][moved]) > 0.1
  _, dataset, _, _ = runs.load_classifiers(workdir)
  np.testing.assert_allclose(
      manifold.subspace_distance(stored['pgd_linf.x_adv'][1], dataset.x_train),
      stored['pgd_linf.subspace_distance'][1, :e], rtol=1e-3, atol=1e-3)
  assert e == m  # the tiny config keeps the images whose distances it measures
  for name in config.attacks:
    per_model = results['attacks'][name]['per_model']
    perturbation = np.sqrt(((stored[f'{name}.x_adv'] - stored['image']) ** 2).sum((2, 3, 4)))
    assert np.all(stored[f'{name}.true_distance'] <= perturbation * (1 + 1e-4) + 1e-5), name
    for k in range(2):
      for method in ('true', 'subspace'):
        expected = evaluate.manifold_distance_stats(
            stored[f'{name}.{method}_distance'][k], perturbation[k],
            stored[f'{name}.counted_success'][k, :m], f'manifold_{method}')
        for key, value in expected.items():
          assert per_model[key][k] == pytest.approx(value, nan_ok=True, rel=1e-5), (name, key)


def test_each_row_is_measured_no_farther_than_its_own_clean_image(fonts_manifold):
  """With a search too weak to find the manifold alone, the clean image each row was made from
  (its font and theta, tiled over the models as the rows are) bounds its true distance; another
  row's clean image would not."""
  config = load_config(os.path.join(ROOT, 'configs', 'attack_fonts_tiny.py'))
  config.distance.methods = ('true',)
  config.distance.true = dict(num_candidates=1, num_random=0, num_restarts=1, num_steps=0,
                              schedule=())
  dataset = types.SimpleNamespace(name='fonts', manifold=fonts_manifold, x_train=np.zeros(1))
  measure = distances.methods(config, dataset, None)
  x, y, latents = fonts.sample(fonts_manifold, jax.random.key(1), 6)
  rng = np.random.default_rng(0)
  x_adv = np.clip(x + rng.choice([-0.3, 0.3], (2,) + x.shape), 0, 1).astype(np.float32)
  perturbation = np.sqrt(((x_adv - x) ** 2).sum((2, 3, 4)))
  test = {'image': x, 'label': y, **latents}
  _, arrays = distances.manifold_metrics(types.SimpleNamespace(x_adv=x_adv), test,
                                              np.ones((2, 6), bool), 6, measure,
                                              jax.random.key(0))
  np.testing.assert_allclose(arrays['true_distance'], perturbation, rtol=1e-5)
  alone = measure['true'](x_adv.reshape((12,) + x.shape[1:]), np.tile(y, 2), jax.random.key(0),
                          {})
  assert np.all(alone > perturbation.ravel())


def test_image_space_attack_respects_its_radius(attacked):
  _, config, results = attacked
  epsilon = config.attacks.pgd_linf.epsilon
  per_model = results['attacks']['pgd_linf']['per_model']
  for any_rate, linf in zip(per_model['success_rate_any'], per_model['linf_mean']):
    if any_rate > 0:
      assert linf <= epsilon + 1e-5


def test_script_numbers_are_the_librarys_on_the_same_inputs(attacked):
  """Model 1's pgd_linf numbers recomputed with attacks.pgd batch by batch, with the keys the
  script documents (seed, then the attack's index in sorted order, then the batch start)."""
  workdir, config, results = attacked
  _, dataset, module, variables = runs.load_classifiers(workdir)
  spec = dict(config.attacks.pgd_linf)
  index = sorted(config.attacks).index('pgd_linf')
  logits_fn = jax.jit(models.logits_fn(module, stacked.select(variables, 1)))
  step_rule = optax.adam(spec['step_size'])
  parts = []
  for start in range(0, config.num_images, config.batch_size):
    x = dataset.x_test[start:start + config.batch_size]
    y = dataset.y_test[start:start + config.batch_size]
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), index), start)
    parts.append(jax.device_get(attacks.pgd(
        logits_fn, attacks.LinfBall(x, spec['epsilon'], start=spec['start']), y, key,
        num_steps=spec['num_steps'],
        restarts=spec['restarts'], step_rule=step_rule, early_stop=spec['early_stop'])))
  result = jax.tree.map(lambda *a: np.concatenate(a), *parts)
  x, y = dataset.x_test[:config.num_images], dataset.y_test[:config.num_images]
  library = evaluate.summarize(result, y, np.asarray(logits_fn(x)))
  script = {name: values[1] for name, values in results['attacks']['pgd_linf']['per_model'].items()}
  assert set(library) <= set(script)  # and the distances to the manifold
  for name, value in library.items():
    assert script[name] == pytest.approx(value, abs=1e-4, nan_ok=True), name


def _copy_of(workdir, tmp_path):
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  return copy


def test_runs_are_named_and_never_overwritten(attacked, monkeypatch, tmp_path):
  workdir, config, _ = attacked
  first = attack_study.paths(workdir, config.name)
  before = open(first['results']).read()
  with monkeypatch.context() as patched:  # refused before any model is loaded
    patched.setattr(runs, 'load_classifiers', lambda *a: pytest.fail('loaded the models'))
    with pytest.raises(UserError, match='already exists'):
      attack_study.run(config, workdir)
  assert open(first['results']).read() == before
  workdir = _copy_of(workdir, tmp_path)  # the fixture's workdir is shared: run in a copy
  other = load_config(os.path.join(ROOT, 'configs', 'attack_fonts_tiny.py'))
  other.name = 'fgsm_only'
  other.attacks = {'fgsm': dict(attack='fgsm', epsilon=0.1)}
  other.distance.num_images = 0
  results = attack_study.run(other, workdir)
  stored = json.load(open(attack_study.paths(workdir, 'fgsm_only')['results']))
  assert json.dumps(stored, sort_keys=True) == json.dumps(results, sort_keys=True)  # NaN-safe
  assert list(results['attacks']) == ['fgsm'] and results['distance_methods'] == ['true',
                                                                                  'subspace']
  assert json.load(open(attack_study.paths(workdir, 'fgsm_only')['results']))['name'] == 'fgsm_only'
  assert open(first['results']).read() == before


def test_on_true_manifold_attack_needs_the_fonts_generator():
  from advgen import data
  import ml_collections
  spheres = data.load(ml_collections.ConfigDict(dict(name='spheres', num_train=10, num_test=10,
                                                     seed=0)))
  with pytest.raises(UserError, match='needs a dataset with a known generator'):
    attacks.build(dict(attack='on_true_manifold', epsilon=0.3, num_steps=1, step_size=0.1,
                       step_rule='sign'), attack_study.manifolds(spheres))


@pytest.mark.parametrize('spec, message', [
    (dict(attack='pgd_lnf', epsilon=0.3, num_steps=1), "did you mean 'pgd_linf'"),
    (dict(attack='pgd_linf', epsilon=-0.3, num_steps=1), 'epsilon must be a positive'),
    (dict(attack='pgd_linf', epsilon=0.3, num_steps=1, restarts=0), 'restarts must be a positive'),
    (dict(attack='pgd_linf', epsilon=0.3, num_step=1), "did you mean 'num_steps'"),
    (dict(attack='pgd_linf', num_steps=1), 'needs a radius'),
    (dict(attack='pgd_linf', epsilon=0.3, start='gauss'), "unknown start 'gauss'"),
    (dict(attack='on_learned_manifold', epsilon=0.3), 'set config.generator_workdir'),
])
def test_bad_attack_entries_fail_before_any_model_is_loaded(spec, message, tmp_path):
  config = load_config(os.path.join(ROOT, 'configs', 'attack_fonts_tiny.py'))
  config.attacks.zzz = spec  # sorted last: every attack before it would run first
  with pytest.raises(UserError, match=message):
    attack_study.run(config, str(tmp_path))  # an empty workdir: loading it would fail first


@pytest.mark.parametrize('field, value, message', [
    ('generator_workdir', '/nonexistent/vaegan', 'is not a workdir of scripts/train_generator'),
    ('name', '../elsewhere', 'config.name must be a folder name'),
    ('num_examples', -1, 'num_examples must be a non-negative integer'),
    ('distance.methods', ('true', 'knn'), "unknown config.distance.methods entry 'knn'"),
    ('distance.true.num_steps', 0, 'config.distance.true.num_steps must be a positive'),
])
def test_bad_run_settings_fail_before_any_model_is_loaded(field, value, message, tmp_path):
  from conftest import configured
  config = configured(os.path.join(ROOT, 'configs', 'attack_fonts_tiny.py'), **{field: value})
  with pytest.raises(UserError, match=message):
    attack_study.run(config, str(tmp_path))


def test_models_attacked_together_equal_each_attacked_alone():
  """The K-model program (unrolled on CPU, vmapped elsewhere) gives model k what attacking model k
  alone gives."""
  module = models.classifier('stutz_convnet', 10)
  per_model = [models.init(module, k, (28, 28, 1)) for k in jax.random.split(jax.random.key(0), 2)]
  both = stacked.stack(per_model)
  x = jax.random.uniform(jax.random.key(1), (6, 28, 28, 1))
  batch = {'image': x, 'label': jnp.arange(6) % 10}
  attack = attacks.build(dict(attack='pgd_linf', epsilon=0.1, num_steps=5, step_size=0.02,
                              early_stop=False))
  key = jax.random.key(2)
  together = attack_study.attack_models(both, batch, key, module=module, attack=attack)
  for k, variables in enumerate(per_model):
    alone = jax.jit(lambda v: attack(models.logits_fn(module, v), batch, key))(variables)
    np.testing.assert_allclose(together.x_adv[k], alone.x_adv, atol=1e-5)
    assert not np.allclose(alone.x_adv, x)  # the attack moved the images
  assert not np.allclose(together.x_adv[0], together.x_adv[1])  # each model got its own attack
