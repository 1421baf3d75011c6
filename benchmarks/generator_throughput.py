"""Speed-up of training K class-specific generators together (one vmapped, jitted step) against
training them one after another (the same step for one model, K times), measured in one run.

  python benchmarks/generator_throughput.py --config=configs/vaegan_fonts.py --steps=10
  python benchmarks/generator_throughput.py --batch_sizes=4,25   # per-model batch sizes to compare

Both variants run the same number of optimizer steps per model on the same data; compilation is
excluded (one warm-up step each). Prints images per second of each and the speed-up, per batch.
"""

import time

import jax
from absl import flags
from ml_collections import config_flags

from advgen import cli, data
from advgen.errors import UserError
from advgen.train import generator, trainer

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/vaegan_fonts.py',
                                          'Generator config file.', lock_config=True)
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed optimizer steps per model.')
_BATCH_SIZES = flags.DEFINE_list('batch_sizes', [], 'Per-model batch sizes to measure '
                                 '(default: the config\'s batch_size).')
_REPEATS = flags.DEFINE_integer('repeats', 2, 'Timings alternate between the variants this many '
                                'times; the best of each is kept (other processes share the CPU).')


def _time_steps(config, dataset, models, num_steps):
  """Seconds for `num_steps` steps of the stacked `models`, after a warm-up step."""
  setup = generator.build(config, dataset, models)
  step = trainer.train_step(setup, trainer.batch_dict(dataset, 'train'))
  state, _ = step(setup.state, 0)
  jax.block_until_ready(state)
  start = time.perf_counter()
  for i in range(1, num_steps + 1):
    state, _ = step(state, i)
  jax.block_until_ready(state)
  return time.perf_counter() - start


def main(argv):
  del argv
  config = _CONFIG.value
  if _STEPS.value < 1 or _REPEATS.value < 1:
    raise UserError('--steps and --repeats must be positive')
  if not config.class_specific:
    raise UserError('the benchmark compares class-specific models; pick a config with '
                    'class_specific=True (e.g. configs/vaegan_fonts.py)')
  dataset = data.load(config.dataset)
  k = dataset.num_classes
  print(f'{config.model.name}, {k} class models, {_STEPS.value} steps each, '
        f'{jax.device_count()} {jax.devices()[0].platform} device(s)')
  for batch_size in [int(b) for b in _BATCH_SIZES.value] or [config.batch_size]:
    config.batch_size = batch_size
    together, one_by_one = [], []
    for _ in range(_REPEATS.value):
      together.append(_time_steps(config, dataset, None, _STEPS.value))
      one_by_one.append(sum(_time_steps(config, dataset, [m], _STEPS.value) for m in range(k)))
    images = _STEPS.value * batch_size * k
    best_together, best_sequential = min(together), min(one_by_one)
    print(f'batch {batch_size} per model: together (vmapped) {best_together:6.2f} s '
          f'({images / best_together:7.1f} images/s), one after another {best_sequential:6.2f} s '
          f'({images / best_sequential:7.1f} images/s); '
          f'speed-up of training together: {best_sequential / best_together:.2f}x')


if __name__ == '__main__':
  cli.run(main)
