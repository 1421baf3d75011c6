"""Stutz et al.'s study: training-set sizes N x training variants, K seeds per cell, each cell
attacked (regular, on the true manifold, on the learned manifold), then report.md and figures.

Layout of a study's workdir:
  config.json                    the study's config (a rerun with another one is refused)
  generator/                     class-specific generators, trained once on the whole pool
  cells/VARIANT-nN/              a classifier workdir (K seeds in one program), its attack run
                                 under attacks/study/, and cell.json, its summary (written last:
                                 it marks the cell done)
  report.md, figures/            from the cells' summaries and stored examples (`write_report`)

A killed study started again skips finished cells and resumes the running one from its
checkpoint. Cells are independent: `cells(config)` fixes their order, a shard runs every
`shard_count`-th of them, and `advgen.studies.launch` submits them as cluster jobs.
"""

import os
import time

import ml_collections
from absl import logging

from advgen import attacks, data, results as results_lib
from advgen.errors import UserError
from advgen.report import stutz as report
from advgen.studies import attack as attack_study, runs
from advgen.train import classifier, generator as generator_lib, variants
from advgen.train import workdir as workdir_lib

CELLS, CELL, GENERATOR, ATTACK_NAME = 'cells', 'cell.json', 'generator', 'study'


def cells(config):
  """The grid's (variant, N) cells in a fixed order: by N, then variant as configured."""
  return [(variant, int(n)) for n in config.train_sizes for variant in config.variants]


def cell_dir(workdir, variant, n):
  return os.path.join(workdir, CELLS, f'{variant}-n{n}')


def needs_generator(config):
  return 'on_learned_manifold' in config.variants or any(
      attacks.registry.needs_manifold(spec) == 'learned' for spec in config.attack.attacks.values())


def _copy(config):
  return ml_collections.ConfigDict(config.to_dict())


def cell_config(config, workdir, variant, n):
  """The classifier config of a cell: config.classifier with its N, variant and seeds."""
  cell = _copy(config.classifier)
  cell.seed = config.seed
  cell.num_models = config.num_models
  cell.dataset.num_train = n
  cell.variant.name = variant
  if variant == 'on_learned_manifold':
    cell.variant.generator_workdir = os.path.join(workdir, GENERATOR)
  return cell


def attack_config(config, workdir):
  """The attack run of every cell: config.attack, named 'study', with the study's generators."""
  attack = _copy(config.attack)
  attack.name = ATTACK_NAME
  if needs_generator(config):
    attack.generator_workdir = os.path.join(workdir, GENERATOR)
  return attack


def validate(config, workdir='.'):
  """Every check of a study config (the grid, every cell's classifier config, the attack and
  generator configs) before any work."""
  sizes, names = list(config.train_sizes), list(config.variants)
  if not sizes or any(not isinstance(n, int) or n < 1 for n in sizes):
    raise UserError(f'config.train_sizes must be positive integers, got {sizes}')
  if not names or len(set(names)) != len(names):
    raise UserError(f'config.variants must name distinct training variants, got {names}')
  if not isinstance(config.num_models, int) or config.num_models < 1:
    raise UserError(f'config.num_models must be a positive integer, got {config.num_models!r}')
  for variant in names:
    if variant not in variants.VARIANTS:
      raise UserError(f'unknown training variant {variant!r} in config.variants; choose from '
                      f'{", ".join(variants.VARIANTS)}')
    classifier.validate(cell_config(config, workdir, variant, sizes[0]))
  if needs_generator(config):
    generator_lib.validate(config.generator)
    if not config.generator.class_specific:
      raise UserError('the learned manifold needs class-specific generators: set '
                      'config.generator.class_specific=True')
  true = [label for label, spec in config.attack.attacks.items()
          if attacks.registry.needs_manifold(spec) == 'true']
  if true and config.classifier.dataset.name != 'fonts':
    raise UserError(f'config.attack.attacks.{true[0]} attacks the true manifold, which only fonts '
                    f'has; remove it for {config.classifier.dataset.name!r} (use '
                    'on_learned_manifold)')
  attack = attack_config(config, workdir)
  with attack.unlocked():
    attack.generator_workdir = ''  # it exists only once the study has trained it
  attack_study.validate(_without_learned(attack), prefix='config.attack')
  data.check(cell_config(config, workdir, names[0], max(sizes)).dataset,
             'config.classifier.dataset', 'max(config.train_sizes)')
  if needs_generator(config):
    data.check(config.generator.dataset, 'config.generator.dataset')
  num_test = config.classifier.dataset.get('num_test')
  if num_test is not None and config.attack.num_images > num_test:
    raise UserError(f'config.attack.num_images={config.attack.num_images} is more than the '
                    f'{num_test} test images of config.classifier.dataset.num_test; lower it or '
                    'raise num_test')


def _without_learned(attack):
  """The attack config without its learned-manifold attacks (checked once their generator
  exists)."""
  checked = _copy(attack)
  for label, spec in attack.attacks.items():
    if attacks.registry.needs_manifold(spec) == 'learned':
      del checked.attacks[label]
  return checked


def train_generator(config, workdir):
  """The study's class-specific generators, trained once on the whole training pool."""
  if needs_generator(config):
    runs.train_or_load('generator', config.generator, os.path.join(workdir, GENERATOR))


def run_cell(config, workdir, variant, n):
  """Trains, attacks and summarizes one cell (resuming whatever part was done); its summary."""
  path = cell_dir(workdir, variant, n)
  summary_path = os.path.join(path, CELL)
  if os.path.exists(summary_path):
    return workdir_lib.read_json(summary_path)
  *_, trained = runs.train_or_load('classifier', cell_config(config, workdir, variant, n), path)
  attack_results = attack_study.paths(path, ATTACK_NAME)['results']
  if os.path.exists(attack_results):
    attacked = workdir_lib.read_json(attack_results)
  else:
    attacked = attack_study.run(attack_config(config, workdir), path)
  summary = summarize_cell(variant, n, trained, attacked)
  workdir_lib.write_json(summary_path, summary)
  return summary


def summarize_cell(variant, n, trained, attacked):
  """The cell's per-model metrics: test error, and every attack's per-model numbers as
  'ATTACK/metric', with their mean and std."""
  per_model = {'test_error': trained['per_model']['test_error'],
               'train_error': trained['per_model']['train_error']}
  for label, entry in attacked['attacks'].items():
    for metric, values in entry['per_model'].items():
      per_model[f'{label}/{metric}'] = values
  return {'variant': variant, 'num_train': n, **results_lib.summarize(per_model)}


def _line(index, total, variant, n, summary, eta):
  rates = ', '.join(f'{k.split("/")[0]} {v:.3f}' for k, v in summary['mean'].items()
                    if k.endswith('/success_rate'))
  return (f'cell {index}/{total} {variant} N={n}: test error {summary["mean"]["test_error"]:.3f}'
          f'; success {rates}; ETA {time.strftime("%H:%M:%S", time.gmtime(eta))}')


def run(config, workdir, shard_index=0, shard_count=1):
  """Runs this shard's cells (all of them by default) and, once every cell is done, writes the
  report; returns the list of finished cell summaries of this shard."""
  prepare(config, workdir)
  train_generator(config, workdir)
  mine = cells(config)[shard_index::shard_count]
  total, done, summaries, start = len(cells(config)), 0, [], time.time()
  for variant, n in mine:
    summary = run_cell(config, workdir, variant, n)
    done += 1
    eta = (time.time() - start) / done * (len(mine) - done)
    logging.info(_line(len(finished(config, workdir)), total, variant, n, summary, eta))
    summaries.append(summary)
  if len(finished(config, workdir)) == total:
    write_report(config, workdir)
  return summaries


def check(config, workdir):
  """Every check of the study and its workdir, writing nothing."""
  validate(config, workdir)
  workdir_lib.check_writable(workdir)
  workdir_lib.check_config(workdir, config)


def prepare(config, workdir):
  """Checks everything and records the study's config before any work."""
  check(config, workdir)
  workdir_lib.prepare(workdir, config)


def finished(config, workdir):
  return [cell for cell in cells(config)
          if os.path.exists(os.path.join(cell_dir(workdir, *cell), CELL))]


def write_report(config, workdir):
  """report.md and figures/ from the cells' summaries and stored examples; refuses while cells
  are missing."""
  missing = [f'{v}-n{n}' for v, n in cells(config) if (v, n) not in finished(config, workdir)]
  if missing:
    raise UserError(f'{len(missing)} cells are not finished ({", ".join(missing[:4])}...); run '
                    'the study (or its remaining shards) first')
  summaries = [workdir_lib.read_json(os.path.join(cell_dir(workdir, *c), CELL))
               for c in cells(config)]
  examples = [workdir_lib.read_arrays(attack_study.paths(cell_dir(workdir, *c), ATTACK_NAME)
                                      ['examples']) for c in cells(config)]
  text = report.markdown(summaries, config.get('title', "Stutz et al.'s study"), examples)
  with open(os.path.join(workdir, report.REPORT), 'w') as f:
    f.write(text)
  report.figures(summaries, os.path.join(workdir, report.FIGURES), examples)
  return text


def report_path(workdir):
  return os.path.join(workdir, report.REPORT)

