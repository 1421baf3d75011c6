"""Trains classifiers as configured and writes metrics, checkpoints and results.json.

  python scripts/train_classifier.py --config=configs/fonts.py --workdir=/tmp/advgen/fonts

Run it again on the same workdir to resume after an interruption.
"""

from advgen import cli
from advgen.train import classifier

_CONFIG, _WORKDIR = cli.config_and_workdir_flags(
    'Experiment config file.', 'Directory for checkpoints, metrics and results.')


def main(argv):
  del argv
  results = classifier.train(_CONFIG.value, _WORKDIR.value)
  print(f'test error {results["test_error_mean"]:.4f} (per model: {results["test_error"]})')


if __name__ == '__main__':
  cli.run(main)
