"""Deniz et al.'s overfitting study: per-run splits, the sets and their definitional zeros, M,
deltas, Welch p-values and k-NN slopes checked against the checkpoints, scipy and the k-NN
classifier; resume, --report_only and bad configs."""

import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from scipy import stats

from advgen.data import splits
from advgen.errors import UserError
from advgen.models import knn, stacked
from advgen.studies import deniz, runs
from advgen.train import classifier, workdir as workdir_lib
from conftest import ROOT, built_once, configured

TINY = os.path.join(ROOT, 'configs', 'studies', 'deniz_fonts.py:tiny')


@pytest.fixture(scope='module')
def study(tmp_path_factory):
  config = configured(TINY)
  workdir = built_once(tmp_path_factory, 'deniz_tiny', lambda path: deniz.run(config, path))
  return workdir, config, deniz.stored(workdir)


@pytest.fixture(scope='module')
def restored(study):
  """(config, module, at_epoch, x_test, y_test, x_train, y_train) of the study's CNN runs."""
  workdir = study[0]
  cnn, dataset, module, at_epoch = runs.classifier_epochs(os.path.join(workdir, deniz.CNN))
  arrays, train_rows, test_rows = classifier.data_splits(cnn, dataset)
  x, y = arrays['image'], arrays['label']
  return cnn, module, at_epoch, x[test_rows], y[test_rows], x[train_rows], y[train_rows]


def test_stratified_resplit_keeps_each_class_count_and_draws_a_new_split():
  y_train = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
  y_test = np.array([0, 1, 2, 2, 0])
  labels = np.concatenate([y_train, y_test])
  train, test = splits.stratified_resplit(y_train, y_test, jax.random.key(0))
  assert sorted(np.concatenate([train, test])) == list(range(len(labels)))
  for c in range(3):
    assert np.sum(labels[train] == c) == np.sum(y_train == c)
  drawn = {tuple(splits.stratified_resplit(y_train, y_test, jax.random.key(k))[1])
           for k in range(8)}
  assert len(drawn) > 4  # the key moves examples between the splits


def test_a_models_split_depends_on_seed_and_index_only():
  config = configured(TINY).classifier
  config.resplit, config.num_models = True, 3
  from advgen import data
  dataset = data.load(config.dataset)
  _, train3, test3 = classifier.data_splits(config, dataset)
  config.num_models = 2
  _, train2, test2 = classifier.data_splits(config, dataset)
  np.testing.assert_array_equal(train3[:2], train2)
  np.testing.assert_array_equal(test3[:2], test2)
  assert not np.array_equal(test3[0], test3[1])
  config.resplit = False
  pooled, train, test = classifier.data_splits(config, dataset)
  assert test is None and len(pooled['image']) == len(dataset.y_train)


def test_the_accuracy_curves_and_m_come_from_each_runs_own_test_split(study, restored):
  _, _, results = study
  _, module, at_epoch, x_test, y_test, *_ = restored
  cnn = results['cnn']
  for epoch in (1, cnn['num_epochs']):
    logits = stacked.stacked_logits(module, at_epoch(epoch), x_test, per_model=True)
    accuracy = np.mean(np.argmax(logits, -1) == y_test, axis=1)
    np.testing.assert_allclose(np.asarray(cnn['accuracy']['test'])[:, epoch - 1], accuracy)
  test = np.asarray(cnn['accuracy']['test'])
  assert cnn['best_epoch'] == (np.argmax(test, axis=1) + 1).tolist()
  # The stored results.json of the CNN runs measured the same test splits at the last epoch.
  trained = workdir_lib.read_json(os.path.join(study[0], deniz.CNN, 'results.json'))
  np.testing.assert_allclose(1 - np.asarray(trained['per_model']['test_error']), test[:, -1])


def test_the_sets_are_empty_of_right_answers_at_m_and_deltas_start_there(study, restored):
  workdir, _, results = study
  _, module, at_epoch, x_test, y_test, *_ = restored
  cnn = results['cnn']
  best = np.asarray(cnn['best_epoch'])
  runs_ = np.arange(len(best))
  for name in ['fail'] + cnn['attacks']:
    accuracy = np.asarray(cnn['accuracy'][name])
    sized = np.asarray(cnn['set_size'][name]) > 0
    np.testing.assert_array_equal(accuracy[runs_, best - 1][sized], 0)
  for name in cnn['delta']['per_model']:
    accuracy = np.asarray(cnn['accuracy'][name])
    np.testing.assert_allclose(cnn['delta']['per_model'][name],
                               accuracy[:, -1] - accuracy[runs_, best - 1])
  # FGSM's set: the test images right at M whose adversarial example the model at M gets wrong.
  with np.load(os.path.join(workdir, deniz.ATTACKS, 'fgsm.npz')) as f:
    x_adv = f['x_adv']
  at_m = deniz._at_best(at_epoch, best)
  right = np.argmax(stacked.stacked_logits(module, at_m, x_test, per_model=True), -1) == y_test
  assert cnn['set_size']['fail'] == (~right).sum(1).tolist()
  n = study[1].attack_images  # the adversarial sets come from the first n test images
  assert x_adv.shape[1] == n < x_test.shape[1]
  x_test, y_test, right = x_test[:, :n], y_test[:, :n], right[:, :n]
  assert np.abs(x_adv - x_test).max() <= 0.1 + 1e-6
  fooled = np.argmax(stacked.stacked_logits(module, at_m, x_adv, per_model=True), -1) != y_test
  assert cnn['set_size']['fgsm'] == (right & fooled).sum(1).tolist()
  norms = np.linalg.norm((x_adv - x_test).reshape(*x_adv.shape[:2], -1), axis=-1)
  np.testing.assert_allclose(np.concatenate(cnn['l2_norms']['fgsm']),
                             norms[right & fooled], rtol=1e-5)


def _scipy_welch(a, b):
  a, b = np.asarray(a, float), np.asarray(b, float)
  a, b = a[np.isfinite(a)], b[np.isfinite(b)]
  return stats.ttest_ind(a, b, equal_var=False).pvalue if min(len(a), len(b)) > 1 else np.nan


def _check_p_values(p_values, values, attacks):
  for name in attacks:
    for key, (a, b) in (('test_vs_adversarial', ('test', name)),
                        ('adversarial_vs_fail', (name, 'fail'))):
      np.testing.assert_allclose(p_values[key][name], _scipy_welch(values[a], values[b]))


def test_the_p_values_are_scipys_welch_tests_on_the_stored_values(study):
  workdir, _, results = study
  cnn, part = results['cnn'], results['knn']
  deltas = cnn['delta']['per_model']
  _check_p_values(cnn['p_values'], deltas, cnn['attacks'])
  for step in part['steps']:
    _check_p_values(part['p_values'][step], part['slope'][step]['per_model'], cnn['attacks'])
  _check_p_values(part['change_p_values'], part['change']['per_model'], cnn['attacks'])
  text = open(os.path.join(workdir, 'report.md')).read()
  shown = [name for name in cnn['attacks'] if np.isfinite(cnn['p_values']['test_vs_adversarial'][name])]
  assert shown
  for name in shown:
    p = cnn['p_values']
    assert (f'| {name} | {p["test_vs_adversarial"][name]:.2g} | '
            f'{p["adversarial_vs_fail"][name]:.2g} |') in text
  a, b = [0.1, 0.3, 0.2], [0.5, 0.9, 0.4, 1.5]  # unequal variances: Welch differs from Student
  assert deniz.welch(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
  assert deniz.welch(a + [np.nan], b) == deniz.welch(a, b)


def test_the_knn_experiment_matches_the_knn_classifier(study, restored):
  _, config, results = study
  *_, x_test, y_test, x_train, y_train = restored
  part = results['knn']
  assert part['ks'] == [7, 5, 3, 1]
  for r in range(len(x_test)):
    for i, k in enumerate(part['ks']):
      predicted = knn.knn_predict(x_train[r], y_train[r], x_test[r], k, 10)
      assert part['accuracy']['test'][r][i] == pytest.approx(np.mean(predicted == y_test[r]))
    assert part['accuracy']['fail'][r][0] == 0
  # The sets are defined at K = Z (the largest K): the fail set is the test images the k-NN gets
  # wrong there, an attack's set the examples of images right there that it gets wrong there.
  z = part['ks'][0]
  at_z = lambda r, images: knn.knn_predict(x_train[r], y_train[r], images, z, 10)
  right = np.stack([at_z(r, x_test[r]) == y_test[r] for r in range(len(x_test))])
  sizes = {'fail': (~right).sum(1).tolist()}
  for name in results['cnn']['attacks']:
    with np.load(os.path.join(study[0], deniz.ATTACKS, f'{name}.npz')) as f:
      x_adv = f['x_adv']
    n = x_adv.shape[1]
    fooled = np.stack([at_z(r, x_adv[r]) != y_test[r, :n] for r in range(len(x_test))])
    sizes[name] = (right[:, :n] & fooled).sum(1).tolist()
  for name, size in sizes.items():
    assert part['set_size'][name] == size, name
    sized = np.asarray(size) > 0
    np.testing.assert_array_equal(np.asarray(part['accuracy'][name])[sized, 0], 0)
  assert sum(sizes['fail']) > 0  # the tiny k-NN errs: the K = Z check has members (attack sets
  # may be empty on another CPU; their sizes are still checked against the recomputation)
  for i, step in enumerate(part['steps']):
    accuracy = np.asarray(part['accuracy']['test'])
    np.testing.assert_allclose(part['slope'][step]['per_model']['test'],
                               accuracy[:, i + 1] - accuracy[:, i])


def test_report_only_and_a_resumed_study_give_the_same_report(study, tmp_path, monkeypatch):
  workdir, config, results = study
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  os.remove(os.path.join(copy, 'report.md'))
  assert deniz.write_report(config, copy) == open(os.path.join(workdir, 'report.md')).read()
  for name in deniz.report.FIGURE_NAMES:
    assert os.path.getsize(os.path.join(copy, 'figures', name)) > 1000
  # A study killed after training and the first attack: nothing trained or attacked again.
  os.remove(os.path.join(copy, deniz.RESULTS))
  for name in results['cnn']['attacks'][1:]:
    os.remove(os.path.join(copy, deniz.ATTACKS, f'{name}.npz'))
  monkeypatch.setattr(classifier, 'train', lambda *a, **k: pytest.fail('trained again'))
  built = []
  real_build = deniz.attacks.build
  monkeypatch.setattr(deniz.attacks, 'build', lambda spec: built.append(spec['attack']) or
                      real_build(spec))
  assert deniz.run(config, copy) == open(os.path.join(workdir, 'report.md')).read()
  assert sorted(built) == sorted(config.attacks[a]['attack'] for a in results['cnn']['attacks'][1:])


@pytest.mark.parametrize('overrides, message', [
    ({'num_runs': 1}, 'num_runs must be an integer >= 2'),
    ({'attacks.fgsm.attack': 'fgsn'}, "unknown config.attacks.fgsm: attack 'fgsn'"),
    ({'attacks.fgsm.epsilon': -0.1}, 'epsilon must be a positive'),
    ({'attacks.fgsm.attack': 'on_true_manifold'}, 'on-manifold attacks are not part'),
    ({'knn.largest_k': 6}, 'positive odd number'),
    ({'attack_images': -1}, 'attack_images must be an integer >= 0'),
    ({'classifier.variant.name': 'adversarial'}, 'trains normally'),
    ({'classifier.num_epochs': 0}, 'num_epochs must be a positive integer'),
])
def test_bad_configs_fail_before_any_work(tmp_path, overrides, message):
  config = configured(TINY, **overrides)
  with pytest.raises(UserError, match=message):
    deniz.run(config, str(tmp_path / 'study'))
  assert not os.path.exists(tmp_path / 'study')


@pytest.mark.parametrize('name', ['mnist', 'cifar10'])
def test_the_study_runs_on_a_tfds_dataset(tmp_path, name):
  import tensorflow_datasets as tfds
  config = configured(os.path.join(ROOT, 'configs', 'studies', f'deniz_tfds.py:{name},tiny'))
  for attack in ('deepfool', 'cw_l2', 'hopskipjump'):
    del config.attacks[attack]
  workdir = str(tmp_path / 'study')
  with tfds.testing.mock_data(num_examples=300):
    text = deniz.run(config, workdir)
  results = deniz.stored(workdir)
  assert results['dataset'] == name and f'lenet5 on {name}' in text
  assert results['num_train'] == 200 and results['num_test'] == 60


def test_the_script_refuses_to_split_a_deniz_study_in_one_line(tmp_path):
  done = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'scripts', 'study.py'), f'--config={TINY}',
       f'--workdir={tmp_path / "study"}', '--launcher=slurm'], capture_output=True, text=True)
  assert done.returncode == 2
  assert done.stderr.strip().splitlines()[-1].startswith('error: the deniz study runs as one job')
  assert not os.path.exists(tmp_path / 'study')


def test_figure_11_aligns_each_run_at_its_best_epoch():
  offsets, aligned = deniz.report._aligned([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], [1, 3])
  assert offsets.tolist() == [-2, -1, 0, 1, 2]
  np.testing.assert_array_equal(aligned[0], [np.nan, np.nan, 0.1, 0.2, 0.3])
  np.testing.assert_array_equal(aligned[1], [0.4, 0.5, 0.6, np.nan, np.nan])
