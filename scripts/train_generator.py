"""Trains generators (VAE, class-specific VAE-GAN, DCGAN) as configured and writes metrics,
checkpoints, latent codes, PNG grids and results.json.

  python scripts/train_generator.py --config=configs/vaegan_fonts.py --workdir=/tmp/advgen/vaegan_fonts

Run it again on the same workdir to resume after an interruption.
"""

from advgen import cli
from advgen.train import generator

_CONFIG, _WORKDIR = cli.config_and_workdir_flags(
    'Experiment config file.', 'Directory for checkpoints, metrics and results.')


def main(argv):
  del argv
  results = generator.train(_CONFIG.value, _WORKDIR.value)
  summary = [f'{key} {results[key]:.4f}' for key in
             ('test_l1', 'sample_distance', 'test_distance', 'noise_distance') if key in results]
  print(', '.join(summary) or 'done', f'(results in {_WORKDIR.value}/{generator.RESULTS})')


if __name__ == '__main__':
  cli.run(main)
