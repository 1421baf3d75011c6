import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from advgen import transforms
from advgen.errors import UserError
from advgen.train import classifier, workdir as workdir_lib
from conftest import ROOT, configured, killed_after_step

TINY = os.path.join(ROOT, 'configs', 'fonts_tiny.py')


def tiny_config(**overrides):
  return configured(TINY, **overrides)


def params_of(workdir):
  _, _, _, variables = classifier.restore(workdir)
  return variables


def logged_losses(workdir):
  """(steps, models) training losses from metrics.jsonl."""
  return np.array([r['loss_per_model'] if 'loss_per_model' in r else [r['loss']]
                   for r in workdir_lib.MetricWriter(workdir).read() if 'loss' in r])


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
  logged = [r for r in records if 'loss' in r]
  assert [r['step'] for r in logged] == list(range(2, 11, 2))
  for key in ('loss', 'accuracy', 'learning_rate', 'steps_per_second', 'eta_seconds'):
    assert np.isfinite(logged[-1][key])
  assert len(logged[-1]['loss_per_model']) == 2
  assert logged[-1]['loss'] < logged[0]['loss']
  assert any('test_error' in r for r in records)
  assert len(results['test_error']) == 2 and results['num_train'] == 300
  # Two seeds give two different models.
  assert results['train_error'][0] != results['train_error'][1] or (
      results['test_error'][0] != results['test_error'][1])


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
  results = classifier.train(tiny_config(), workdir)
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
  np.testing.assert_allclose(results['test_error'], reference_results['test_error'], atol=0.02)


@pytest.mark.parametrize('overrides, message', [
    ({'model.name': 'transformer'}, 'unknown model'),
    ({'optimizer.learning_rate': -0.1}, 'learning_rate must be positive'),
    ({'optimizer.b1': 1.0}, r'b1 must be in \[0, 1\)'),
    ({'dataset.name': 'fontz'}, 'unknown dataset'),
    ({'batch_size': 1000}, 'batch_size=1000'),
    ({'variant.name': 'magic'}, 'unknown training variant'),
])
def test_bad_config_is_a_one_line_error(tmp_path, overrides, message):
  with pytest.raises(UserError, match=message) as error:
    classifier.train(tiny_config(**overrides), str(tmp_path))
  assert '\n' not in str(error.value)
  assert not os.path.exists(tmp_path / 'config.json')  # a fixed config can reuse the workdir


def test_divergence_stops_with_a_message_and_keeps_checkpoints(tmp_path):
  config = tiny_config(**{'optimizer.learning_rate': 1e30, 'num_models': 1})
  with pytest.raises(UserError, match='training diverged') as error:
    classifier.train(config, str(tmp_path))
  assert 'learning_rate' in str(error.value)
  assert not os.path.exists(tmp_path / 'results.json')


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
  assert sorted(os.listdir(step_dir)) and all(os.path.exists(p) for p in files)


def test_adversarial_training_plugs_into_the_same_loop(tmp_path):
  config = tiny_config(num_models=1, num_epochs=1)
  config.variant = dict(name='adversarial', epsilon=0.3, num_steps=3, step_size=0.005)
  results = classifier.train(config, str(tmp_path))
  assert 0 <= results['test_error_mean'] <= 1
  logged = [r for r in workdir_lib.MetricWriter(str(tmp_path)).read() if 'loss' in r]
  assert all(np.isfinite(r['loss']) for r in logged)


def test_adversarial_batch_is_clean_plus_attacked_copies():
  from advgen.train import variants
  w = jax.random.normal(jax.random.key(0), (28 * 28, 10))
  logits_fn = lambda x: x.reshape(x.shape[0], -1) @ w
  x = jax.random.uniform(jax.random.key(1), (6, 28, 28, 1))
  y = jax.numpy.arange(6) % 10
  augmented, _ = variants.augmentation(0.1, np.asarray(transforms.RANGES['hard']))(
      logits_fn, x, y, jax.random.key(2))
  assert augmented.shape == x.shape and not np.allclose(augmented, x)
  for transform in (variants.adversarial(0.1, 3, 0.01), variants.fast(0.1)):
    xs, ys = transform(logits_fn, x, y, jax.random.key(2))
    assert xs.shape == (12, 28, 28, 1)
    np.testing.assert_array_equal(xs[:6], x)
    np.testing.assert_array_equal(ys, np.concatenate([y, y]))
    assert 0 < np.abs(np.asarray(xs[6:] - x)).max() <= 0.1 + 1e-6
