"""Runs a study end to end — Stutz et al.'s (training-set sizes x variants x seeds, attacked),
Deniz et al.'s overfitting study or Fawzi et al.'s bounds report — and writes report.md and
figures into --workdir.

  python scripts/study.py --config=configs/studies/stutz_fonts.py:quick --workdir=/tmp/advgen/quick
  python scripts/study.py --config=configs/studies/deniz_fonts.py:quick --workdir=/tmp/advgen/dq
  python scripts/study.py --config=configs/studies/bounds_fonts.py --workdir=/tmp/advgen/bounds

Run it again on the same workdir to resume (finished cells are skipped). --report_only rebuilds
the report from the stored results; --launcher=slurm submits every cell as a submitit job;
--shard_index/--shard_count run a deterministic share of the cells (SLURM arrays, Kubernetes
indexed jobs).
"""

import os

from absl import flags

from advgen import cli
from advgen.errors import UserError
from advgen.studies import bounds, deniz, launch, stutz
from advgen.train import workdir as workdir_lib

_CONFIG, _WORKDIR = cli.config_and_workdir_flags(
    'scripts/study.py', 'Study config file (configs/studies/).', 'Directory of the study.')
_LAUNCHER = flags.DEFINE_string('launcher', 'local', f'One of {", ".join(launch.LAUNCHERS)}.')
_SHARD_INDEX = flags.DEFINE_integer('shard_index', 0, 'Which share of the cells to run.')
_SHARD_COUNT = flags.DEFINE_integer('shard_count', 1, 'In how many shares the cells are split.')
_REPORT_ONLY = flags.DEFINE_bool('report_only', False, 'Rebuild the report from stored results.')


def main(argv):
  del argv
  config, workdir = _CONFIG.value, _WORKDIR.value
  launch.check_flags(config.study, _LAUNCHER.value, _SHARD_INDEX.value, _SHARD_COUNT.value)
  if _REPORT_ONLY.value:
    _check_stored(config, workdir)
  if config.study == 'bounds':
    text = bounds.write_report(bounds.stored(workdir), workdir) if _REPORT_ONLY.value else (
        bounds.run(config, workdir)['table'])
  elif config.study == 'deniz' and _REPORT_ONLY.value:
    deniz.validate(config)
    text = deniz.write_report(config, workdir)
  elif config.study == 'deniz':
    text = deniz.run(config, workdir)
  elif _REPORT_ONLY.value:
    stutz.validate(config, workdir)
    text = stutz.write_report(config, workdir)
  elif _LAUNCHER.value != 'local':
    jobs = launch.submit(config, workdir, _LAUNCHER.value)
    text = f'submitted {len(jobs)} jobs: ' + ' '.join(str(job.job_id) for job in jobs) + '\n'
  else:
    stutz.run(config, workdir, _SHARD_INDEX.value, _SHARD_COUNT.value)
    done = len(stutz.finished(config, workdir))
    total = len(stutz.cells(config))
    text = (open(stutz.report_path(workdir)).read() if done == total else
            f'{done}/{total} cells done; run the remaining shards, then --report_only\n')
  print(text, end='')


def _check_stored(config, workdir):
  """--report_only rebuilds the report of a run of this study: refuses any other workdir before
  anything is written."""
  if not os.path.isfile(os.path.join(workdir, 'config.json')):
    raise UserError(f'--workdir={workdir} holds no study (no config.json); run the study there '
                    'first, without --report_only')
  workdir_lib.check_config(workdir, config)


if __name__ == '__main__':
  cli.run(main)
