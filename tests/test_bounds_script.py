"""scripts/study.py on configs/studies/bounds_tiny.py: models trained once, reused on a rerun, results
complete and consistent with the bounds library."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from advgen import bounds
from advgen.studies import bounds as experiment
from advgen.cli import load_config
from advgen.errors import UserError
from conftest import ROOT, built_once


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  config = load_config(os.path.join(ROOT, 'configs', 'studies', 'bounds_tiny.py'))
  workdir = built_once(tmp_path_factory, 'bounds_tiny', lambda path: experiment.run(config, path))
  return workdir, config, experiment.stored(workdir)


def test_results_hold_the_table_the_bounds_and_every_estimate(tiny):
  workdir, config, results = tiny  # results as stored in results.json
  assert results['expected_latent_norm'] == pytest.approx(3.084, abs=1e-3)  # d = 10
  assert results['expected_image_norm'] > 0
  names = list(results['classifiers'])
  assert names == ['mlp_0', 'mlp_1']  # num_models = 2 in one workdir: two columns
  for name in names:
    entry = results['classifiers'][name]
    assert 0 <= entry['test_error'] <= 1
    for key in ('latent', 'in_distribution', 'unconstrained'):  # the curve ends at the bound
      curve = entry['bound_curve'][key]
      crossing = np.interp(config.p, curve['probability'], curve['radius'])
      assert crossing == pytest.approx(entry['bound'][key]['normalized'], rel=0.02)
    assert sum(entry['class_probs']) == pytest.approx(1)
    latent = bounds.robustness_upper_bound(config.p, entry['class_probs'])
    assert entry['bound']['latent']['radius'] == pytest.approx(latent)
    assert entry['bound']['latent']['normalized'] == pytest.approx(
        latent / results['expected_latent_norm'])
    image = entry['bound']['unconstrained']['radius']
    assert image == entry['bound']['in_distribution']['radius']
    for key, field in [('latent', 'r_z'), ('in_distribution', 'r_in'),
                       ('unconstrained', 'r_unc')]:
      values = np.asarray(entry['per_example'][field], np.float64)
      assert values.shape == (config.num_samples,)
      assert np.all(values > 0)
      row = entry['empirical'][key]
      assert row['quantile'] == bounds.quantile(values, config.p)
      assert np.mean(values <= row['quantile']) >= config.p
    r_in = np.asarray(entry['per_example']['r_in'])
    assert np.all(r_in <= np.asarray(entry['per_example']['r_in_deepfool']))
    unc = {f: np.asarray(entry['per_example'][f], np.float64)
           for f in ('r_unc', 'r_unc_deepfool', 'r_unc_pgd', 'r_unc_fab')}
    np.testing.assert_array_equal(unc['r_unc'], np.minimum(np.minimum(
        unc['r_unc_deepfool'], unc['r_unc_pgd']), unc['r_unc_fab']))
    smaller = unc['r_unc_fab'] < np.minimum(unc['r_unc_deepfool'], unc['r_unc_pgd'])
    assert entry['fab']['fraction_smaller'] == pytest.approx(np.mean(smaller))
  for key in results['bound']:
    assert results['bound'][key] == max(results['classifiers'][n]['bound'][key]['normalized']
                                        for n in names)
  assert len(results['figure2']['bound']) == len(config.figure2.num_classes)


def test_report_table_and_figures_are_written(tiny):
  workdir, _, results = tiny
  table = open(os.path.join(workdir, experiment.TABLE)).read()
  assert table == results['table']
  fawzi, fab_line = table.split('\n## ')[0].strip().split('\n\n')  # the sandwich's section follows
  lines = fawzi.splitlines()
  assert len(lines) == 2 + 3 + 1  # header, rule, three robustness rows, error rates
  gain = results['classifiers']['mlp_0']['fab']
  assert fab_line.startswith('r_unc with FAB-L2') and (
      f'mlp_0 {100 * gain["fraction_smaller"]:.1f}%') in fab_line
  assert 'mlp_0' in lines[0] and 'upper bound' in lines[0]
  assert lines[-1].startswith('| Error rate')
  for figure in (experiment.CDF_FIGURE, experiment.FIGURE2, experiment.EXAMPLES):
    assert os.path.getsize(os.path.join(workdir, figure)) > 0


def test_rerun_reuses_trained_models_and_keeps_results(tiny, tmp_path):
  workdir, config, results = tiny
  with pytest.raises(UserError, match='already exists'):
    experiment.run(config, workdir)
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  os.remove(os.path.join(copy, experiment.RESULTS))
  before = {path: os.path.getmtime(os.path.join(copy, path, 'results.json'))
            for path in ('generator', os.path.join('classifiers', 'mlp'))}
  again = experiment.run(config, copy)
  stored = json.load(open(os.path.join(copy, experiment.RESULTS)))
  assert json.dumps(stored, sort_keys=True) == json.dumps(again, sort_keys=True)  # what it returned
  for path, mtime in before.items():  # loaded, not retrained
    assert os.path.getmtime(os.path.join(copy, path, 'results.json')) == mtime
  for name, entry in results['classifiers'].items():  # same seed, same numbers
    np.testing.assert_allclose(again['classifiers'][name]['per_example']['r_z'],
                               entry['per_example']['r_z'], rtol=1e-5)
  os.remove(os.path.join(copy, experiment.RESULTS))
  changed = load_config(os.path.join(ROOT, 'configs', 'studies', 'bounds_tiny.py'))
  with changed.unlocked():
    changed.p = 0.5
  with pytest.raises(UserError, match='different config'):
    experiment.run(changed, copy)


def test_script_refuses_a_finished_workdir_with_one_line(tiny):
  workdir, _, _ = tiny
  proc = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'study.py'),
                         '--config=' + os.path.join(ROOT, 'configs', 'studies', 'bounds_tiny.py'),
                         '--workdir=' + workdir], capture_output=True, text=True, cwd=ROOT)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith('error: ')
  assert 'already exists' in proc.stderr


@pytest.mark.parametrize('overrides, message', [
    ({'modulus.quantile': 1.5}, r'modulus.quantile must be in \(0, 1\]'),
    ({'generator.num_epochs': -1}, 'num_epochs must be a positive integer'),
    ({'classifiers.mlp.variant.name': 'magic'}, 'unknown training variant'),
    ({'refine_steps': 0}, 'refine_steps must be a positive integer'),
    ({'fab.num_steps': -1}, r'fab.num_steps must be an integer >= 0'),
])
def test_every_setting_is_checked_before_any_work(tmp_path, overrides, message):
  """Late settings (the modulus, after training the generator) and the sub-runs' configs fail
  first; nothing is recorded, so the corrected command is accepted on the same workdir."""
  from conftest import configured
  config = configured(os.path.join(ROOT, 'configs', 'studies', 'bounds_tiny.py'), **overrides)
  with pytest.raises(UserError, match=message):
    experiment.run(config, str(tmp_path))
  assert not os.path.exists(tmp_path / 'config.json')
  experiment.validate(load_config(os.path.join(ROOT, 'configs', 'studies', 'bounds_tiny.py')))


def test_bad_settings_are_user_errors(tmp_path):
  config = load_config(os.path.join(ROOT, 'configs', 'studies', 'bounds_tiny.py'))
  with config.unlocked():
    config.p = 1.0
  with pytest.raises(UserError, match='config.p'):
    experiment.run(config, str(tmp_path / 'a'))
  config = load_config(os.path.join(ROOT, 'configs', 'studies', 'bounds_tiny.py'))
  with config.unlocked():
    config.generator.class_specific = True
  with pytest.raises(UserError, match='class_specific'):
    experiment.run(config, str(tmp_path / 'b'))
