"""Bounds on the robustness of any classifier next to measured robustness (Fawzi et al.).

  python scripts/bounds.py --config=configs/bounds_fonts.py --workdir=/tmp/advgen/bounds_fonts

Trains (or loads) a generator and classifiers in sub-workdirs of --workdir, then writes
results.json, report.md (the table), figures/robustness_cdf.png and figures/figure2.png. Run it
again on the same workdir to resume an interrupted training.
"""

from absl import flags
from ml_collections import config_flags

from advgen import cli
from advgen.bounds import experiment

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Bounds config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for the models, results and figures.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  results = experiment.run(_CONFIG.value, _WORKDIR.value)
  print(results['table'], end='')
  print(f'(results in {_WORKDIR.value}/{experiment.RESULTS})')


if __name__ == '__main__':
  cli.run(main)
