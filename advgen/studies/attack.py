"""Attacking trained classifiers: the configured attacks on a training workdir's K models.

All K models are attacked in one jit-compiled program per batch of test images
(`stacked.over_models`: vmapped on accelerators, unrolled on CPU). Attacks are config entries
for `attacks.build`; on fonts, 'on_true_manifold' perturbs the generator's parameters theta
with the font and class fixed (Stutz et al.). With `config.generator_workdir` (class-specific
generators of the same dataset), 'on_learned_manifold' perturbs the test codes (encoder means of
each image's true class) inside the box [min, max] of the test codes, decoded by the true class's
decoder; as in the authors' code its successes count only where ||z||_inf <= CODE_BOUND, the other
inputs staying in the denominator (`num_counted` says how many may count).

Each run is named (`config.name`) and writes `DIR/attacks/NAME/`: `results.json` (per attack:
the settings used, success rates, distances, distances to the manifold, transfer; on fonts the
validity of learned on-manifold examples), `examples.npz` (per-example success, distances and the
adversarial images of the first `num_examples` test images) and `examples.png`. Distances to the
manifold: `studies.distances`.
"""

import functools
import os
import re

import jax
import numpy as np

from advgen import attacks, evaluate, manifold, results as results_lib
from advgen.attacks import norms
from advgen.attacks.autoattack import AutoAttackResult, checks as autoattack_checks, stage_accuracy
from advgen.errors import UserError
from advgen.models import class_models, stacked
from advgen.progress import Progress
from advgen.report import images as image_report
from advgen.studies import distances, runs
from advgen.train import trainer, workdir as workdir_lib

ATTACKS_DIR = 'attacks'
RESULTS, EXAMPLES, FIGURE = 'results.json', 'examples.npz', 'examples.png'
CODE_BOUND = 2.0  # on-learned-manifold successes count where ||z_test||_inf <= 2 (Stutz's code)
_DISTANCE_KEY = 1 << 30  # fold_in offsets of the distance keys, apart from the attacks' batches


def paths(workdir, name):
  """{'dir', 'results', 'examples', 'figure'}: where the attack run `name` of `workdir` writes."""
  out = os.path.join(workdir, ATTACKS_DIR, name)
  return {'dir': out, 'results': os.path.join(out, RESULTS),
          'examples': os.path.join(out, EXAMPLES), 'figure': os.path.join(out, FIGURE)}


def _positive_int(value, field, minimum=1):
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    kind = 'positive' if minimum else 'non-negative'
    raise UserError(f'{field} must be a {kind} integer, got {value!r}')


def validate(config, prefix='config'):
  """Every check of an attack config, before any model is loaded; errors name its fields under
  `prefix` (a study's attack config is `config.attack`)."""
  if not isinstance(config.name, str) or not re.fullmatch(r'[A-Za-z0-9_][A-Za-z0-9_.-]*',
                                                          config.name):
    raise UserError(f'{prefix}.name must be a folder name (letters, digits, _ . -), got '
                    f'{config.name!r}')
  for field in ('num_images', 'batch_size'):
    _positive_int(config[field], f'{prefix}.{field}')
  _positive_int(config.num_examples, f'{prefix}.num_examples', 0)
  if config.num_examples > config.num_images:
    raise UserError(f'{prefix}.num_examples={config.num_examples} is more than the '
                    f'{prefix}.num_images={config.num_images} images attacked; lower it')
  if not config.attacks:
    raise UserError(f'{prefix}.attacks is empty; configure at least one attack')
  for label, spec in config.attacks.items():
    attacks.validate(spec, where=f'{prefix}.attacks.{label}: attack')
  generator_workdir = config.generator_workdir
  learned = [label for label, spec in config.attacks.items()
             if attacks.needs_manifold(spec) == 'learned']
  if learned and not generator_workdir:
    raise UserError(f'{prefix}.attacks.{learned[0]} attacks on the learned manifold: set '
                    f'{prefix}.generator_workdir to a workdir of scripts/train_generator.py')
  if generator_workdir and not os.path.isfile(os.path.join(generator_workdir, 'config.json')):
    raise UserError(f'{prefix}.generator_workdir={generator_workdir!r} is not a workdir of '
                    'scripts/train_generator.py (no config.json there)')
  distance = config.distance
  _positive_int(distance.num_images, f'{prefix}.distance.num_images', 0)
  if distance.num_images > config.num_images:
    raise UserError(f'{prefix}.distance.num_images={distance.num_images} is more than the '
                    f'{prefix}.num_images={config.num_images} images attacked; lower it')
  for method in distance.methods:
    if method not in distances.METHODS:
      raise UserError(f'unknown {prefix}.distance.methods entry {method!r}; choose from '
                      f'{", ".join(distances.METHODS)}')
  for method in distances.METHODS:
    for key, value in distance[method].items():
      if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise UserError(f'{prefix}.distance.{method}.{key} must be a positive number, got '
                        f'{value!r}')


def manifolds(dataset, generator=None):
  """The latent spaces on-manifold attacks on `dataset` can move along."""
  spaces = {}
  if dataset.name == 'fonts':
    spaces['true'] = attacks.true_manifold(dataset.manifold)
  if generator is not None:
    spaces['learned'] = attacks.learned_manifold(generator['module'], generator['variables'],
                                                 generator['box'])
  return spaces


def load_generator(workdir, dataset, class_specific=True):
  """{'module', 'variables', 'codes' (test codes, N x d), 'box' (2, d)} of the generators in
  `workdir`, checked against the classifiers' dataset; the codes are the encoder means of each
  test image through its own class's encoder."""
  config, _, module, variables = runs.load_generators(workdir)
  if config.dataset.name != dataset.name:
    raise UserError(f'config.generator_workdir={workdir} holds generators of '
                    f'{config.dataset.name!r}, the classifiers were trained on {dataset.name!r}')
  if class_specific and stacked.count(variables) != dataset.num_classes:
    raise UserError(f'config.generator_workdir={workdir} holds a class-agnostic generator; the '
                    'on-learned-manifold attack needs class-specific ones (class_specific=True)')
  codes = manifold.latent_codes(module, variables, dataset.x_test, dataset.y_test)[0]
  return {'module': module, 'variables': variables, 'codes': codes,
          'box': np.stack([codes.min(0), codes.max(0)])}


@functools.partial(jax.jit, static_argnames=('module', 'attack', 'per_model'))
def attack_models(variables, batch, key, *, module, attack, per_model=False):
  """The attack on each of the K stacked models, as one program: an AttackResult of (K, B, ...)
  arrays, model k's the same as attacking model k alone; with `per_model`, model k attacks its
  own batch (the leaves of `batch` are K, B, ...)."""
  one = lambda v, b: attack(lambda inputs: module.apply(v, inputs, train=False), b, key)
  if per_model:
    return stacked.over_models(one)(variables, batch)
  return stacked.over_models(lambda v: one(v, batch))(variables)


def attack_in_batches(attack, test, variables, module, key, batch_size, per_model=False,
                      name='attack'):
  """`attack` on every model and test image, batch by batch: (K, N, ...) arrays; with
  `per_model`, model k attacks its own test images (the arrays of `test` are K, N, ...).
  Progress is logged per batch under `name`."""
  axis = 1 if per_model else 0
  num = test['label'].shape[axis]
  progress = Progress(f'{name} on {stacked.count(variables)} models x {num} images',
                      -(-num // batch_size), 'batches')
  batches = []
  for start in range(0, num, batch_size):
    batch = jax.tree.map(lambda a: a[(slice(None),) * axis + (slice(start, start + batch_size),)],
                         test)
    batches.append(jax.device_get(attack_models(variables, batch, jax.random.fold_in(key, start),
                                                module=module, attack=attack,
                                                per_model=per_model)))
    progress.advance()
  return jax.tree.map(lambda *parts: np.concatenate(parts, axis=1), *batches)


@functools.partial(jax.jit, static_argnames=('module', 'generator', 'spec'))
def _attack_class(variables, decoder, box, batch, key, *, module, generator, spec):
  """The learned-manifold attack `spec` (sorted items) on a batch of one class, decoded by that
  class's generator `decoder` alone; compiled once for every class and cell."""
  space = attacks.learned_manifold(generator, jax.tree.map(lambda a: a[None], decoder), box)
  return attack_models(variables, batch, key, module=module,
                       attack=attacks.build(dict(spec), {'learned': space}))


def _attack_by_class(spec, test, variables, module, generator, key, batch_size, name):
  """The learned-manifold attack with the test images grouped by class, so each step decodes
  with the true class's generator only (decoding with all of them and keeping one costs C
  times as much); (K, N, ...) arrays in the order of `test`."""
  index, counts = class_models.group_by_class(test['label'],
                                              stacked.count(generator['variables']))
  chunks = -(-index.shape[1] // batch_size)
  size = -(-index.shape[1] // chunks)  # equal batches: one compiled shape
  index = np.concatenate([index, np.repeat(index[:, :1], chunks * size - index.shape[1], 1)], 1)
  spec = tuple(sorted(dict(spec).items()))
  progress = Progress(f'{name} on {stacked.count(variables)} models x {len(test["label"])} '
                      f'images, class by class', index.size // size, 'batches')
  parts = []
  for k, row in enumerate(index):
    decoder = stacked.select(generator['variables'], k)
    for start in range(0, len(row), size):
      rows = row[start:start + size]
      batch = jax.tree.map(lambda a: a[rows], test)
      batch_key = jax.random.fold_in(jax.random.fold_in(key, k), start)
      out = jax.device_get(_attack_class(variables, decoder, generator['box'], batch, batch_key,
                                         module=module, generator=generator['module'],
                                         spec=spec))
      valid = np.arange(start, start + size) < counts[k]  # not the padding
      parts.append((rows[valid], jax.tree.map(lambda o: o[:, valid], out)))
      progress.advance()
  return jax.tree.map(lambda *outs: _scatter([r for r, _ in parts], outs), *[o for _, o in parts])


def _scatter(rows, outs):
  """Per-part outputs (K, n_i, ...) at example indices rows[i] -> one (K, N, ...) array."""
  out = np.zeros(outs[0].shape[:1] + (sum(map(len, rows)),) + outs[0].shape[2:], outs[0].dtype)
  for r, o in zip(rows, outs):
    out[:, r] = o
  return out


def run(config, workdir):
  """Runs config.attacks on the first config.num_images test images; returns the results dict."""
  validate(config)
  out = paths(workdir, config.name)
  if os.path.exists(out['results']):
    raise UserError(f'{out["results"]} already exists; choose another --config.name, or move '
                    'that folder away to redo this run')
  _, dataset, module, variables = runs.load_classifiers(workdir)
  num = config.num_images
  if num > len(dataset.y_test):
    raise UserError(f'config.num_images={num} is more than the {len(dataset.y_test)} test images '
                    f'of the classifiers in {workdir}; lower it, or attack classifiers trained '
                    f'with config.dataset.num_test >= {num}')
  if num % config.batch_size:
    raise UserError(f'config.num_images={num} must be a multiple of config.batch_size='
                    f'{config.batch_size}')
  needs_learned = any(attacks.needs_manifold(s) == 'learned'
                      for s in config.attacks.values())
  generator = (load_generator(config.generator_workdir, dataset, needs_learned)
               if config.generator_workdir else None)
  built = {label: attacks.build(spec, manifolds(dataset, generator))
           for label, spec in config.attacks.items()}
  test = jax.tree.map(lambda a: a[:num], trainer.batch_dict(dataset, 'test'))
  counted_codes = None
  if generator is not None:
    test['code'] = generator['codes'][:num]
    counted_codes = np.asarray(norms.linf(test['code'])) <= CODE_BOUND
  x, y = test['image'], test['label']
  num_models = stacked.count(variables)
  clean_logits = stacked.stacked_logits(module, variables, x, config.batch_size)
  clean_correct = np.stack([evaluate.correct(clean_logits[k], y) for k in range(num_models)])
  key = jax.random.key(config.seed)
  measure = distances.methods(config, dataset, generator)
  m = config.distance.num_images
  results = {'name': config.name, 'num_images': num, 'num_models': num_models,
             'generator_workdir': config.generator_workdir, 'code_bound': CODE_BOUND,
             'distance_methods': list(measure), 'num_distance_images': m,
             'clean_distance': {}, 'attacks': {}, 'config': config.to_dict()}
  arrays = {'image': x[:config.num_examples], 'label': y, 'clean_correct': clean_correct}
  for index, method in enumerate(measure):  # the clean images' own distances, for reference
    d = measure[method](x[:m], y[:m], jax.random.fold_in(key, _DISTANCE_KEY - 1 - index), {})
    arrays[f'clean.{method}_distance'] = d
    results['clean_distance'][method] = {'mean': float(np.mean(d)) if m else float('nan'),
                                         'median': float(np.median(d)) if m else float('nan')}
  if generator is not None:
    results['learned_manifold'] = _learned_summary(config, dataset, generator, x[:m], y[:m], key,
                                                   counted_codes)
  examples = {}
  for index, label in enumerate(sorted(built)):
    learned = attacks.needs_manifold(config.attacks[label]) == 'learned'
    attack_key = jax.random.fold_in(key, index)
    checked = (_autoattack_checks(config.attacks[label], x, y, module, variables, attack_key)
               if config.attacks[label]['attack'] == 'autoattack' else None)
    if learned:
      result = _attack_by_class(config.attacks[label], test, variables, module, generator,
                                attack_key, config.batch_size, f'attack {label}')
    else:
      result = attack_in_batches(built[label], test, variables, module, attack_key,
                                 config.batch_size, name=f'attack {label}')
    counted = counted_codes if learned else None
    per_model = [evaluate.summarize(stacked.select(result, k), y, clean_logits[k], counted)
                 for k in range(num_models)]
    if isinstance(result, AutoAttackResult):  # robust accuracy after each stage
      per_model = [{**p, **stage_accuracy(stacked.select(result, k))}
                   for k, p in enumerate(per_model)]
    masks = np.stack([evaluate.counted_successes(stacked.select(result, k), y, clean_logits[k],
                                                 counted) for k in range(num_models)])
    distance_key = jax.random.fold_in(key, _DISTANCE_KEY + index)
    extra, extra_arrays = distances.manifold_metrics(result, test, masks, m, measure, distance_key)
    if learned and dataset.name == 'fonts' and m:
      validity, extra_arrays['validity_distances'] = distances.validity(
          config, dataset, result.x_adv[:, :m], y[:m], masks[:, :m], distance_key)
      extra = [{**e, **v} for e, v in zip(extra, validity)]
    metrics = {name: [{**p, **e}[name] for p, e in zip(per_model, extra)]
               for name in {**per_model[0], **extra[0]}}
    results['attacks'][label] = {
        'settings': attacks.settings(config.attacks[label]), **results_lib.summarize(metrics),
        'transfer': _transfer(result, masks, clean_correct, y, module, variables)}
    if checked is not None:
      results['attacks'][label]['warnings'] = checked
    arrays.update(_example_arrays(label, result, masks, counted, extra_arrays,
                                  config.num_examples))
    examples[label] = np.asarray(result.x_adv[0])
  os.makedirs(out['dir'], exist_ok=True)
  workdir_lib.write_results(out['results'], results)
  workdir_lib.write_arrays(out['examples'], **arrays)
  _figure(x, examples, out['figure'])
  return results


def _autoattack_checks(spec, x, y, module, variables, key):
  """AutoAttack's sanity checks (`attacks.autoattack_checks`) on each model, before attacking:
  per model the list of warnings."""
  settings = {k: v for k, v in dict(spec).items() if k in ('norm', 'version', 'attacks_to_run')}
  apply = jax.jit(lambda v, inputs: module.apply(v, inputs, train=False))
  return [autoattack_checks(functools.partial(apply, stacked.select(variables, k)), x, y,
                            jax.random.fold_in(key, k), **settings)
          for k in range(stacked.count(variables))]


def _learned_summary(config, dataset, generator, x, y, key, counted_codes):
  """The learned manifold's box and codes, and on fonts the validity of the decoded test codes
  (the generator's own reconstructions: the baseline of the attack's validity)."""
  m = len(y)
  summary = {'code_box': generator['box'].tolist(),
             'num_counted_codes': int(counted_codes.sum()),
             'num_codes': len(counted_codes)}
  if dataset.name == 'fonts' and m:
    decode = attacks.learned_manifold(generator['module'], generator['variables'],
                                      generator['box']).decode
    decoded = np.asarray(jax.jit(decode)(generator['codes'][:m], {'label': y}))
    d = evaluate.class_manifold_distances(dataset.manifold, decoded, jax.random.fold_in(
        key, _DISTANCE_KEY - 100), dataset.num_classes, **config.distance.true)
    summary['decoded_codes'] = evaluate.validity(d, y)
  return summary


def _example_arrays(label, result, masks, counted, extra, num_examples):
  out = {f'{label}.{name}': np.asarray(getattr(result, name))
         for name in ('success', 'restart_success', 'distance', 'linf', 'l2')}
  out[f'{label}.counted_success'] = masks
  if counted is not None:
    out[f'{label}.counted'] = np.asarray(counted)
  out[f'{label}.x_adv'] = np.asarray(result.x_adv[:, :num_examples])
  out.update({f'{label}.{name}': value for name, value in extra.items()})
  return out


def _transfer(result, masks, correct, y, module, variables):
  """Model k's counted successes (`masks`) scored on model k+1 (mod K) where that one is right."""
  num_models = masks.shape[0]
  if num_models < 2:
    return []
  apply = jax.jit(lambda v, inputs: module.apply(v, inputs, train=False))  # compiled once
  out = []
  for source in range(num_models):
    target = (source + 1) % num_models
    target_fn = functools.partial(apply, stacked.select(variables, target))
    mask = masks[source] & correct[target]
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
