"""One trainer for K stacked models of any kind: keys, per-epoch data order, the multi-model
step, resume and the run's preamble. Classifiers and generators supply only their step function
(`make_step`) and their evaluation.

Model k of a run depends only on (seed, k): its initialization, data order and per-step keys are
folded from its own key, so it gets the same numbers whether it is trained with the others or
alone. Each model draws its batches from its own pool of example indices (every example for a
classifier, the examples of its class for a class-specific generator), in a per-epoch
permutation, so a run resumed at any step sees the batches of an uninterrupted one.

Batches are dicts of per-example arrays (`image`, `label`, and whatever the dataset carries, such
as fonts' `font` and `theta`), gathered inside the compiled step.
"""

import dataclasses
import functools
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from advgen.errors import UserError
from advgen.models import stacked
from advgen.train import devices, loop, state as state_lib, workdir as workdir_lib
from advgen.train.checkpoint import Checkpoints

RESULTS = 'results.json'
_INIT, _ORDER, _STEP, _PAIR_ORDER = 0, 1, 2, 3  # what each model key is folded with


def batch_dict(dataset, split):
  """The per-example arrays of a split: image, label and the dataset's true latents."""
  images, labels = (dataset.x_train, dataset.y_train) if split == 'train' else (
      dataset.x_test, dataset.y_test)
  latents = dataset.latents.get(split, {})
  return {'image': images, 'label': labels,
          **{k: np.asarray(v) for k, v in latents.items() if len(v) == len(labels)}}


@dataclasses.dataclass
class Setup:
  """A run's models and its data plan, for `fit` and for restoring checkpoints."""
  module: Any
  state: Any  # the stacked initial states
  schedule: Callable  # step -> learning rate
  multi_step: Callable  # jitted (state, orders, step, data, shared, keys) -> (state, metrics)
  steps_per_epoch: int
  batch_size: int
  keys: Any  # (K,) one key per stacked model
  pools: np.ndarray  # (K, m) example indices each model draws from, padded
  counts: np.ndarray  # (K,) how many entries of each pool are real
  pair_pools: Any = None  # (K, m') a second pool each batch also draws a `paired` batch from
  pair_counts: Any = None

  @property
  def num_models(self):
    return len(self.counts)


def validate_common(config):
  """Checks of the settings every training config has, before any data is loaded."""
  for field in ('batch_size', 'num_epochs', 'log_every'):
    if not isinstance(config[field], int) or config[field] < 1:
      raise UserError(f'config.{field} must be a positive integer, got {config[field]!r}')
  devices.check_batch_size(config.batch_size)
  for field in ('checkpoint_every_epochs', 'max_checkpoints'):
    value = config.get(field, 1)
    if not isinstance(value, int) or value < 1:
      raise UserError(f'config.{field} must be a positive integer, got {value!r}')
  keep = config.get('keep_checkpoint_every_epochs', 0)
  if not isinstance(keep, int) or keep < 0:
    raise UserError(f'config.keep_checkpoint_every_epochs must be a non-negative integer (0: keep '
                    f'only the last config.max_checkpoints), got {keep!r}')
  ema = config.get('ema_decay', 0.0)
  if not 0 <= ema < 1:
    raise UserError(f'config.ema_decay must be in [0, 1) (0: no moving average of the params), '
                    f'got {ema}')


def build(config, module, make_step, input_shape, pools, counts, *, models=None,
          over=stacked.over_models, settings=None, updates_per_step=1, delta_shape=None,
          pair_pools=None, pair_counts=None):
  """The Setup of `models` (default: all) of a run whose model k draws from `pools[k]`.

  `make_step(module, tx, settings)` returns `step(state, batch, key, shared) -> (state, metrics)`
  for one model; `settings` (default: the whole config) is what it reads. Programs are cached on
  their settings, so runs with the same config in one process (a resumed run, tests) compile
  once. The number of steps per epoch comes from the smallest pool, so a model trained alone
  takes exactly the steps it takes among the others. A step that makes `updates_per_step`
  optimizer updates (free adversarial training) decays the learning rate once per epoch all the
  same; `delta_shape` gives each state a carried perturbation of that shape. With `pair_pools`,
  every batch also holds `batch['paired']`, as many examples drawn from model k's pair pool in a
  separate per-epoch permutation (Stutz et al.'s on-learned-manifold adversarial training).
  """
  total = len(counts)
  models = tuple(range(total)) if models is None else tuple(int(k) for k in models)
  if not models or min(models) < 0 or max(models) >= total:
    raise UserError(f'models must be a non-empty subset of 0..{total - 1}, got {list(models)}')
  if config.batch_size > counts.min():
    raise UserError(f'config.batch_size={config.batch_size} is larger than the {counts.min()} '
                    'training examples a model draws from; lower it or raise num_train')
  steps_per_epoch = int(counts.min()) // config.batch_size
  settings = config if settings is None else settings
  ema_decay = float(config.get('ema_decay', 0.0))
  schedule, init, multi_step = _programs(
      make_step, module, _frozen(config.optimizer), _frozen(settings), steps_per_epoch,
      config.batch_size, tuple(input_shape), ema_decay, over, updates_per_step, delta_shape)
  keys = stacked.model_keys(config.seed, total)[jnp.asarray(models)]
  index = np.asarray(models)
  pairs = (None, None) if pair_pools is None else (pair_pools[index], pair_counts[index])
  return Setup(module, init(keys), schedule, multi_step, steps_per_epoch, config.batch_size, keys,
               pools[index], counts[index], *pairs)


def _frozen(config):
  return json.dumps(workdir_lib.config_to_dict(config), sort_keys=True)


@functools.lru_cache(maxsize=8)
def _programs(make_step, module, optimizer, settings, steps_per_epoch, batch_size, input_shape,
              ema_decay, over, updates_per_step, delta_shape):
  """(schedule of steps, jitted init, jitted multi-model step), cached on their static
  settings."""
  tx, update_schedule = state_lib.optimizer(ml_collections.ConfigDict(json.loads(optimizer)),
                                            steps_per_epoch * updates_per_step)
  schedule = lambda step: update_schedule(step * updates_per_step)
  init = jax.jit(jax.vmap(lambda k: state_lib.create(
      module, tx, jax.random.fold_in(k, _INIT), input_shape, average=ema_decay > 0,
      delta_shape=delta_shape)))
  step_fn = make_step(module, tx, ml_collections.ConfigDict(json.loads(settings)))
  multi_step = jax.jit(functools.partial(
      _multi_step, step_fn=step_fn, over=over, batch_size=batch_size,
      steps_per_epoch=steps_per_epoch, sharding=devices.batch_sharding(), ema_decay=ema_decay))
  return schedule, init, multi_step


def _multi_step(state, orders, step, data, shared, keys, *, step_fn, over, batch_size,
                steps_per_epoch, sharding, ema_decay):
  """One update of each stacked model on its own batch (rows of `orders[0]`, and a paired batch
  from rows of `orders[1]` if given), then of the moving average of their params if kept."""
  start = (step % steps_per_epoch) * batch_size
  gather = lambda order: jax.tree.map(
      lambda a: a[jax.lax.dynamic_slice_in_dim(order, start, batch_size, axis=1)], data)
  batch = gather(orders[0])  # (K, B, ...)
  if orders[1] is not None:
    batch['paired'] = gather(orders[1])
  if sharding is not None:
    batch = jax.tree.map(lambda b: jax.lax.with_sharding_constraint(b, sharding), batch)
  step_keys = jax.vmap(lambda k: jax.random.fold_in(k, step))(keys)
  state, metrics = over(lambda s, b, k: step_fn(s, b, k, shared))(state, batch, step_keys)
  if ema_decay > 0:
    state = state_lib.average_params(state, step, ema_decay)
  return state, metrics


_permutation = jax.jit(jax.random.permutation, static_argnums=1)


def train_step(setup, data, shared=None):
  """`train_step(state, step) -> (state, metrics)` over the stacked models, data on device."""
  data, shared = devices.replicate((data, shared or {}))
  order_keys = jax.vmap(lambda k: jax.random.fold_in(k, _ORDER))(setup.keys)
  pair_keys = jax.vmap(lambda k: jax.random.fold_in(k, _PAIR_ORDER))(setup.keys)
  step_keys = jax.vmap(lambda k: jax.random.fold_in(k, _STEP))(setup.keys)
  used = setup.steps_per_epoch * setup.batch_size

  def epoch_order(pools, counts, keys, epoch):
    """(K, used) example indices: each model's pool in its own order for this epoch (repeated
    when the pool is smaller than an epoch)."""
    rows = [row[:count][np.asarray(_permutation(jax.random.fold_in(key, epoch), int(count)))]
            for row, count, key in zip(pools, counts, keys)]
    return jnp.asarray(np.stack([np.resize(r, used) for r in rows]))

  @functools.lru_cache(maxsize=1)
  def order_of(epoch):
    paired = None if setup.pair_pools is None else epoch_order(
        setup.pair_pools, setup.pair_counts, pair_keys, epoch)
    return epoch_order(setup.pools, setup.counts, order_keys, epoch), paired

  def step(state, i):
    return setup.multi_step(state, order_of(i // setup.steps_per_epoch), i, data, shared,
                            step_keys)

  return step


def begin(config, workdir):
  """The checks before a run loads anything: its workdir holds no other config and no finished
  run. Returns the path of its results file."""
  results_path = os.path.join(workdir, RESULTS)
  workdir_lib.check_writable(workdir)
  workdir_lib.check_config(workdir, config)
  workdir_lib.refuse_finished(results_path)
  return results_path


def fit(config, workdir, setup, data, evaluate=None, shared=None):
  """Trains the stacked models of `setup` on the per-example arrays `data` in `workdir` (from
  its last checkpoint if any); returns the final stacked state."""
  return loop.fit(
      workdir=workdir, state=devices.replicate(setup.state),
      train_step=train_step(setup, data, shared),
      num_steps=config.num_epochs * setup.steps_per_epoch, steps_per_epoch=setup.steps_per_epoch,
      examples_per_step=config.batch_size * setup.num_models, evaluate=evaluate,
      log_every=config.log_every,
      checkpoint_every=config.get('checkpoint_every_epochs', 1) * setup.steps_per_epoch,
      max_to_keep=config.get('max_checkpoints', 2),
      keep_period=config.get('keep_checkpoint_every_epochs', 0) * setup.steps_per_epoch or None,
      extra_metrics=lambda step: {'learning_rate': float(setup.schedule(step))})


def restore_state(workdir, setup, step=None):
  """The stacked state saved in `workdir` at `step` (default: the latest)."""
  checkpoints = Checkpoints(workdir)
  try:
    return checkpoints.restore(setup.state, step)
  finally:
    checkpoints.close()
