"""Shared test set-up: a persistent XLA compilation cache, the fonts manifold, the repo root.

Most test time on a CPU is XLA compilation of small programs that then run once or a few times:
the on-disk cache lets every test (and the scripts tests start as subprocesses) compile each
program once, and tests compile without most of XLA's optimizations (as Flax's own tests do),
which cuts compile time by about 40%. (All of them: a run resumed in a test must give the same
floats as the shared run it is compared with.)
"""

import contextlib
import fcntl
import os
import shutil
import tempfile

import jax
import pytest

from advgen.data import fonts
from advgen.train import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPILATION_CACHE = os.path.join(ROOT, '.pytest_cache', 'jax')

os.environ['JAX_COMPILATION_CACHE_DIR'] = COMPILATION_CACHE
os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0.2'
jax.config.update('jax_compilation_cache_dir', COMPILATION_CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.2)
os.environ['JAX_DISABLE_MOST_OPTIMIZATIONS'] = '1'
jax.config.update('jax_disable_most_optimizations', True)


@pytest.fixture(scope='session', autouse=True)
def private_tempdir(tmp_path_factory):
  """Temporary files under pytest's own (rotated) directory: tfds leaves an empty
  `/tmp/tmp*tfds` behind whenever it sees a dataset that is not prepared."""
  previous = tempfile.tempdir
  tempfile.tempdir = str(tmp_path_factory.mktemp('tempfiles'))
  yield
  tempfile.tempdir = previous


def configured(path, **overrides):
  """The config file at `path` (`FILE.py:ARG` passes ARG to get_config) with dotted-key
  overrides, e.g. `**{"model.name": "mlp"}`."""
  from advgen.cli import load_config
  path, *args = path.split('.py:')
  config = load_config(path if path.endswith('.py') else path + '.py', *args)
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    target = config
    for part in parents:
      target = target[part]
    target[leaf] = value
  return config


class Killed(Exception):
  pass


@contextlib.contextmanager
def killed_after_step(monkeypatch, step):
  """Kills the run inside the block right after it logs the metrics of `step`."""
  write = workdir_lib.MetricWriter.write

  def write_then_die(self, logged_step, metrics):
    write(self, logged_step, metrics)
    if logged_step == step:
      raise Killed()

  monkeypatch.setattr(workdir_lib.MetricWriter, 'write', write_then_die)
  with pytest.raises(Killed):
    yield
  monkeypatch.setattr(workdir_lib.MetricWriter, 'write', write)


def built_once(tmp_path_factory, name, build):
  """A directory `build(path)` fills once per test session, shared by every xdist worker (the
  first to take the lock builds it; the others wait and reuse it). Tests must not change it."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    root = root.parent  # the workers' common base directory
  path, done = root / name, root / f'{name}.done'
  with open(root / f'{name}.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not done.exists():
      shutil.rmtree(path, ignore_errors=True)
      build(str(path))
      done.touch()
  return str(path)


@pytest.fixture(scope='session')
def trained_tiny(tmp_path_factory):
  """(workdir, results) of configs/fonts_tiny.py: two fonts classifiers, trained once per
  session."""
  from advgen.cli import load_config
  from advgen.train import classifier
  config = load_config(os.path.join(ROOT, 'configs', 'fonts_tiny.py'))
  workdir = built_once(tmp_path_factory, 'trained_tiny', lambda path: classifier.train(config,
                                                                                       path))
  return workdir, workdir_lib.read_json(os.path.join(workdir, 'results.json'))


@pytest.fixture(scope='session')
def fonts_manifold():
  return fonts.manifold('hard')


def record_steps(monkeypatch):
  """The steps the trainer runs from now on, in order (a list that fills as they run)."""
  from advgen.train import trainer
  ran = []
  make = trainer.train_step

  def recording(*args, **kwargs):
    step = make(*args, **kwargs)
    return lambda state, i: (ran.append(i), step(state, i))[1]

  monkeypatch.setattr(trainer, 'train_step', recording)
  return ran


def judged_overrides(trained_tiny):
  """Overrides of configs/vaegan_fonts_tiny.py that add the GAN-test accuracy by the tiny fonts
  classifiers."""
  return {'eval.classifier_workdir': trained_tiny[0], 'eval.num_classified': 40}


@pytest.fixture(scope='session')
def trained_vaegan_tiny(trained_tiny, tmp_path_factory):
  """(workdir, results) of configs/vaegan_fonts_tiny.py scored by the tiny classifiers:
  class-specific fonts VAE-GANs, trained once per session."""
  from advgen.studies import runs
  config = configured(os.path.join(ROOT, 'configs', 'vaegan_fonts_tiny.py'),
                      **judged_overrides(trained_tiny))
  workdir = built_once(tmp_path_factory, 'trained_vaegan_tiny',
                       lambda path: runs.train_generator(config, path))
  return workdir, workdir_lib.read_json(os.path.join(workdir, 'results.json'))
