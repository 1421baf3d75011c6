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
