"""Training K classifiers at once with the one trainer skeleton (`trainer`): the classifier's
step function, its evaluation and its results.

The K models differ only in their seed (initialization, data order, per-step randomness), as the
papers train several models per setting. The batch is sharded over all local devices.
"""

import ml_collections
import numpy as np

from advgen import data, models, results as results_lib
from advgen.errors import UserError
from advgen.models import stacked
from advgen.train import steps, trainer, variants, workdir as workdir_lib


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


def make_step(module, tx, config):
  """One classifier's update on a batch dict, with the configured training variant."""
  variant = variants.get(config)

  def step(state, batch, key, shared):
    del shared
    if variant.replays > 1:
      return steps.free_train_step(state, batch, key, module=module, tx=tx,
                                   epsilon=variant.epsilon, replays=variant.replays)
    return steps.train_step(state, batch, key, module=module, tx=tx, variant=variant)

  return step


def build(config, dataset, models_=None):
  """The trainer Setup of config.num_models classifiers (or the subset `models_`)."""
  module = models.classifier(config.model.name, dataset.num_classes,
                             **config.model.get('kwargs', {}))
  num_train = len(dataset.y_train)
  pools = np.tile(np.arange(num_train, dtype=np.int32), (config.num_models, 1))
  counts = np.full(config.num_models, num_train)
  settings = ml_collections.ConfigDict({'variant': config.variant, 'dataset': config.dataset})
  free = config.variant.name == 'free'
  return trainer.build(
      config, module, make_step, dataset.input_shape, pools, counts, models=models_,
      settings=settings, updates_per_step=config.variant.replays if free else 1,
      delta_shape=(config.batch_size,) + tuple(dataset.input_shape) if free else None)


def error_rates(module, variables, x, y, batch_size):
  """Per-model error rate (K,) of stacked classifiers on (x, y)."""
  logits = stacked.stacked_logits(module, variables, x, batch_size)
  return np.mean(np.argmax(logits, -1) != y, axis=1)


def train(config, workdir):
  """Trains config.num_models classifiers in `workdir`; returns the results dict."""
  results_path = trainer.begin(config, workdir)
  validate(config)
  dataset = data.load(config.dataset)
  setup = build(config, dataset)
  workdir_lib.prepare(workdir, config)  # only a config that builds is recorded

  def evaluate(state):
    return {'test_error': error_rates(setup.module, state.variables, dataset.x_test,
                                      dataset.y_test, config.eval_batch_size)}

  state = trainer.fit(config, workdir, setup, trainer.batch_dict(dataset, 'train'), evaluate)
  errors = {split: error_rates(setup.module, state.variables, x, y, config.eval_batch_size)
            for split, x, y in (('train_error', dataset.x_train, dataset.y_train),
                                ('test_error', dataset.x_test, dataset.y_test))}
  results = {'num_train': len(dataset.y_train), 'num_test': len(dataset.y_test),
             'num_steps': config.num_epochs * setup.steps_per_epoch,
             'num_models': setup.num_models, **results_lib.summarize(errors)}
  workdir_lib.write_results(results_path, results)
  return results
