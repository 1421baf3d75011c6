"""Trains classifiers as configured and writes metrics, checkpoints and results.json.

  python scripts/train_classifier.py --config=configs/fonts.py --workdir=/tmp/advgen/fonts

Run it again on the same workdir to resume after an interruption.
"""

from absl import flags
from ml_collections import config_flags

from advgen import cli
from advgen.train import classifier

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and results.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  results = classifier.train(_CONFIG.value, _WORKDIR.value)
  print(f'test error {results["test_error_mean"]:.4f} (per model: {results["test_error"]})')


if __name__ == '__main__':
  cli.run(main)
