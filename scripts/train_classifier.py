"""Trains classifiers as configured and writes metrics, checkpoints and results.json.

  python scripts/train_classifier.py --config=configs/fonts.py --workdir=/tmp/advgen/fonts

Run it again on the same workdir to resume after an interruption.
"""

from advgen import cli
from advgen.studies import runs

_CONFIG, _WORKDIR = cli.config_and_workdir_flags(
    'scripts/train_classifier.py', 'Experiment config file.',
    'Directory for checkpoints, metrics and results.')


def main(argv):
  del argv
  results = runs.train_classifier(_CONFIG.value, _WORKDIR.value)
  print(f'test error {results["mean"]["test_error"]:.4f} '
        f'(per model: {results["per_model"]["test_error"]})')


if __name__ == '__main__':
  cli.run(main)
