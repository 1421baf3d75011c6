"""Running a study's cells as cluster jobs with submitit (SLURM), not a home-made scheduler.

Each cell is an independent job (`stutz.run_cell`); the generators, when the study needs them,
are one job before them; the report is one job after them. On SLURM the phases are chained with
`afterok` dependencies and `submit` returns at once; submitit's local executor (for tests, or a
workstation) has no dependencies, so there each phase is awaited before the next is submitted.
For one cell larger than a host, see the README (`jax.distributed.initialize()` and the data mesh).
"""

import json
import os
import shutil

import ml_collections

from advgen.errors import UserError
from advgen.studies import stutz

LAUNCHERS = ('local', 'slurm', 'submitit_local')
STUDIES = ('stutz', 'deniz', 'bounds')


def _config(config_json):
  return ml_collections.ConfigDict(json.loads(config_json))


def generator_job(config_json, workdir):
  stutz.train_generator(_config(config_json), workdir)


def cell_job(config_json, workdir, variant, n):
  return stutz.run_cell(_config(config_json), workdir, variant, n)


def report_job(config_json, workdir):
  return stutz.write_report(_config(config_json), workdir)


def check_flags(study, launcher='local', shard_index=0, shard_count=1):
  """Refuses scripts/study.py's --launcher/--shard_* values that cannot run `study`; an error
  names exactly the flags to change."""
  if launcher not in LAUNCHERS:
    raise UserError(f'unknown --launcher={launcher}; choose one of {", ".join(LAUNCHERS)}')
  if study not in STUDIES:
    raise UserError(f'unknown config.study {study!r}; choose one of {", ".join(STUDIES)}')
  given = [f'--{flag}' for flag, value, default in (
      ('launcher', launcher, 'local'), ('shard_index', shard_index, 0),
      ('shard_count', shard_count, 1)) if value != default]
  if study != 'stutz' and given:
    raise UserError(f'the {study} study runs as one job; drop {" and ".join(given)} (they split '
                    'the cells of a stutz study)')
  if shard_count < 1:
    raise UserError(f'--shard_count={shard_count} must be a positive integer (the number of '
                    'shares; 1: all cells)')
  if not 0 <= shard_index < shard_count:
    raise UserError(f'--shard_index={shard_index} must be in [0, --shard_count={shard_count})')


def executor(config, workdir, launcher):
  """A submitit executor for `launcher`, with config.launcher's partition, GPUs and time."""
  try:
    import submitit
  except ImportError:
    raise UserError(f'--launcher={launcher} needs submitit: pip install -e ".[cluster]"') from None
  if launcher == 'slurm' and shutil.which('sbatch') is None:
    raise UserError('--launcher=slurm needs SLURM (no sbatch on PATH); run on a SLURM login node, '
                    'or drop --launcher to run the cells here')
  folder = os.path.join(workdir, 'jobs', '%j')
  settings = config.launcher
  if launcher == 'submitit_local':
    made = submitit.LocalExecutor(folder=folder)
    made.update_parameters(timeout_min=settings.timeout_min)
    return made
  made = submitit.AutoExecutor(folder=folder, cluster='slurm')
  made.update_parameters(slurm_partition=settings.partition or None,
                         gpus_per_node=settings.gpus_per_node, timeout_min=settings.timeout_min,
                         cpus_per_task=settings.cpus_per_task, name='advgen-study')
  return made


def _after(made, jobs):
  if jobs and getattr(made, 'cluster', None) == 'slurm':
    made.update_parameters(slurm_additional_parameters={
        'dependency': 'afterok:' + ':'.join(str(job.job_id) for job in jobs)})
  elif jobs:
    for job in jobs:
      job.result()  # the local executor has no dependencies: wait for the phase to finish


def submit(config, workdir, launcher):
  """Submits the study's unfinished phases; returns the jobs (generator, cells..., report)."""
  stutz.check(config, workdir)
  made = executor(config, workdir, launcher)  # it makes its folder, and refuses a missing SLURM
  stutz.prepare(config, workdir)
  config_json = config.to_json()
  jobs = []
  if stutz.needs_generator(config):
    jobs.append(made.submit(generator_job, config_json, workdir))
  _after(made, jobs)
  todo = [cell for cell in stutz.cells(config) if cell not in stutz.finished(config, workdir)]
  cell_jobs = [made.submit(cell_job, config_json, workdir, variant, n) for variant, n in todo]
  _after(made, cell_jobs)
  report = made.submit(report_job, config_json, workdir)
  if getattr(made, 'cluster', None) != 'slurm':
    report.result()
  return jobs + cell_jobs + [report]
