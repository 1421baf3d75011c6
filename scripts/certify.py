"""Certifies the classifiers trained in --workdir by randomized smoothing; writes
WORKDIR/certify/NAME/results.json, radii.npz and certified_accuracy.png (NAME = --config.name).

  python scripts/certify.py --config=configs/certify_fonts.py:0.25 --workdir=/tmp/advgen/fonts
"""

from advgen import cli
from advgen.report import certify as report
from advgen.studies import certify

_CONFIG, _WORKDIR = cli.config_and_workdir_flags(
    'scripts/certify.py', 'Certification config file.', 'A workdir of scripts/train_classifier.py.')


def main(argv):
  del argv
  results = certify.run(_CONFIG.value, _WORKDIR.value)
  print(report.table_markdown(results), end='')
  print(f'wrote {certify.paths(_WORKDIR.value, results["name"])["dir"]}')


if __name__ == '__main__':
  cli.run(main)
