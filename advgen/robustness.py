"""Attacking trained classifiers: the configured attacks on a training workdir's K models.

All K models are attacked in one jit-compiled program per batch of test images
(`classifier.over_models`: vmapped on accelerators, unrolled on CPU). Attacks
are configured by name (see `advgen.attacks.ATTACKS`) plus 'on_true_manifold', which perturbs the
fonts generator's parameters theta with the font and class fixed (Stutz et al.).
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from advgen import attacks, evaluate, report
from advgen.data import fonts
from advgen.errors import UserError
from advgen.train import classifier, workdir as workdir_lib

RESULTS = 'attack_results.json'
FIGURE = os.path.join('figures', 'attack_examples.png')


def _settings(spec):
  """(attack name, keyword settings) from a config entry; 'adam' becomes optax.adam(step_size)."""
  settings = dict(spec)
  name = settings.pop('attack')
  if settings.get('step_rule') == 'adam':
    settings['step_rule'] = optax.adam(settings.pop('step_size'))
  return name, settings


def _on_true_manifold(manifold, epsilon, **settings):
  """PGD on theta: the image is always an exact rendering of the attacked (font, class)."""
  if not isinstance(manifold, fonts.FontsManifold):
    raise UserError('the on_true_manifold attack needs the fonts dataset (its generator is known)')
  ranges = jnp.asarray(manifold.ranges)

  def decode(theta, context):
    font, label = context
    return manifold.render(font, label, theta)

  def attack(logits_fn, x, y, key, latents):
    del x
    threat = attacks.LatentBall(decode, latents['theta'], epsilon, ranges, (latents['font'], y))
    return attacks.pgd(logits_fn, threat, y, key, **settings)

  return attack


def build_attack(spec, dataset):
  """`attack(logits_fn, x, y, key, latents) -> AttackResult` for one config entry."""
  name, settings = _settings(spec)
  if name == 'on_true_manifold':
    return _on_true_manifold(dataset.manifold, **settings)
  base = attacks.get(name)(**settings)
  return lambda logits_fn, x, y, key, latents: base(logits_fn, x, y, key)


@functools.partial(jax.jit, static_argnames=('module', 'attack'))
def attack_models(variables, x, y, key, latents, *, module, attack):
  """The attack on each of the K stacked models, as one program: an AttackResult of (K, B, ...)
  arrays, model k's the same as attacking model k alone."""
  one = lambda v: attack(lambda inputs: module.apply(v, inputs, train=False), x, y, key, latents)
  return classifier.over_models(one)(variables)


def _test_latents(dataset, num):
  test = dataset.latents.get('test', {})
  return {k: jnp.asarray(v[:num]) for k, v in test.items() if k in ('font', 'theta')}


def run(config, workdir):
  """Runs config.attacks on the first config.num_images test images; returns the results dict."""
  results_path = os.path.join(workdir, RESULTS)
  if os.path.exists(results_path):
    raise UserError(f'{results_path} already exists; delete it or attack a copy of the workdir')
  _, dataset, module, variables = classifier.restore(workdir)
  num = min(config.num_images, len(dataset.y_test))
  if num % config.batch_size:
    raise UserError(f'config.num_images={num} must be a multiple of config.batch_size='
                    f'{config.batch_size}')
  x, y = dataset.x_test[:num], dataset.y_test[:num]
  latents = _test_latents(dataset, num)
  num_models = jax.tree.leaves(variables)[0].shape[0]
  clean_logits = classifier.stacked_logits(module, variables, x, config.batch_size)
  key = jax.random.key(config.seed)
  results, examples = {'num_images': num, 'num_models': num_models}, {}
  for index, (label, spec) in enumerate(sorted(config.attacks.items())):
    attack = build_attack(spec, dataset)
    batches = []
    for start in range(0, num, config.batch_size):
      batch = slice(start, start + config.batch_size)
      batch_key = jax.random.fold_in(jax.random.fold_in(key, index), start)
      batches.append(jax.device_get(attack_models(
          variables, x[batch], y[batch], batch_key, jax.tree.map(lambda a: a[batch], latents),
          module=module, attack=attack)))
    result = jax.tree.map(lambda *parts: np.concatenate(parts, axis=1), *batches)  # (K, N, ...)
    per_model = [evaluate.summarize(jax.tree.map(lambda a: a[k], result), y, clean_logits[k])
                 for k in range(num_models)]
    results[label] = {'settings': dict(spec), 'per_model': per_model,
                      'mean': {m: float(np.mean([s[m] for s in per_model])) for m in per_model[0]},
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
    target_fn = functools.partial(apply, jax.tree.map(lambda a: a[target], variables))
    mask = correct[source] & correct[target] & np.asarray(result.success[source])
    out.append({'source': source, 'target': target,
                **evaluate.transfer(target_fn, result.x_adv[source], y, mask)})
  return out


def _figure(x, examples, path, count=10):
  """Originals, then each attack's adversarial examples and their differences (model 0)."""
  rows, titles = [x[:count]], ['original']
  for label, x_adv in examples.items():
    rows += [x_adv[:count], report.signed_difference(x[:count], x_adv[:count])]
    titles += [label, f'{label} - original']
  report.image_rows(rows, titles, path)
