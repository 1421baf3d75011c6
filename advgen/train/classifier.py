"""Training K classifiers at once with the one trainer skeleton (`trainer`): the classifier's
step function, its evaluation and its results.

The K models differ only in their seed (initialization, data order, per-step randomness), as the
papers train several models per setting. The batch is sharded over all local devices.
"""

import functools

import ml_collections
import numpy as np

from advgen import attacks, data, manifold, models, results as results_lib
from advgen.errors import UserError
from advgen.models import stacked
from advgen.train import steps, trainer, variants, workdir as workdir_lib

SAFE_CODE_NORM = 2.0  # Stutz et al.'s "safe" codes: |z|_inf <= 2, inside the truncated prior


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


def build(config, dataset, models_=None, generator=None, pair_pool=None):
  """The trainer Setup of config.num_models classifiers (or the subset `models_`); `generator`
  (a Flax module) and `pair_pool` (the examples adversarial halves are drawn from) for
  on-learned-manifold adversarial training."""
  module = models.classifier(config.model.name, dataset.num_classes,
                             **config.model.get('kwargs', {}))
  num_train = len(dataset.y_train)
  pools = np.tile(np.arange(num_train, dtype=np.int32), (config.num_models, 1))
  counts = np.full(config.num_models, num_train)
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


def error_rates(module, variables, x, y, batch_size):
  """Per-model error rate (K,) of stacked classifiers on (x, y)."""
  logits = stacked.stacked_logits(module, variables, x, batch_size)
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
  train_data, shared, pair_pool = trainer.batch_dict(dataset, 'train'), {}, None
  if generator is not None:
    codes, shared, pair_pool = learned_codes(config, dataset, generator)
    train_data.update(codes)
  setup = build(config, dataset, generator=None if generator is None else generator[0], pair_pool=pair_pool)
  workdir_lib.prepare(workdir, config)  # only a config that builds is recorded

  def evaluate(state):
    return {'test_error': error_rates(setup.module, state.variables, dataset.x_test,
                                      dataset.y_test, config.eval_batch_size)}

  state = trainer.fit(config, workdir, setup, train_data, evaluate, shared)
  errors = {split: error_rates(setup.module, state.variables, x, y, config.eval_batch_size)
            for split, x, y in (('train_error', dataset.x_train, dataset.y_train),
                                ('test_error', dataset.x_test, dataset.y_test))}
  results = {'num_train': len(dataset.y_train), 'num_test': len(dataset.y_test),
             'num_steps': config.num_epochs * setup.steps_per_epoch,
             'num_models': setup.num_models, **results_lib.summarize(errors)}
  workdir_lib.write_results(results_path, results)
  return results
