import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from advgen.errors import UserError
from advgen.studies import runs
from advgen.train import classifier, workdir as workdir_lib
from conftest import ROOT, configured, killed_after_step, record_steps

TINY = os.path.join(ROOT, 'configs', 'fonts_tiny.py')


def tiny_config(**overrides):
  return configured(TINY, **overrides)


def params_of(workdir):
  _, _, _, variables = runs.load_classifiers(workdir)
  return variables


def logged_losses(workdir):
  """(steps, models) training losses from metrics.jsonl."""
  return np.array([r['per_model']['loss'] for r in workdir_lib.MetricWriter(workdir).read()
                   if 'loss' in r['per_model']])


def assert_same_training(workdir, reference):
  """Same batches and updates: per-step losses agree up to float reordering (a wrong batch or
  key moves them by ~10%; Adam amplifies reordering noise, so parameters are not compared)."""
  losses = logged_losses(workdir)
  np.testing.assert_allclose(losses, logged_losses(reference)[:, :losses.shape[1]], rtol=1e-2)


@pytest.fixture
def finished(trained_tiny):
  return trained_tiny


def test_run_writes_metrics_results_and_checkpoints(finished):
  workdir, results = finished
  assert sorted(os.listdir(workdir)) == ['checkpoints', 'config.json', 'metrics.jsonl',
                                         'results.json']
  records = workdir_lib.MetricWriter(workdir).read()
  logged = [r for r in records if 'loss' in r['per_model']]
  assert [r['step'] for r in logged] == list(range(2, 11, 2))
  for key in ('learning_rate', 'steps_per_second', 'eta_seconds'):
    assert np.isfinite(logged[-1][key])
  for key in ('loss', 'accuracy'):
    assert np.isfinite(logged[-1]['mean'][key])
  per_model = logged[-1]['per_model']['loss']
  assert len(per_model) == 2
  assert logged[-1]['mean']['loss'] == pytest.approx(np.mean(per_model))
  assert logged[-1]['std']['loss'] == pytest.approx(np.std(per_model))
  assert logged[-1]['mean']['loss'] < logged[0]['mean']['loss']
  assert any('test_error' in r['per_model'] for r in records)
  errors = results['per_model']
  assert len(errors['test_error']) == 2 and results['num_train'] == 300
  assert results['mean']['test_error'] == pytest.approx(np.mean(errors['test_error']))
  # Two seeds give two different models.
  assert errors['train_error'][0] != errors['train_error'][1] or (
      errors['test_error'][0] != errors['test_error'][1])


def test_finished_workdir_is_not_overwritten(finished):
  workdir, _ = finished
  before = open(os.path.join(workdir, 'results.json')).read()
  with pytest.raises(UserError, match='already exists'):
    classifier.train(tiny_config(), workdir)
  with pytest.raises(UserError, match='different config'):
    classifier.train(tiny_config(seed=5), workdir)
  assert open(os.path.join(workdir, 'results.json')).read() == before


def test_killed_run_resumes_to_the_same_numbers(finished, tmp_path, monkeypatch):
  reference, reference_results = finished
  workdir = str(tmp_path)
  with killed_after_step(monkeypatch, 8):  # after the epoch-1 checkpoint (step 5), mid epoch 2
    classifier.train(tiny_config(), workdir)
  assert not os.path.exists(os.path.join(workdir, 'results.json'))
  # A half-written metrics line, as a kill during a write leaves, is dropped on resume.
  with open(os.path.join(workdir, 'metrics.jsonl'), 'a') as f:
    f.write('{"step": 9, "per_mo')
  ran = record_steps(monkeypatch)
  results = classifier.train(tiny_config(), workdir)
  assert ran == list(range(5, 10))  # from the checkpoint on: no step before it ran again
  assert results == reference_results
  jax.tree.map(np.testing.assert_array_equal, params_of(workdir), params_of(reference))
  steps = [r['step'] for r in workdir_lib.MetricWriter(workdir).read()]
  assert steps == sorted(set(steps))  # lines after the checkpoint were not duplicated


def test_model_k_does_not_depend_on_how_many_are_trained_together(finished, tmp_path):
  reference, _ = finished
  classifier.train(tiny_config(num_models=1), str(tmp_path))
  assert_same_training(str(tmp_path), reference)


def test_four_devices_train_the_same_model_as_one(finished, tmp_path):
  reference, reference_results = finished
  workdir = str(tmp_path / 'sharded')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu')
  code = ('import jax, sys; assert jax.device_count() == 4; from advgen.cli import load_config; '
          'from advgen.train import classifier; '
          f'classifier.train(load_config({TINY!r}), {workdir!r})')
  subprocess.run([sys.executable, '-c', code], env=env, check=True, cwd=ROOT,
                 capture_output=True)
  assert_same_training(workdir, reference)
  results = json.load(open(os.path.join(workdir, 'results.json')))
  np.testing.assert_allclose(results['per_model']['test_error'],
                             reference_results['per_model']['test_error'], atol=0.02)


@pytest.mark.parametrize('overrides, message', [
    ({'model.name': 'transformer'}, 'unknown model'),
    ({'optimizer.learning_rate': -0.1}, 'learning_rate must be positive'),
    ({'optimizer.b1': 1.0}, r'b1 must be in \[0, 1\)'),
    ({'dataset.name': 'fontz'}, 'unknown dataset'),
    ({'batch_size': 1000}, 'batch_size=1000'),
    ({'variant.name': 'magic'}, 'unknown training variant'),
    ({'variant.name': 'adversarial', 'variant.epsilon': -0.3}, 'epsilon must be a positive'),
    ({'variant.name': 'adversarial', 'variant.num_steps': 0}, 'num_steps must be a positive'),
    ({'num_epochs': -1}, 'num_epochs must be a positive integer'),
    ({'num_models': 0}, 'num_models must be a positive integer'),
    ({'batch_size': 0}, 'batch_size must be a positive integer'),
    ({'max_checkpoints': 0}, 'max_checkpoints must be a positive integer'),
])
def test_bad_config_is_a_one_line_error(tmp_path, overrides, message):
  with pytest.raises(UserError, match=message) as error:
    classifier.train(tiny_config(**overrides), str(tmp_path))
  assert '\n' not in str(error.value)
  assert not os.path.exists(tmp_path / 'config.json')  # a fixed config can reuse the workdir


def test_a_workdir_that_is_a_file_is_refused_before_any_work(tmp_path):
  path = tmp_path / 'file'
  path.write_text('mine')
  with pytest.raises(UserError, match='is a file, not a directory'):
    classifier.train(tiny_config(), str(path))
  assert path.read_text() == 'mine'
  with pytest.raises(UserError, match='cannot be written'):
    classifier.train(tiny_config(), str(path / 'below'))


def test_divergence_stops_with_a_message_and_keeps_checkpoints(tmp_path):
  config = tiny_config(**{'optimizer.learning_rate': 1e30, 'num_models': 1})
  with pytest.raises(UserError, match='training diverged') as error:
    classifier.train(config, str(tmp_path))
  assert 'learning_rate' in str(error.value) and 'new --workdir' in str(error.value)
  assert not os.path.exists(tmp_path / 'results.json')
  # The advice is accepted: a lower rate in a new workdir trains.
  lower = tiny_config(**{'optimizer.learning_rate': 0.01, 'num_models': 1, 'num_epochs': 1})
  classifier.train(lower, str(tmp_path / 'new'))


def _run_script(workdir, *flags):
  return subprocess.run(
      [sys.executable, os.path.join(ROOT, 'scripts', 'train_classifier.py'), f'--config={TINY}',
       f'--workdir={workdir}', *flags], capture_output=True, text=True, cwd=ROOT)


def test_script_resumes_and_reports_a_corrupt_checkpoint_in_one_line(finished, tmp_path):
  reference, _ = finished
  workdir = tmp_path / 'run'
  done = _run_script(workdir, '--config.num_epochs=1')
  assert done.returncode == 0, done.stderr[-2000:]
  assert 'test error' in done.stdout
  # Corrupt the only checkpoint, remove the results, and resume: a clear error, nothing deleted.
  os.remove(workdir / 'results.json')
  step_dir = workdir / 'checkpoints' / '5'
  files = [os.path.join(d, f) for d, _, fs in os.walk(step_dir) for f in fs]
  for path in files:
    with open(path, 'wb') as f:
      f.write(b'garbage')
  failed = _run_script(workdir, '--config.num_epochs=1')
  assert failed.returncode == 2
  last_line = failed.stderr.strip().splitlines()[-1]
  assert last_line.startswith('error:') and 'unreadable' in last_line
  assert 'Traceback' not in failed.stderr  # no noise from checkpointing threads either
  assert sorted(os.listdir(step_dir)) and all(os.path.exists(p) for p in files)


def test_adversarial_training_plugs_into_the_same_loop(tmp_path):
  config = tiny_config(num_models=1, num_epochs=1, **{
      'variant.name': 'adversarial', 'variant.num_steps': 3})
  results = classifier.train(config, str(tmp_path))
  assert 0 <= results['mean']['test_error'] <= 1
  logged = [r for r in workdir_lib.MetricWriter(str(tmp_path)).read() if 'loss' in r['per_model']]
  assert all(np.isfinite(r['mean']['loss']) for r in logged)


def test_checkpoints_of_every_epoch_are_kept_when_asked(tmp_path):
  config = tiny_config(num_models=1, num_epochs=3, max_checkpoints=1,
                       keep_checkpoint_every_epochs=1)
  classifier.train(config, str(tmp_path))
  steps = sorted(int(d) for d in os.listdir(tmp_path / 'checkpoints') if d.isdigit())
  assert steps == [5, 10, 15]
  first = runs.load_classifiers(str(tmp_path), step=5)[3]
  last = runs.load_classifiers(str(tmp_path))[3]
  assert not np.allclose(jax.tree.leaves(first)[0], jax.tree.leaves(last)[0])
