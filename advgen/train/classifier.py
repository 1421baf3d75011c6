"""Training K classifiers at once: one compiled step over stacked states (`over_models`), data
parallel.

The K models differ only in their seed (initialization, data order, per-step randomness), as the
papers train several models per setting. The batch is sharded over all local devices.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from advgen import data, models
from advgen.errors import UserError
from advgen.train.checkpoint import Checkpoints
from advgen.train import loop, state as state_lib, steps, variants, workdir as workdir_lib

RESULTS = 'results.json'


def data_mesh():
  return jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicate(tree):
  """Copies on every device of the data mesh; on one device, arrays committed to it.

  XLA:CPU runs programs over mesh-sharded inputs several times slower even on a one-device mesh,
  and committed arrays match what orbax restores, so a resumed run reuses the compiled step.
  """
  if jax.device_count() == 1:
    return jax.device_put(tree, jax.devices()[0])
  return jax.device_put(tree, NamedSharding(data_mesh(), P()))


def batch_sharding():
  """Batch axis 1 (after the model axis) split over the data mesh; None on one device."""
  return NamedSharding(data_mesh(), P(None, 'data')) if jax.device_count() > 1 else None


def over_models(fn):
  """`fn` on each model's slice of arguments stacked along a leading model axis, in one program.

  On accelerators the models are vmapped. On CPU, vmap turns every convolution into a grouped
  one that XLA:CPU runs slowly (5 fonts conv nets trained together: 0.57x the speed of training
  them one after another, against 1.07x unrolled; benchmarks/train_throughput.py; PGD on 5 of
  them: unrolled 3.2x as fast as vmapped, benchmarks/attack_throughput.py), so there the K
  models are unrolled in the program instead; compile time then grows with K.
  """
  if jax.default_backend() != 'cpu':
    return jax.vmap(fn)

  def unrolled(*args):
    count = jax.tree.leaves(args)[0].shape[0]
    outs = [fn(*jax.tree.map(lambda a: a[k], args)) for k in range(count)]
    return state_lib.stack(outs)

  return unrolled


def model_keys(seed, num_models):
  """One key per model: model k of seed s is the same whatever K is."""
  return jax.vmap(lambda k: jax.random.fold_in(jax.random.key(seed), k))(jnp.arange(num_models))


@functools.partial(jax.jit, static_argnames='module')
def _stacked_batch_logits(variables, x, *, module):
  return over_models(lambda v: module.apply(v, x, train=False))(variables)


def stacked_logits(module, variables, x, batch_size=500):
  """Logits (K, N, C) of K stacked models on all of `x`.

  Batches are padded to one size, so every call with the same models compiles nothing new; they
  are dispatched from the host rather than looped over inside the program, where XLA:CPU runs
  convolutions several times slower.
  """
  x = np.asarray(x)
  n = len(x)
  padded = np.concatenate([x, np.zeros((-n % batch_size,) + x.shape[1:], x.dtype)])
  parts = [_stacked_batch_logits(variables, padded[i:i + batch_size], module=module)
           for i in range(0, len(padded), batch_size)]
  return np.concatenate(jax.device_get(parts), axis=1)[:, :n]


def _validate(config, dataset):
  if config.num_models < 1:
    raise UserError(f'config.num_models must be at least 1, got {config.num_models}')
  if config.batch_size < 1 or config.batch_size > len(dataset.y_train):
    raise UserError(f'config.batch_size={config.batch_size} must be between 1 and the number of '
                    f'training examples ({len(dataset.y_train)})')
  variants.batch_transform(config)  # an unknown variant fails here, before anything is written
  if config.batch_size % jax.device_count():
    raise UserError(f'config.batch_size={config.batch_size} must be divisible by the '
                    f'{jax.device_count()} devices')


def build(config, dataset):
  """(module, initial stacked state, optax transform, schedule, steps per epoch)."""
  module = models.classifier(config.model.name, dataset.num_classes,
                             **config.model.get('kwargs', {}))
  steps_per_epoch = len(dataset.y_train) // config.batch_size
  tx, schedule = state_lib.optimizer(config.optimizer, steps_per_epoch)
  init_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(model_keys(config.seed,
                                                                       config.num_models))
  init = jax.jit(jax.vmap(lambda k: state_lib.create(module, tx, k, dataset.input_shape)))
  return module, init(init_keys), tx, schedule, steps_per_epoch


def _multi_step(state, order, step, x_all, y_all, keys, *, module, tx, batch_transform,
                batch_size, steps_per_epoch, sharding):
  """One update of each of the K models on its own batch (rows of `order`)."""
  start = (step % steps_per_epoch) * batch_size
  index = jax.lax.dynamic_slice_in_dim(order, start, batch_size, axis=1)  # (K, B)
  x = x_all[index]
  if sharding is not None:
    x = jax.lax.with_sharding_constraint(x, sharding)
  y = y_all[index]
  step_keys = jax.vmap(lambda k: jax.random.fold_in(k, step))(keys)
  update = functools.partial(steps.train_step, module=module, tx=tx,
                             batch_transform=batch_transform)
  return over_models(update)(state, x, y, step_keys)


def make_train_step(config, dataset, module, tx, steps_per_epoch):
  """`train_step(state, step) -> (state, metrics)` for stacked states, data already on device.

  Each model's data order is a per-epoch permutation of its own seed, so a run resumed at any
  step sees the same batches as an uninterrupted one.
  """
  x_train, y_train = replicate((dataset.x_train, dataset.y_train))
  keys = model_keys(config.seed, config.num_models)
  order_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
  step_keys = jax.vmap(lambda k: jax.random.fold_in(k, 2))(keys)
  num_train = len(dataset.y_train)
  epoch_order = jax.jit(lambda epoch: jax.vmap(
      lambda k: jax.random.permutation(jax.random.fold_in(k, epoch), num_train))(order_keys))
  multi_step = jax.jit(functools.partial(
      _multi_step, module=module, tx=tx, batch_transform=variants.batch_transform(config),
      batch_size=config.batch_size, steps_per_epoch=steps_per_epoch,
      sharding=batch_sharding()))

  @functools.lru_cache(maxsize=1)
  def order_of(epoch):
    return epoch_order(epoch)

  def train_step(state, step):
    return multi_step(state, order_of(step // steps_per_epoch), step, x_train, y_train,
                      step_keys)

  return train_step


def train(config, workdir):
  """Trains config.num_models classifiers in `workdir`; returns the results dict."""
  results_path = os.path.join(workdir, RESULTS)
  workdir_lib.check_config(workdir, config)
  workdir_lib.refuse_finished(results_path)
  dataset = data.load(config.dataset)
  _validate(config, dataset)
  module, state, tx, schedule, steps_per_epoch = build(config, dataset)
  workdir_lib.prepare(workdir, config)  # only a config that builds is recorded
  num_steps = config.num_epochs * steps_per_epoch
  state = replicate(state)
  train_step = make_train_step(config, dataset, module, tx, steps_per_epoch)
  num_train = len(dataset.y_train)

  def error_rates(state, x, y):
    logits = stacked_logits(module, state.variables, x, config.eval_batch_size)
    return np.mean(np.argmax(logits, -1) != y, axis=1)

  def evaluate(state):
    return {'test_error': error_rates(state, dataset.x_test, dataset.y_test)}

  state = loop.fit(
      workdir=workdir, state=state, train_step=train_step, num_steps=num_steps,
      steps_per_epoch=steps_per_epoch, examples_per_step=config.batch_size * config.num_models,
      evaluate=evaluate, log_every=config.log_every,
      checkpoint_every=config.get('checkpoint_every_epochs', 1) * steps_per_epoch,
      max_to_keep=config.get('max_checkpoints', 2),
      extra_metrics=lambda step: {'learning_rate': float(schedule(step))})
  train_error = error_rates(state, dataset.x_train, dataset.y_train)
  test_error = error_rates(state, dataset.x_test, dataset.y_test)
  results = {
      'num_train': num_train, 'num_test': len(dataset.y_test), 'num_steps': num_steps,
      'train_error': train_error.tolist(), 'test_error': test_error.tolist(),
      'test_error_mean': float(test_error.mean()), 'test_error_std': float(test_error.std()),
      'train_error_mean': float(train_error.mean()),
  }
  workdir_lib.write_results(results_path, results)
  return results


def restore(workdir, step=None):
  """(config, dataset, module, stacked variables) of the classifiers trained in `workdir`."""
  config = workdir_lib.stored_config(workdir, 'classifier', 'scripts/train_classifier.py',
                                     ('num_models', 'variant'))
  dataset = data.load(config.dataset)
  module, state, _, _, _ = build(config, dataset)
  checkpoints = Checkpoints(workdir)
  state = checkpoints.restore(state, step)
  checkpoints.close()
  return config, dataset, module, state.variables
