"""Shared test set-up: a persistent XLA compilation cache, the fonts manifold, the repo root.

Most test time on a CPU is XLA compilation of the same small programs; the on-disk cache lets
every test (and the scripts tests start as subprocesses) compile each program once.
"""

import os

import jax
import pytest

from advgen.data import fonts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPILATION_CACHE = os.path.join(ROOT, '.pytest_cache', 'jax')

os.environ['JAX_COMPILATION_CACHE_DIR'] = COMPILATION_CACHE
os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0.2'
jax.config.update('jax_compilation_cache_dir', COMPILATION_CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.2)


def configured(path, **overrides):
  """The config file at `path` with dotted-key overrides, e.g. `**{"model.name": "mlp"}`."""
  from advgen.cli import load_config
  config = load_config(path)
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    target = config
    for part in parents:
      target = target[part]
    target[leaf] = value
  return config


@pytest.fixture(scope='session')
def trained_tiny(tmp_path_factory):
  """(workdir, results) of configs/fonts_tiny.py: two fonts classifiers, trained once."""
  from advgen.cli import load_config
  from advgen.train import classifier
  workdir = str(tmp_path_factory.mktemp('trained_tiny'))
  config = load_config(os.path.join(ROOT, 'configs', 'fonts_tiny.py'))
  return workdir, classifier.train(config, workdir)


@pytest.fixture(scope='session')
def fonts_manifold():
  return fonts.manifold('hard')
