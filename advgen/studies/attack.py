"""Attacking trained classifiers: the configured attacks on a training workdir's K models.

All K models are attacked in one jit-compiled program per batch of test images
(`stacked.over_models`: vmapped on accelerators, unrolled on CPU). Attacks are config entries
for `attacks.build`; on fonts, 'on_true_manifold' perturbs the generator's parameters theta
with the font and class fixed (Stutz et al.).
"""

import functools
import os

import jax
import numpy as np

from advgen import attacks, evaluate, results as results_lib
from advgen.errors import UserError
from advgen.models import stacked
from advgen.report import images as image_report
from advgen.studies import runs
from advgen.train import trainer, workdir as workdir_lib

RESULTS = 'attack_results.json'
FIGURE = os.path.join('figures', 'attack_examples.png')


def validate(config):
  """Every check of an attack config, before any model is loaded."""
  for field in ('num_images', 'batch_size'):
    if not isinstance(config[field], int) or config[field] < 1:
      raise UserError(f'config.{field} must be a positive integer, got {config[field]!r}')
  if not config.attacks:
    raise UserError('config.attacks is empty; configure at least one attack')
  for label, spec in config.attacks.items():
    attacks.validate(spec, where=f'config.attacks.{label}: attack')


def manifolds(dataset):
  """The latent spaces on-manifold attacks on `dataset` can move along."""
  if dataset.name == 'fonts':
    return {'true': attacks.true_manifold(dataset.manifold)}
  return {}


@functools.partial(jax.jit, static_argnames=('module', 'attack'))
def attack_models(variables, batch, key, *, module, attack):
  """The attack on each of the K stacked models, as one program: an AttackResult of (K, B, ...)
  arrays, model k's the same as attacking model k alone."""
  one = lambda v: attack(lambda inputs: module.apply(v, inputs, train=False), batch, key)
  return stacked.over_models(one)(variables)


def run(config, workdir):
  """Runs config.attacks on the first config.num_images test images; returns the results dict."""
  results_path = os.path.join(workdir, RESULTS)
  if os.path.exists(results_path):
    raise UserError(f'{results_path} already exists; delete it or attack a copy of the workdir')
  validate(config)
  _, dataset, module, variables = runs.load_classifiers(workdir)
  num = min(config.num_images, len(dataset.y_test))
  if num % config.batch_size:
    raise UserError(f'config.num_images={num} must be a multiple of config.batch_size='
                    f'{config.batch_size}')
  spaces = manifolds(dataset)
  built = {label: attacks.build(spec, spaces) for label, spec in config.attacks.items()}
  test = jax.tree.map(lambda a: a[:num], trainer.batch_dict(dataset, 'test'))
  x, y = test['image'], test['label']
  num_models = stacked.count(variables)
  clean_logits = stacked.stacked_logits(module, variables, x, config.batch_size)
  key = jax.random.key(config.seed)
  results, examples = {'num_images': num, 'num_models': num_models, 'attacks': {}}, {}
  for index, label in enumerate(sorted(built)):
    batches = []
    for start in range(0, num, config.batch_size):
      batch = jax.tree.map(lambda a: a[start:start + config.batch_size], test)
      batch_key = jax.random.fold_in(jax.random.fold_in(key, index), start)
      batches.append(jax.device_get(attack_models(variables, batch, batch_key, module=module,
                                                  attack=built[label])))
    result = jax.tree.map(lambda *parts: np.concatenate(parts, axis=1), *batches)  # (K, N, ...)
    per_model = [evaluate.summarize(stacked.select(result, k), y, clean_logits[k])
                 for k in range(num_models)]
    metrics = {name: [m[name] for m in per_model] for name in per_model[0]}
    results['attacks'][label] = {
        'settings': dict(config.attacks[label]), **results_lib.summarize(metrics),
        'transfer': _transfer(result, clean_logits, y, module, variables)}
    examples[label] = np.asarray(result.x_adv[0])
  workdir_lib.write_results(results_path, results)
  _figure(x, examples, os.path.join(workdir, FIGURE))
  return results


def _transfer(result, clean_logits, y, module, variables):
  """Model k's successful adversarial examples scored on model k+1 (mod K) where both are right."""
  num_models = clean_logits.shape[0]
  if num_models < 2:
    return []
  correct = [evaluate.correct(clean_logits[k], y) for k in range(num_models)]
  apply = jax.jit(lambda v, inputs: module.apply(v, inputs, train=False))  # compiled once
  out = []
  for source in range(num_models):
    target = (source + 1) % num_models
    target_fn = functools.partial(apply, stacked.select(variables, target))
    mask = correct[source] & correct[target] & np.asarray(result.success[source])
    out.append({'source': source, 'target': target,
                **evaluate.transfer(target_fn, result.x_adv[source], y, mask)})
  return out


def _figure(x, examples, path, count=10):
  """Originals, then each attack's adversarial examples and their differences (model 0)."""
  rows, titles = [x[:count]], ['original']
  for label, x_adv in examples.items():
    rows += [x_adv[:count], image_report.signed_difference(x[:count], x_adv[:count])]
    titles += [label, f'{label} - original']
  image_report.image_rows(rows, titles, path)
