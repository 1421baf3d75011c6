"""Bounds on the robustness of any classifier next to measured robustness (Fawzi et al.).

  python scripts/bounds.py --config=configs/bounds_fonts.py --workdir=/tmp/advgen/bounds_fonts

Trains (or loads) a generator and classifiers in sub-workdirs of --workdir, then writes
results.json, report.md (the table), figures/robustness_cdf.png and figures/figure2.png. Run it
again on the same workdir to resume an interrupted training.
"""

from advgen import cli
from advgen.studies import bounds

_CONFIG, _WORKDIR = cli.config_and_workdir_flags(
    'scripts/bounds.py', 'Bounds config file.', 'Directory for the models, results and figures.')


def main(argv):
  del argv
  results = bounds.run(_CONFIG.value, _WORKDIR.value)
  print(results['table'], end='')
  print(f'(results in {_WORKDIR.value}/{bounds.RESULTS})')


if __name__ == '__main__':
  cli.run(main)
