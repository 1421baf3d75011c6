"""Training throughput: images/second, and the speed-up of K models in one compiled program.

  python benchmarks/train_throughput.py [--num_models=5] [--steps=50] [--batch_sizes=100,250,1000]

Times the same compiled update step (Stutz's fonts conv net, batch 100) for K stacked models
against one model run K times in sequence, in one process, and prints their ratio. Then one
model's images/s at each batch size, as ratios to the first: XLA:CPU's convolution gradients slow
down at large batches (the attacks run them in chunks), but a training step cannot be chunked
without changing its batch-norm statistics, so this shows what the fall costs at the batch sizes
the configs use.
"""

import time

import jax
from absl import app, flags

from advgen import data
from advgen.cli import load_config
from advgen.train import classifier, devices, trainer

_NUM_MODELS = flags.DEFINE_integer('num_models', 5, 'K: models trained together.')
_STEPS = flags.DEFINE_integer('steps', 50, 'Timed steps per measurement.')
_BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['100', '250', '1000'],
                                  'Batch sizes of the one-model sweep.')
_CONFIG = flags.DEFINE_string('config', 'configs/fonts.py', 'Classifier config to benchmark.')


def images_per_second(config, dataset, steps):
  """Images/s of `steps` updates of config.num_models stacked models (after compilation)."""
  setup = classifier.build(config, dataset)
  train_step = trainer.train_step(setup, trainer.batch_dict(dataset, 'train'))
  state = devices.replicate(setup.state)
  state, _ = train_step(state, 0)  # compile
  jax.block_until_ready(state)
  start = time.perf_counter()
  for step in range(1, steps + 1):
    state, metrics = train_step(state, step)
  jax.block_until_ready(metrics)
  return steps * config.batch_size * config.num_models / (time.perf_counter() - start)


def main(argv):
  del argv
  config = load_config(_CONFIG.value)
  config.dataset.num_train = 2000
  dataset = data.load(config.dataset)
  k = _NUM_MODELS.value
  config.num_models = 1
  single = images_per_second(config, dataset, _STEPS.value)
  config.num_models = k
  together = images_per_second(config, dataset, _STEPS.value)
  print(f'devices: {jax.device_count()} x {jax.devices()[0].device_kind}')
  print(f'one model:            {single:10.0f} images/s')
  print(f'{k} models together:   {together:10.0f} images/s (one program, `over_models`)')
  print(f'K-model speed-up: {together / single:.2f}x over training the {k} models one after '
        'another')
  config.num_models = 1
  first = None
  for batch_size in map(int, _BATCH_SIZES.value):
    config.batch_size = batch_size
    rate = images_per_second(config, dataset, max(_STEPS.value * 100 // batch_size, 5))
    first = first or rate
    print(f'one model, batch {batch_size:5d}: {rate:10.0f} images/s '
          f'({rate / first:.2f}x the first batch size)')


if __name__ == '__main__':
  app.run(main)
