"""Training runs a study needs, and loading what they trained: the one place that reads other
runs' workdirs (their config.json, checkpoints and result files)."""

import os

from absl import logging

from advgen import data
from advgen.errors import UserError
from advgen.train import classifier, generator, trainer, variants, workdir as workdir_lib
from advgen.train.checkpoint import Checkpoints

LATENTS = generator.LATENTS
KINDS = {
    # kind: (train, build, script, config fields every run of that script records)
    'classifier': (classifier.train, classifier.build, 'scripts/train_classifier.py',
                   ('num_models', 'variant')),
    'generator': (generator.train, generator.build, 'scripts/train_generator.py',
                  ('loss', 'class_specific')),
}


def _rebuild(kind, workdir):
  """(config, dataset, trainer Setup) of the `kind` run recorded in `workdir`."""
  _, build, script, keys = KINDS[kind]
  config = workdir_lib.stored_config(workdir, kind, script, keys)
  dataset = data.load(config.dataset)
  results_path = os.path.join(workdir, trainer.RESULTS)
  recorded = (workdir_lib.read_json(results_path).get('dataset')
              if os.path.exists(results_path) else None)
  if recorded and dataset.info and recorded != dataset.info:
    raise UserError(f'{workdir} was trained on {recorded["num_fonts"]} fonts of hash '
                    f'{recorded["fonts_hash"][:12]}, but its config.dataset now gives '
                    f'{dataset.info["num_fonts"]} of hash {dataset.info["fonts_hash"][:12]} (the '
                    'font files on this machine differ); install the same font packages')
  return config, dataset, build(config, dataset)


def load(kind, workdir, step=None):
  """(config, dataset, module, stacked variables) of the `kind` models trained in `workdir`,
  at checkpoint `step` (default: the latest).

  Classifiers are config.num_models seeds; generators K = num_classes class models for
  class-specific ones, 1 for a class-agnostic one (with their moving average of params if kept).
  """
  config, dataset, setup = _rebuild(kind, workdir)
  state = trainer.restore_state(workdir, setup, step)
  variables = generator.eval_variables(state) if kind == 'generator' else state.variables
  return config, dataset, setup.module, variables


def load_classifiers(workdir, step=None):
  return load('classifier', workdir, step)


def classifier_epochs(workdir):
  """(config, dataset, module, at_epoch) of the classifiers trained in `workdir`, where
  `at_epoch(e)` restores their stacked variables at the end of epoch e (1-based). Every epoch's
  checkpoint must be kept (config.keep_checkpoint_every_epochs=1)."""
  config, dataset, setup = _rebuild('classifier', workdir)
  checkpoints = Checkpoints(workdir)
  try:
    kept = set(checkpoints.all_steps())
  finally:
    checkpoints.close()
  missing = [e for e in range(1, config.num_epochs + 1) if e * setup.steps_per_epoch not in kept]
  if missing:
    raise UserError(f'{workdir} lacks the checkpoints of epochs {missing[:5]}...; train it with '
                    'config.keep_checkpoint_every_epochs=1 (in a new workdir)')

  def at_epoch(epoch):
    return trainer.restore_state(workdir, setup, epoch * setup.steps_per_epoch).variables

  return config, dataset, setup.module, at_epoch


def load_generators(workdir, step=None):
  return load('generator', workdir, step)


def load_latents(workdir):
  """The arrays of `latents.npz` written by a finished generator run (z_train, y_train, ...)."""
  path = os.path.join(workdir, LATENTS)
  if not os.path.exists(path):
    raise UserError(f'{path} does not exist; finish training a generator with an encoder in '
                    f'{workdir} first')
  return workdir_lib.read_arrays(path)


def judges(workdir, dataset_name):
  """(module, stacked variables) of the classifiers in `workdir` for the GAN-test accuracy of
  generators of `dataset_name`."""
  config, _, module, variables = load_classifiers(workdir)
  if config.dataset.name != dataset_name:
    raise UserError(f'config.eval.classifier_workdir={workdir} holds classifiers of '
                    f'{config.dataset.name!r}, not of {dataset_name!r}; pass a workdir trained on '
                    'the same dataset')
  return module, variables


def train_generator(config, workdir):
  """Trains generators in `workdir`, scoring them against config.eval.classifier_workdir's
  classifiers if set; returns the results dict."""
  trainer.begin(config, workdir)
  generator.validate(config)
  classifier_workdir = config.eval.get('classifier_workdir')
  scorers = judges(classifier_workdir, config.dataset.name) if classifier_workdir else None
  return generator.train(config, workdir, scorers)


def train_classifier(config, workdir):
  """Trains classifiers in `workdir`, with the generators of config.variant.generator_workdir
  for on-learned-manifold adversarial training; returns the results dict."""
  trainer.begin(config, workdir)
  classifier.validate(config)
  generator = None
  if variants.needs_generator(config):
    path = config.variant.get('generator_workdir')
    if not path:
      raise UserError(f'training variant {config.variant.name!r} needs class-specific '
                      'generators: set config.variant.generator_workdir to a workdir of '
                      'scripts/train_generator.py (e.g. configs/vaegan_fonts.py)')
    gen_config, _, module, variables = load_generators(path)
    if gen_config.dataset.name != config.dataset.name or not gen_config.class_specific or (
        not module.has_encoder):
      raise UserError(f'config.variant.generator_workdir={path} must hold class-specific '
                      f'generators with an encoder trained on {config.dataset.name!r} (it holds '
                      f'{gen_config.model.name} on {gen_config.dataset.name!r}, class_specific='
                      f'{gen_config.class_specific})')
    generator = (module, variables)
  return classifier.train(config, workdir, generator)


def train_or_load(kind, config, workdir):
  """Trains `kind` models in `workdir` unless its results.json exists (then only loads); returns
  (config, dataset, module, variables, results)."""
  train = train_classifier if kind == 'classifier' else train_generator
  path = os.path.join(workdir, trainer.RESULTS)
  if os.path.exists(path):
    workdir_lib.prepare(workdir, config)  # refuses a workdir trained with another config
    results = workdir_lib.read_json(path)
    logging.info('loading the finished run in %s', workdir)
  else:
    logging.info('training in %s', workdir)
    results = train(config, workdir)
  return (*load(kind, workdir), results)
