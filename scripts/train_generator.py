"""Trains generators (VAE, class-specific VAE-GAN, DCGAN) as configured and writes metrics,
checkpoints, latent codes, PNG grids and results.json.

  python scripts/train_generator.py --config=configs/vaegan_fonts.py --workdir=/tmp/advgen/vaegan_fonts

Run it again on the same workdir to resume after an interruption.
"""

from advgen import cli
from advgen.studies import runs
from advgen.train import trainer

_CONFIG, _WORKDIR = cli.config_and_workdir_flags(
    'scripts/train_generator.py', 'Experiment config file.',
    'Directory for checkpoints, metrics and results.')


def main(argv):
  del argv
  results = runs.train_generator(_CONFIG.value, _WORKDIR.value)
  values = {**results, **results.get('mean', {})}
  summary = [f'{key} {values[key]:.4f}' for key in
             ('test_l1', 'gan_test_accuracy', 'sample_distance', 'test_distance',
              'noise_distance') if key in values]
  print(', '.join(summary) or 'done', f'(results in {_WORKDIR.value}/{trainer.RESULTS})')


if __name__ == '__main__':
  cli.run(main)
