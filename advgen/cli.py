"""Script plumbing: the --config/--workdir flags, one-line errors with exit status 2, and loading
config files by path."""

import importlib.util
import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from advgen.errors import UserError


class _LibraryChatter(logging.Filter):
  """Drops checkpointing libraries' INFO lines so training progress stays readable."""

  def filter(self, record):
    return record.levelno >= logging.WARNING or '/orbax/' not in record.pathname


def config_and_workdir_flags(config_help, workdir_help):
  """Defines the required --config (a config file, locked) and --workdir flags of a script."""
  config = config_flags.DEFINE_config_file('config', None, config_help, lock_config=True)
  workdir = flags.DEFINE_string('workdir', None, workdir_help)
  flags.mark_flags_as_required(['config', 'workdir'])
  return config, workdir


def run(main):
  logging.getLogger('absl').addFilter(_LibraryChatter())

  def guarded(argv):
    try:
      return main(argv)
    except UserError as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(2)

  app.run(guarded)


def load_config(path, *args):
  """`get_config(*args)` of the config file at `path`: lets a config extend a sibling file."""
  spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(*args)
