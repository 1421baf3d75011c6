"""Flag and config mistakes: one line `error: ...`, exit status 2, nothing written."""

import os
import subprocess
import sys

import pytest
from absl import flags

from advgen import cli
from advgen.errors import UserError
from conftest import ROOT

CONFIGS = os.path.join(ROOT, 'configs')


@pytest.fixture(scope='module')
def script_flags():
  """The flags of scripts/train_classifier.py, defined once in this process."""
  if 'config' not in flags.FLAGS:
    cli.config_and_workdir_flags('scripts/train_classifier.py', 'config', 'workdir')
  return flags.FLAGS


def _parse_error(script_flags, capsys, *args):
  script_flags.unparse_flags()
  with pytest.raises(SystemExit) as exit_:
    cli._parse_flags(['train_classifier.py', *args])
  assert exit_.value.code == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith('error: ') and '\n' not in err, err
  return err


@pytest.mark.parametrize('args, message', [
    ((f'--config={CONFIGS}/fonts.py', '--workdir=/tmp/x', '--config.optimizer.learning_rat=0.1'),
     "no field 'optimizer.learning_rat' (did you mean --config.optimizer.learning_rate?)"),
    ((f'--config={CONFIGS}/fonts.py', '--workdir=/tmp/x', '--config.batchsize=50'),
     'did you mean --config.batch_size?'),
    ((f'--config={CONFIGS}/fonts.py',), '--workdir is required'),
    (('--workdir=/tmp/x',), '--config is required'),
    ((f'--config={CONFIGS}/nope.py', '--workdir=/tmp/x'), 'does not exist'),
    ((f'--config={CONFIGS}/fonts.py:10k', '--workdir=/tmp/x'), "invalid literal for int()"),
    ((f'--config={CONFIGS}/fonts.py', '--workdir=/tmp/x', '--wrkdir=/tmp/y'), 'unknown flag'),
])
def test_flag_mistakes_are_one_line_errors(script_flags, capsys, args, message):
  assert message in _parse_error(script_flags, capsys, *args)


def test_a_config_of_another_script_names_its_script(script_flags):
  config = cli.load_config(os.path.join(CONFIGS, 'vaegan_fonts_tiny.py'))
  with pytest.raises(UserError, match='it is a config of scripts/train_generator.py'):
    cli.check_script(config)
  cli.check_script(cli.load_config(os.path.join(CONFIGS, 'fonts_tiny.py')))  # its own: fine
  with pytest.raises(UserError, match='it is a config of scripts/attack.py'):
    cli.check_script(cli.load_config(os.path.join(CONFIGS, 'attack_fonts_tiny.py')))


def test_the_script_exits_2_with_one_line(tmp_path):
  """The real exit path: a misspelled field through scripts/train_classifier.py."""
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'scripts', 'train_classifier.py'),
       f'--config={CONFIGS}/fonts_tiny.py', f'--workdir={tmp_path}/run',
       '--config.optimizer.learning_rat=0.1'], capture_output=True, text=True, cwd=ROOT)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      "error: config has no field 'optimizer.learning_rat' (did you mean "
      "--config.optimizer.learning_rate?)"]
  assert not os.path.exists(tmp_path / 'run')
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'scripts', 'attack.py'),
       f'--config={CONFIGS}/fonts_tiny.py', f'--workdir={tmp_path}/run'],
      capture_output=True, text=True, cwd=ROOT)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith(
      'error: --config is not a config of scripts/attack.py')
