"""Researcher mistakes, by class: each is refused with one line naming the right field or flag,
before any work, leaving nothing behind; advice in an error, followed literally, is accepted."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from advgen import cli, data
from advgen.errors import UserError
from advgen.studies import attack as attack_study, bounds, deniz, launch, stutz
from advgen.train import classifier, workdir as workdir_lib
from advgen.train.checkpoint import Checkpoints
from conftest import ROOT, built_once, configured

CONFIGS = os.path.join(ROOT, 'configs')
TINY = os.path.join(CONFIGS, 'fonts_tiny.py')
ATTACK = os.path.join(CONFIGS, 'attack_fonts_tiny.py')
STUTZ = os.path.join(CONFIGS, 'studies', 'stutz_fonts.py:tiny')
DENIZ = os.path.join(CONFIGS, 'studies', 'deniz_fonts.py:tiny')
BOUNDS = os.path.join(CONFIGS, 'studies', 'bounds_tiny.py')


def _untrained(path):
  """A classifier workdir of configs/fonts_tiny.py holding its initial state as checkpoint 1 and
  a results.json: what loading needs, without training."""
  config = configured(TINY)
  setup = classifier.build(config, data.load(config.dataset))
  workdir_lib.prepare(path, config)
  checkpoints = Checkpoints(path)
  checkpoints.save(1, setup.state)
  checkpoints.close()
  workdir_lib.write_json(os.path.join(path, 'results.json'), {'mine': 1})


@pytest.fixture(scope='module')
def classifiers(tmp_path_factory):
  return built_once(tmp_path_factory, 'untrained_tiny', _untrained)


def _script(name, *args):
  """The script run as a user runs it: without the tests' compilation cache, whose entries from
  other instruction sets make XLA log a line of its own."""
  env = {k: v for k, v in os.environ.items() if not k.startswith('JAX_')}
  return subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', name), *args],
                        capture_output=True, text=True, cwd=ROOT, env=env)


def _one_error_line(proc):
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr[-3000:]
  return lines[0]


@pytest.mark.parametrize('path, field, value, named', [
    (TINY, 'optimizer.learning_rate', float('nan'), 'config.optimizer.learning_rate'),
    (ATTACK, 'attacks.pgd_linf.epsilon', float('inf'), 'config.attacks.pgd_linf.epsilon'),
    (STUTZ, 'attack.attacks.pgd_linf.step_size', float('nan'),
     'config.attack.attacks.pgd_linf.step_size'),
    (BOUNDS, 'modulus.radii', (0.5, float('-inf')), 'config.modulus.radii[1]'),
])
def test_numbers_that_are_not_finite_are_refused_by_name(path, field, value, named):
  config = configured(path, **{field: value})
  with pytest.raises(UserError, match=re.escape(named) + ' is'):
    cli.check_finite(config)
  cli.check_finite(configured(path))  # the config as shipped is finite


def test_a_nan_from_the_command_line_is_refused_before_any_work(tmp_path):
  proc = _script('train_classifier.py', f'--config={TINY}', f'--workdir={tmp_path}/run',
                 '--config.optimizer.learning_rate=nan')
  assert 'config.optimizer.learning_rate is nan' in _one_error_line(proc)
  assert not os.path.exists(tmp_path / 'run')


def test_requests_larger_than_the_data_are_refused(classifiers, tmp_path):
  fonts_config = configured(TINY, **{'dataset.num_fonts': 1000})
  with pytest.raises(UserError, match=r'num_fonts=1000 but only (\d+) fonts') as error:
    data.check(fonts_config.dataset)
  available = int(re.search(r'only (\d+) fonts', str(error.value)).group(1))
  assert f'config.dataset.num_fonts={available}' in str(error.value)
  assert 'config.dataset.font_dirs' in str(error.value)
  fonts_config.dataset.num_fonts = available  # the advice, literally: accepted
  data.check(fonts_config.dataset)
  study = configured(STUTZ, **{'classifier.dataset.num_fonts': 1000})
  with pytest.raises(UserError, match=r'config\.classifier\.dataset\.num_fonts=1000 but'):
    stutz.validate(study)
  for field, value, named in (('num_examples', 41, 'config.num_examples=41'),
                              ('distance.num_images', 41, 'config.distance.num_images=41')):
    with pytest.raises(UserError, match=re.escape(named)):
      attack_study.validate(configured(ATTACK, **{field: value}))
  with pytest.raises(UserError, match='config.num_images=200 is more than the 100 test images'):
    attack_study.run(configured(ATTACK, num_images=200), classifiers)
  assert not os.path.exists(os.path.join(classifiers, 'attacks'))
  with pytest.raises(UserError, match=r'config\.attack_images=61 is more than'):
    deniz.validate(configured(DENIZ, attack_images=61))
  with pytest.raises(UserError, match=r'config\.attack\.num_images=101 is more than'):
    stutz.validate(configured(STUTZ, **{'attack.num_images': 101}))


def test_a_corrupt_checkpoint_gives_the_error_line_alone(classifiers, tmp_path):
  """Orbax leaves reads pending when a restore fails; their 'Event loop is closed' reports and
  orbax's own log lines must not surround the error."""
  workdir = tmp_path / 'corrupt'
  shutil.copytree(classifiers, workdir)
  for root, _, files in os.walk(workdir / 'checkpoints' / '1' / 'default'):
    for name in files:
      if os.path.basename(root) == 'd':  # the array data, not the metadata
        with open(os.path.join(root, name), 'wb') as f:
          f.write(b'garbage')
  proc = _script('attack.py', f'--config={ATTACK}', f'--workdir={workdir}')
  assert 'checkpoint 1 in' in _one_error_line(proc) and 'unreadable' in proc.stderr
  assert not os.path.exists(workdir / 'attacks')


@pytest.mark.parametrize('args, workdir, message', [
    (('--config=' + STUTZ, '--report_only'), 'empty', 'holds no study (no config.json)'),
    (('--config=' + BOUNDS, '--report_only'), 'new', 'holds no study (no config.json)'),
    (('--config=' + STUTZ, '--launcher=slurm'), 'new', '--launcher=slurm needs SLURM (no sbatch'),
])
def test_refused_studies_leave_nothing(tmp_path, monkeypatch, args, workdir, message):
  monkeypatch.setenv('PATH', str(tmp_path))  # no sbatch here
  os.makedirs(tmp_path / 'empty')
  proc = _script('study.py', *args, f'--workdir={tmp_path / workdir}')
  assert message in _one_error_line(proc)
  assert os.listdir(tmp_path / 'empty') == [] and not os.path.exists(tmp_path / 'new')


def test_slurm_without_sbatch_is_refused_before_the_workdir_is_made(tmp_path, monkeypatch):
  monkeypatch.setenv('PATH', str(tmp_path))
  with pytest.raises(UserError, match='drop --launcher'):
    launch.submit(configured(STUTZ), str(tmp_path / 'study'), 'slurm')
  assert not os.path.exists(tmp_path / 'study')


@pytest.mark.parametrize('study, flags', [
    ('deniz', {'shard_index': 1, 'shard_count': 2}),
    ('bounds', {'launcher': 'submitit_local'}),
    ('deniz', {'shard_index': 1}),
    ('bounds', {'shard_count': 0}),
])
def test_flag_advice_followed_literally_is_accepted(study, flags):
  with pytest.raises(UserError) as error:
    launch.check_flags(study, **flags)
  dropped = re.findall(r'--(\w+)', str(error.value).split('drop ')[1].split(' (')[0])
  assert sorted(dropped) == sorted(flags)
  launch.check_flags(study, **{k: v for k, v in flags.items() if k not in dropped})


def test_flag_and_field_errors_name_the_right_thing(monkeypatch):
  with pytest.raises(UserError, match=r'^--shard_count=0 must be a positive integer'):
    launch.check_flags('stutz', shard_count=0)
  with pytest.raises(UserError, match=r'^--shard_index=2 must be in \[0, --shard_count=2\)'):
    launch.check_flags('stutz', shard_index=2, shard_count=2)
  with pytest.raises(UserError, match=r'^config\.attack\.attacks\.pgd_linf: attack'):
    stutz.validate(configured(STUTZ, **{'attack.attacks.pgd_linf.epsilon': -0.3}))
  with pytest.raises(UserError, match=r'^config\.attack\.num_examples=41'):
    stutz.validate(configured(STUTZ, **{'attack.num_examples': 41}))
  monkeypatch.setitem(cli._SCRIPT, 'name', 'scripts/study.py')
  message = cli._explain(FileNotFoundError(), ['study.py', '--config=configs/stutz_fonts.py'])
  assert message.endswith('pass --config=configs/studies/NAME.py (did you mean '
                          'configs/studies/stutz_fonts.py?)')
  monkeypatch.setitem(cli._SCRIPT, 'name', 'scripts/train_classifier.py')
  message = cli._explain(FileNotFoundError(), ['x.py', '--config=configs/fontz.py'])
  assert message.endswith('pass --config=configs/NAME.py (did you mean configs/fonts.py?)')


def test_the_bounds_study_on_a_classifier_workdir_keeps_its_results(classifiers, tmp_path):
  config = configured(BOUNDS)
  with pytest.raises(UserError, match='pass a new --workdir') as error:
    bounds.run(config, classifiers)
  assert 'results.json' not in str(error.value)
  assert json.load(open(os.path.join(classifiers, 'results.json'))) == {'mine': 1}
  bounds.validate(config)  # the advice, literally: a new workdir is accepted
  bounds.check_workdir(config, str(tmp_path / 'new'))
