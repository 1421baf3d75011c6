"""Script plumbing: the --config/--workdir flags, one-line errors with exit status 2 (flag and
config mistakes included), and loading config files by path."""

import difflib
import importlib.util
import logging
import math
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from advgen.errors import UserError

# The fields every config of a script has: they tell a config given to the wrong script.
SCRIPT_FIELDS = {
    'scripts/train_classifier.py': ('num_models', 'variant', 'optimizer'),
    'scripts/train_generator.py': ('loss', 'class_specific', 'optimizer'),
    'scripts/attack.py': ('attacks', 'num_images', 'distance'),
    'scripts/certify.py': ('sigmas', 'n0'),
    'scripts/study.py': ('study',),
}


class _LibraryChatter(logging.Filter):
  """Drops checkpointing libraries' INFO lines so training progress stays readable."""

  def filter(self, record):
    return record.levelno >= logging.WARNING or '/orbax/' not in record.pathname


_SCRIPT = {}
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # configs/ lives there


def config_and_workdir_flags(script, config_help, workdir_help):
  """Defines the required --config (a config file of `script`, locked) and --workdir flags."""
  config = config_flags.DEFINE_config_file('config', None, config_help, lock_config=True)
  workdir = flags.DEFINE_string('workdir', None, workdir_help)
  flags.mark_flags_as_required(['config', 'workdir'])
  _SCRIPT['name'] = script
  return config, workdir


def fail(message):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def _config_arg(argv):
  return next((a[len('--config='):] for a in argv if a.startswith('--config=')), None)


def _config_path(argv):
  arg = _config_arg(argv)
  return None if arg is None else arg.split(':')[0]


def _field_names(config, prefix=''):
  for key, value in config.items():
    yield prefix + key
    if hasattr(value, 'items'):
      yield from _field_names(value, f'{prefix}{key}.')


def _unknown_field(argv):
  """'config has no field ...' for the first `--config.NAME=` override that names no field of
  the config file, with the closest field; None if every override names one."""
  try:
    fields = list(_field_names(load_config(_config_path(argv))))
  except Exception:  # the file itself is broken: that is the error to report
    return None
  for arg in argv:
    if arg.startswith('--config.'):
      name = arg[len('--config.'):].split('=')[0]
      if name not in fields:
        match = difflib.get_close_matches(name, fields, n=1, cutoff=0.5)
        hint = f' (did you mean --config.{match[0]}?)' if match else ''
        return f'config has no field {name!r}{hint}'
  return None


def _config_hint(path):
  """Where this script's config files are, and the closest one to `path`."""
  folder = 'configs/studies' if _SCRIPT.get('name') == 'scripts/study.py' else 'configs'
  found = os.path.join(_ROOT, folder)
  names = sorted(os.listdir(found)) if os.path.isdir(found) else []
  match = difflib.get_close_matches(os.path.basename(path), names, n=1, cutoff=0.7)
  hint = f' (did you mean {folder}/{match[0]}?)' if match else ''
  return f'pass --config={folder}/NAME.py{hint}'


def _explain(error, argv):
  """A one-line message for a flag-parsing failure."""
  text = str(error)
  path = _config_path(argv)
  if path is not None and not os.path.isfile(path):
    return f'config file {path} does not exist; {_config_hint(path)}'
  unknown = _unknown_field(argv) if path is not None else None
  if unknown:
    return unknown
  if isinstance(error, flags.UnrecognizedFlagError):
    return f'unknown flag --{error.flagname}; see --helpshort for the flags'
  if 'must have a value other than None' in text:
    flag = text.split('--')[1].split('=')[0]
    return f'--{flag} is required: pass --{flag}=...'
  if 'Error whilst parsing config file' in text:
    last = [line for line in text.splitlines() if line.strip()][-1].strip()
    return f'cannot build the config {_config_arg(argv)}: {last}'
  return text.splitlines()[0]


def _parse_flags(argv):
  try:
    path = _config_path(argv)
    if path is not None and not os.path.isfile(path):
      raise FileNotFoundError(path)
    args = flags.FLAGS(argv)
    flags.FLAGS.config.keys()  # a config that failed to load raises only when it is used
    return args
  except Exception as e:  # flag values raise many types (AttributeError for a missing field)
    fail(_explain(e, argv))


def check_script(config):
  """Refuses a config written for another script, naming the script it belongs to."""
  script = _SCRIPT.get('name')
  if script is None:
    return
  missing = [f for f in SCRIPT_FIELDS[script] if f not in config]
  if not missing:
    return
  owner = next((s for s, fields in SCRIPT_FIELDS.items() if all(f in config for f in fields)),
               None)
  hint = (f'it is a config of {owner}; run that script or pass a config of {script}' if owner
          else f'pass a config of {script}')
  raise UserError(f'--config is not a config of {script} (it has no {", ".join(missing)}); '
                  f'{hint}')


def _numbers(value, name):
  """(dotted name, value) of every float in a config value, nested entries and sequences
  included."""
  if hasattr(value, 'items'):
    for key, item in value.items():
      yield from _numbers(item, f'{name}.{key}')
  elif isinstance(value, (list, tuple)):
    for index, item in enumerate(value):
      yield from _numbers(item, f'{name}[{index}]')
  elif isinstance(value, float):
    yield name, value


def check_finite(config):
  """Refuses a NaN or infinite number anywhere in the config, naming its field: range checks
  such as `value <= 0` let NaN through, and the run would fail only after its work."""
  for name, value in _numbers(config, 'config'):
    if not math.isfinite(value):
      raise UserError(f'{name} is {value}, not a finite number; set it to a finite number')


def run(main):
  """Runs `main` like absl's app.run, turning UserErrors and flag mistakes into one line
  `error: ...` on stderr and exit status 2."""
  logging.getLogger('absl').addFilter(_LibraryChatter())
  logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)  # its backend probing

  def guarded(argv):
    try:
      check_script(flags.FLAGS.config)
      check_finite(flags.FLAGS.config)
      return main(argv)
    except UserError as e:
      _fail_now(e)

  app.run(guarded, flags_parser=_parse_flags)


def _fail_now(message):
  """`fail`, without the interpreter's shutdown: after a failed orbax restore, tensorstore's
  pending reads report their own errors from other threads as they are collected, tracebacks that
  would follow the one error line. Everything a run writes is flushed as it goes."""
  print(f'error: {message}', file=sys.stderr)
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(2)


def load_config(path, *args):
  """`get_config(*args)` of the config file at `path`: lets a config extend a sibling file."""
  spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(*args)
