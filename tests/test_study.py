"""scripts/study.py: Stutz et al.'s study end to end on a tiny grid — cells, resume, shards,
--report_only, the submitit launcher — and the report's numbers against the cells'."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from advgen.errors import UserError
from advgen.report import stutz as report
from advgen.studies import attack as attack_study, launch, stutz
from advgen.train import workdir as workdir_lib
from conftest import ROOT, built_once, configured

TINY = os.path.join(ROOT, 'configs', 'studies', 'stutz_fonts.py')


@pytest.fixture(scope='module')
def study(tmp_path_factory):
  config = configured(TINY + ':tiny')
  return built_once(tmp_path_factory, 'study_tiny', lambda path: stutz.run(config, path)), config


def _copy(workdir, tmp_path):
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  return copy


def test_the_study_writes_cells_the_report_and_figures(study):
  workdir, config = study
  assert stutz.finished(config, workdir) == stutz.cells(config)
  text = open(os.path.join(workdir, 'report.md')).read()
  for name in report.FIGURE_NAMES:
    assert os.path.getsize(os.path.join(workdir, 'figures', name)) > 0
  cell = workdir_lib.read_json(os.path.join(stutz.cell_dir(workdir, 'normal', 100), 'cell.json'))
  trained = workdir_lib.read_json(os.path.join(stutz.cell_dir(workdir, 'normal', 100),
                                               'results.json'))
  assert cell['per_model']['test_error'] == trained['per_model']['test_error']
  assert len(cell['per_model']['pgd_linf/success_rate']) == 2  # K seeds
  # The report's table holds the cells' numbers.
  mean, std = cell['mean']['test_error'], cell['std']['test_error']
  assert f'| 100 | {mean:.3f} ± {std:.3f} |' in text
  assert '## Findings' in text and 'on_true_manifold adversarial training' in text


def _examples(workdir, config):
  return [workdir_lib.read_arrays(attack_study.paths(stutz.cell_dir(workdir, *cell), 'study')
                                  ['examples']) for cell in stutz.cells(config)]


def test_fig3_pools_each_attacks_distances_of_its_counted_successes(study):
  workdir, config = study
  examples = _examples(workdir, config)
  distances = report.true_distances(examples)
  assert sorted(distances) == ['on_true_manifold', 'pgd_linf']
  for label, (distance, norm) in distances.items():
    m = config.attack.distance.num_images
    masks = [a[f'{label}.counted_success'][:, :m] for a in examples]
    np.testing.assert_array_equal(distance, np.concatenate(
        [a[f'{label}.true_distance'][mask] for a, mask in zip(examples, masks)]))
    np.testing.assert_array_equal(norm, np.concatenate(
        [a[f'{label}.l2'][:, :m][mask] for a, mask in zip(examples, masks)]))
  # Stutz Fig. 3: regular examples leave the manifold by about their norm, on-manifold ones not.
  regular, on_manifold = distances['pgd_linf'], distances['on_true_manifold']
  assert regular[0].size and on_manifold[0].size
  assert np.median(regular[0]) > 0.5 * np.median(regular[1])
  assert np.median(on_manifold[0]) < 1e-3 * np.median(regular[0])
  text = open(os.path.join(workdir, 'report.md')).read()
  assert (f'| pgd_linf | {regular[0].size} | {np.median(regular[0]):.3g} | '
          f'{np.median(regular[1]):.3g} |') in text
  assert f'| on_true_manifold | {on_manifold[0].size} | {np.median(on_manifold[0]):.3g} |' in text


def test_example_grids_show_each_cells_adversarial_images(study):
  workdir, config = study
  examples = _examples(workdir, config)
  summaries = [workdir_lib.read_json(os.path.join(stutz.cell_dir(workdir, *cell), 'cell.json'))
               for cell in stutz.cells(config)]
  rows, titles, marks = report.example_rows(summaries, examples, 'pgd_linf', count=4)
  assert titles == ['test images', 'normal N=100', 'on_true_manifold N=100']
  np.testing.assert_array_equal(rows[0], examples[0]['image'][:4])
  for row, mark, arrays in zip(rows[1:], marks[1:], examples):
    np.testing.assert_array_equal(row, arrays['pgd_linf.x_adv'][0, :4])
    np.testing.assert_array_equal(mark, arrays['pgd_linf.counted_success'][0, :4])
  for name in ('examples_pgd_linf.png', 'examples_on_true_manifold.png'):
    assert os.path.getsize(os.path.join(workdir, 'figures', name)) > 0
    assert f'figures/{name}' in open(os.path.join(workdir, 'report.md')).read()


def test_report_only_rebuilds_the_same_report(study, tmp_path):
  workdir, config = study
  copy = _copy(workdir, tmp_path)
  os.remove(os.path.join(copy, 'report.md'))
  shutil.rmtree(os.path.join(copy, 'figures'))
  proc = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'study.py'),
                         f'--config={TINY}:tiny', f'--workdir={copy}', '--report_only'],
                        capture_output=True, text=True, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-2000:]
  expected = open(os.path.join(workdir, 'report.md')).read()
  assert open(os.path.join(copy, 'report.md')).read() == expected
  assert proc.stdout == expected
  for name in report.FIGURE_NAMES + ('examples_pgd_linf.png',):
    assert os.path.getsize(os.path.join(copy, 'figures', name)) > 0
  proc = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'study.py'),
                         f'--config={TINY}:tiny', f'--workdir={copy}', '--report_only',
                         '--config.num_models=3'], capture_output=True, text=True, cwd=ROOT)
  assert proc.returncode == 2 and 'different config' in proc.stderr.strip().splitlines()[-1]


def test_a_killed_study_resumes_to_the_same_report(study, tmp_path, monkeypatch):
  workdir, config = study
  copy = _copy(workdir, tmp_path)
  cell = stutz.cell_dir(copy, 'on_true_manifold', 100)
  first = os.path.getmtime(os.path.join(stutz.cell_dir(copy, 'normal', 100), 'cell.json'))
  # Killed while attacking the second cell: its summary and attack results are missing.
  os.remove(os.path.join(cell, 'cell.json'))
  shutil.rmtree(os.path.join(cell, 'attacks'))
  os.remove(os.path.join(copy, 'report.md'))
  ran = []
  monkeypatch.setattr(stutz.runs, 'train_classifier',
                      lambda *a: ran.append(a) or pytest.fail('a finished training ran again'))
  stutz.run(config, copy)
  assert not ran
  assert os.path.getmtime(os.path.join(stutz.cell_dir(copy, 'normal', 100), 'cell.json')) == first
  assert open(os.path.join(copy, 'report.md')).read() == open(
      os.path.join(workdir, 'report.md')).read()


def test_shards_split_the_cells_deterministically(study, tmp_path):
  workdir, config = study
  cells = stutz.cells(config)
  assert cells == [('normal', 100), ('on_true_manifold', 100)]
  copy = _copy(workdir, tmp_path)
  for variant, n in cells:
    os.remove(os.path.join(stutz.cell_dir(copy, variant, n), 'cell.json'))
  os.remove(os.path.join(copy, 'report.md'))
  done = stutz.run(config, copy, shard_index=1, shard_count=2)
  assert [(s['variant'], s['num_train']) for s in done] == [cells[1]]
  assert not os.path.exists(os.path.join(copy, 'report.md'))  # shard 0 is missing
  with pytest.raises(UserError, match='1 cells are not finished'):
    stutz.write_report(config, copy)


def test_the_submitit_local_executor_runs_missing_cells_as_jobs(study, tmp_path):
  pytest.importorskip('submitit')
  workdir, config = study
  copy = _copy(workdir, tmp_path)
  os.remove(os.path.join(stutz.cell_dir(copy, 'normal', 100), 'cell.json'))
  os.remove(os.path.join(copy, 'report.md'))
  jobs = launch.submit(config, copy, 'submitit_local')
  assert len(jobs) == 2  # the missing cell, then the report
  assert all(job.state in ('DONE', 'COMPLETED', 'FINISHED') for job in jobs), [
      job.state for job in jobs]
  assert open(os.path.join(copy, 'report.md')).read() == open(
      os.path.join(workdir, 'report.md')).read()


@pytest.mark.parametrize('overrides, message', [
    ({'variants': ('normal', 'magic')}, "unknown training variant 'magic'"),
    ({'train_sizes': (100, -5)}, 'train_sizes must be positive'),
    ({'attack.attacks.pgd_linf.epsilon': -0.3}, 'epsilon must be a positive'),
    ({'classifier.num_epochs': 0}, 'num_epochs must be a positive integer'),
])
def test_bad_study_configs_fail_before_any_work(tmp_path, overrides, message):
  config = configured(TINY + ':tiny', **overrides)
  with pytest.raises(UserError, match=message):
    stutz.run(config, str(tmp_path / 'study'))
  assert not os.path.exists(tmp_path / 'study')


def test_findings_are_computed_from_the_numbers():
  def cell(variant, n, error, on, regular):
    per_model = {'test_error': [error, error], 'on_true_manifold/success_rate': [on, on],
                 'pgd_linf/success_rate': [regular, regular]}
    mean = {k: float(np.mean(v)) for k, v in per_model.items()}
    return {'variant': variant, 'num_train': n, 'per_model': per_model, 'mean': mean,
            'std': {k: 0.0 for k in per_model}}
  cells = [cell('normal', 250, 0.3, 0.9, 1.0), cell('normal', 1000, 0.2, 0.6, 1.0),
           cell('normal', 4000, 0.1, 0.4, 1.0), cell('on_true_manifold', 250, 0.2, 0.5, 1.0)]
  lines = report.findings(cells)
  assert ('On-manifold success (on_true_manifold) falls with N for normal training: 0.900 at '
          'N = 250, 0.400') in lines[0]
  assert 'tracks test error' in lines[1] and 'r = 0.99' in lines[1]
  assert 'Regular success is 1.000 for every normally trained model' in lines[2]
  assert 'lowers test error at N = 250 (0.200 against 0.300)' in lines[3]


def test_autoattack_is_set_against_stutz_pgd_per_cell():
  def cell(variant, n, pgd, autoattack):
    mean = {'test_error': 0.1, 'pgd_linf/robust_accuracy': pgd}
    if autoattack is not None:
      mean['autoattack/robust_accuracy'] = autoattack
    return {'variant': variant, 'num_train': n, 'mean': mean, 'std': {k: 0.01 for k in mean},
            'per_model': {k: [v] for k, v in mean.items()}}
  cells = [cell('normal', 250, 0.0, 0.0), cell('adversarial', 250, 0.6, 0.2),
           cell('adversarial', 1000, 0.7, 0.65), cell('normal', 1000, 0.1, None)]
  line = [l for l in report.findings(cells) if l.startswith('autoattack')]
  assert line == ['autoattack finds a lower robust accuracy than pgd_linf in 2 of 3 cells, by up '
                  'to 0.400 (adversarial N = 250: 0.200 against 0.600).']
  table = report.robustness_comparison(cells)
  assert '| 250 | 0.000 ± 0.010 / 0.000 ± 0.010 | 0.600 ± 0.010 / 0.200 ± 0.010 |' in table
  assert '| 1000 | 0.100 ± 0.010 / – | 0.700 ± 0.010 / 0.650 ± 0.010 |' in table
  higher = report.findings([cell('adversarial', 250, 0.5, 0.55)])
  assert ('autoattack finds no lower robust accuracy than pgd_linf in any of 1 cells; a higher '
          'one at adversarial N = 250 (0.550 against 0.500).') in higher
  assert report.robustness_comparison([cell('normal', 250, 0.1, None)]) == ''


def test_the_study_runs_on_a_tfds_dataset_with_learned_manifolds(tmp_path):
  """configs/studies/stutz_tfds.py on mock Fashion-MNIST: generators, an on-learned-manifold
  cell, the report."""
  import tensorflow_datasets as tfds
  config = configured(os.path.join(ROOT, 'configs', 'studies', 'stutz_tfds.py:fashion_mnist,tiny'),
                      variants=('on_learned_manifold',))
  assert stutz.needs_generator(config) and 'on_true_manifold' not in config.attack.attacks
  workdir = str(tmp_path / 'study')
  with tfds.testing.mock_data(num_examples=300):
    stutz.run(config, workdir)
  text = open(os.path.join(workdir, 'report.md')).read()
  assert 'on_learned_manifold: success rate' in text and 'fashion_mnist' in text
  cell = workdir_lib.read_json(os.path.join(stutz.cell_dir(workdir, 'on_learned_manifold', 100),
                                            'cell.json'))
  assert 0 <= cell['mean']['on_learned_manifold/success_rate'] <= 1
  with pytest.raises(UserError, match='only fonts has'):
    stutz.validate(configured(os.path.join(ROOT, 'configs', 'studies', 'stutz_tfds.py:mnist,tiny'),
                              **{'attack.attacks.pgd_linf.attack': 'on_true_manifold'}))
