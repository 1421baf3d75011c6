"""Training K classifiers at once with the one trainer skeleton (`trainer`): the classifier's
step function, its evaluation and its results.

The K models differ only in their seed (initialization, data order, per-step randomness), as the
papers train several models per setting. The batch is sharded over all local devices.
"""

import functools

import jax
import ml_collections
import numpy as np

from advgen import attacks, data, manifold, models, results as results_lib
from advgen.data import splits
from advgen.errors import UserError
from advgen.models import stacked
from advgen.train import steps, trainer, variants, workdir as workdir_lib

SAFE_CODE_NORM = 2.0  # Stutz et al.'s "safe" codes: |z|_inf <= 2, inside the truncated prior
_RESPLIT = 4  # what model keys are folded with for their splits (the trainer uses 0 to 3)


def validate(config):
  """Every check of a classifier config that needs no data, before anything is loaded."""
  if not isinstance(config.num_models, int) or config.num_models < 1:
    raise UserError(f'config.num_models must be a positive integer, got {config.num_models!r}')
  trainer.validate_common(config)
  if not isinstance(config.eval_batch_size, int) or config.eval_batch_size < 1:
    raise UserError(f'config.eval_batch_size must be a positive integer, got '
                    f'{config.eval_batch_size!r}')
  models.check_classifier_name(config.model.name)
  variants.validate(config)
  if not isinstance(config.get('resplit', False), bool):
    raise UserError(f'config.resplit must be True or False, got {config.resplit!r}')
  if config.get('resplit', False) and variants.needs_generator(config):
    raise UserError('config.resplit=True does not combine with on-learned-manifold training '
                    '(its codes belong to the fixed training split); set config.resplit=False')


@functools.lru_cache(maxsize=None)
def _step_maker(generator):
  """`make_step` for the trainer, with the generator module the variant decodes through (static;
  its variables and code box come with the step's `shared` arrays). Cached, so one module gives
  one function and the trainer's compiled programs are reused."""

  def make_step(module, tx, config):
    return functools.partial(_step, module=module, tx=tx, config=config, generator=generator)

  return make_step


def _step(state, batch, key, shared, *, module, tx, config, generator):
  """One classifier's update on a batch dict, with the configured training variant."""
  learned = None
  if generator is not None:
    learned = attacks.learned_manifold(generator, shared['generator'], shared['code_box'])
  variant = variants.get(config, learned)
  if variant.replays > 1:
    return steps.free_train_step(state, batch, key, module=module, tx=tx,
                                 epsilon=variant.epsilon, replays=variant.replays)
  return steps.train_step(state, batch, key, module=module, tx=tx, variant=variant)


def data_splits(config, dataset):
  """(per-example arrays, train indices (K, n_train), test indices (K, n_test)) of the K models:
  every model on the dataset's own split (test indices None), or with config.resplit each model
  on its own stratified reshuffle of train + test (Deniz et al.'s runs; indices into the pooled
  arrays), drawn from (config.seed, model index) alone."""
  train = trainer.batch_dict(dataset, 'train')
  num_models = config.num_models
  if not config.get('resplit', False):
    return train, np.tile(np.arange(len(dataset.y_train)), (num_models, 1)), None
  keys = stacked.model_keys(config.seed, num_models)
  parts = [splits.stratified_resplit(dataset.y_train, dataset.y_test,
                                     jax.random.fold_in(keys[k], _RESPLIT))
           for k in range(num_models)]
  return (splits.pooled(train, trainer.batch_dict(dataset, 'test')),
          np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts]))


def build(config, dataset, models_=None, generator=None, pair_pool=None, pools=None):
  """The trainer Setup of config.num_models classifiers (or the subset `models_`), model k
  drawing from `pools[k]` (default: every training example); `generator` (a Flax module) and
  `pair_pool` (the examples adversarial halves are drawn from) for on-learned-manifold
  adversarial training."""
  module = models.classifier(config.model.name, dataset.num_classes,
                             **config.model.get('kwargs', {}))
  if pools is None:
    pools = np.tile(np.arange(len(dataset.y_train)), (config.num_models, 1))
  pools = np.asarray(pools, np.int32)
  counts = np.full(config.num_models, pools.shape[1])
  settings = ml_collections.ConfigDict({'variant': config.variant, 'dataset': config.dataset})
  replays = variants.get(config).replays  # free adversarial training: updates per batch
  pairs = {}
  if pair_pool is not None:
    pairs = dict(pair_pools=np.tile(pair_pool.astype(np.int32), (config.num_models, 1)),
                 pair_counts=np.full(config.num_models, len(pair_pool)))
  return trainer.build(
      config, module, _step_maker(generator), dataset.input_shape, pools, counts,
      models=models_, settings=settings, updates_per_step=replays,
      delta_shape=(config.batch_size,) + tuple(dataset.input_shape) if replays > 1 else None,
      **pairs)


def error_rates(module, variables, x, y, batch_size, indices=None):
  """Per-model error rate (K,) of stacked classifiers on (x, y), or model k's on the rows
  `indices[k]` of them."""
  if indices is not None:
    x, y = np.asarray(x)[indices], np.asarray(y)[indices]  # (K, n, ...)
  logits = stacked.stacked_logits(module, variables, x, batch_size, per_model=indices is not None)
  return np.mean(np.argmax(logits, -1) != y, axis=1)


def learned_codes(config, dataset, generator):
  """Per-example arrays and shared arrays of on-learned-manifold adversarial training: each
  training image's code (the encoder mean of its own class's generator), the box [min, max] of
  all training codes, and the pool the adversarial halves are drawn from (the "safe" codes only,
  |z|_inf <= 2, with config.variant.safe)."""
  module, variables = generator
  codes, _ = manifold.latent_codes(module, variables, dataset.x_train, dataset.y_train,
                                   config.eval_batch_size)
  pool = np.arange(len(codes))
  if config.variant.get('safe', False):
    pool = pool[np.abs(codes).max(axis=1) <= SAFE_CODE_NORM]
    if len(pool) < config.batch_size:
      raise UserError(f'only {len(pool)} training codes are safe (|z|_inf <= 2), fewer than a '
                      f'batch of {config.batch_size}; set config.variant.safe=False')
  box = np.stack([codes.min(axis=0), codes.max(axis=0)])
  return {'code': codes}, {'generator': variables, 'code_box': box}, pool


def train(config, workdir, generator=None):
  """Trains config.num_models classifiers in `workdir`; returns the results dict.

  `generator` (module, stacked variables) is the class-specific generator of
  config.variant.generator_workdir for on-learned-manifold adversarial training, loaded by the
  caller (`advgen.studies.runs.train_classifier`, scripts/train_classifier.py).
  """
  results_path = trainer.begin(config, workdir)
  validate(config)
  if variants.needs_generator(config) and generator is None:
    raise UserError(f'training variant {config.variant.name!r} needs the generator of '
                    'config.variant.generator_workdir: train through '
                    'scripts/train_classifier.py (advgen.studies.runs.train_classifier)')
  dataset = data.load(config.dataset)
  train_data, train_rows, test_rows = data_splits(config, dataset)
  shared, pair_pool = {}, None
  if generator is not None:
    codes, shared, pair_pool = learned_codes(config, dataset, generator)
    train_data.update(codes)
  setup = build(config, dataset, generator=None if generator is None else generator[0],
                pair_pool=pair_pool, pools=train_rows)
  workdir_lib.prepare(workdir, config)  # only a config that builds is recorded
  x, y = train_data['image'], train_data['label']
  if test_rows is None:
    test = lambda variables: error_rates(setup.module, variables, dataset.x_test,
                                         dataset.y_test, config.eval_batch_size)
  else:
    test = lambda variables: error_rates(setup.module, variables, x, y, config.eval_batch_size,
                                         test_rows)

  state = trainer.fit(config, workdir, setup, train_data,
                      lambda state: {'test_error': test(state.variables)}, shared)
  errors = {'train_error': error_rates(setup.module, state.variables, x, y,
                                       config.eval_batch_size,
                                       None if test_rows is None else train_rows),
            'test_error': test(state.variables)}
  results = {'num_train': len(dataset.y_train), 'num_test': len(dataset.y_test),
             'num_steps': config.num_epochs * setup.steps_per_epoch,
             'num_models': setup.num_models, **results_lib.summarize(errors)}
  if dataset.info:  # fonts: which fonts were used (count and file-list hash)
    results['dataset'] = dataset.info
  workdir_lib.write_results(results_path, results)
  return results
