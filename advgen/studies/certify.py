"""Certifying trained classifiers: randomized smoothing (Cohen et al.) of a training workdir's K
models on its first `config.num_images` test images, at each noise level in `config.sigmas`.

Per batch and sigma, one jit-compiled program counts the noisy votes of all K models
(`stacked.over_models`); example i (its index in the test set) uses the key
fold_in(fold_in(key(seed), sigma's index), i) for every model, so results do not depend on the
batch size. The configured attacks (registry entries, e.g. L2 PGD) run on each model's soft
smoothed classifier (`certify.smoothadv`); a candidate counts only if PREDICT with fresh noise
gives another class, and a counted one closer than a correct certificate's radius is a
violation (with alpha = 0.001 there should be about none).

Each run is named (`config.name`) and writes `DIR/certify/NAME/`: `results.json` (per sigma:
certified accuracy at config.radii, abstention rate, the curve; per attack: confirmed success
rate and violations), `radii.npz` (per-example predictions, radii, p_A bounds, (S, K, N)) and
`certified_accuracy.png` (Cohen et al.'s Fig. 1: one line per sigma and model).
"""

import functools
import os
import re

import jax
import numpy as np

from advgen import attacks, certify, results as results_lib
from advgen.errors import UserError
from advgen.models import stacked
from advgen.report import certify as report
from advgen.studies import attack as attack_study, runs
from advgen.train import trainer, workdir as workdir_lib

CERTIFY_DIR = 'certify'
RESULTS, RADII, FIGURE = 'results.json', 'radii.npz', report.FIGURE
_ATTACK_KEY = 1 << 20  # fold_in offsets of the attacks' keys, apart from the sigmas'


def paths(workdir, name):
  """{'dir', 'results', 'radii', 'figure'}: where the certification run `name` writes."""
  out = os.path.join(workdir, CERTIFY_DIR, name)
  return {'dir': out, 'results': os.path.join(out, RESULTS), 'radii': os.path.join(out, RADII),
          'figure': os.path.join(out, FIGURE)}


def validate(config):
  """Every check of a certification config, before any model is loaded."""
  if not isinstance(config.name, str) or not re.fullmatch(r'[A-Za-z0-9_][A-Za-z0-9_.-]*',
                                                          config.name):
    raise UserError(f'config.name must be a folder name (letters, digits, _ . -), got '
                    f'{config.name!r}')
  for field in ('num_images', 'batch_size', 'n0', 'n'):
    value = config[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise UserError(f'config.{field} must be a positive integer, got {value!r}')
  if not config.sigmas or min(config.sigmas) <= 0:
    raise UserError(f'config.sigmas must be positive noise levels, got {list(config.sigmas)}')
  if not 0 < config.alpha < 1:
    raise UserError(f'config.alpha must be in (0, 1), got {config.alpha}')
  if not config.radii or min(config.radii) < 0:
    raise UserError(f'config.radii must be non-negative, got {list(config.radii)}')
  certify.resolve_chunk_size(config.chunk_size)
  for field in ('num_samples', 'predict_samples'):
    value = config.smoothadv[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise UserError(f'config.smoothadv.{field} must be a positive integer, got {value!r}')
  for label, spec in config.attacks.items():
    attacks.validate(spec, where=f'config.attacks.{label}: attack')
    if attacks.needs_manifold(spec):
      raise UserError(f'config.attacks.{label}: the smoothed classifier is attacked in image '
                      'space; choose an image-space attack')


@functools.partial(jax.jit, static_argnames=('module', 'num_samples', 'sigma', 'chunk_size',
                                             'per_model'))
def count_models(variables, x, keys, *, module, num_samples, sigma, chunk_size, per_model=False):
  """Noisy votes (K, B, C) of each of the K stacked models on x (B, ...), one program; with
  `per_model`, model k's on its own images x[k] (x: K, B, ...)."""
  one = lambda v, images: certify.noise_counts(
      lambda inputs: module.apply(v, inputs, train=False), images, keys, sigma, num_samples,
      chunk_size)
  if per_model:
    return stacked.over_models(one)(variables, x)
  return stacked.over_models(lambda v: one(v, x))(variables)


def _batches(num, batch_size, key):
  """(start, stop, per-example keys) of each batch of `num` examples."""
  for start in range(0, num, batch_size):
    stop = min(num, start + batch_size)
    yield start, stop, certify.example_keys(key, stop - start, start)


def certify_models(variables, module, x, key, sigma, *, n0, n, alpha, batch_size,
                   chunk_size=None):
  """CERTIFY of every model on x (N, ...), batch by batch: a Certificate of (K, N) arrays;
  example i's key is fold_in(key, i)."""
  count = functools.partial(count_models, variables, module=module, sigma=sigma,
                            chunk_size=certify.resolve_chunk_size(chunk_size))
  parts = []
  for start, stop, keys in _batches(len(x), batch_size, key):
    select, estimate = certify.certify_keys(keys)
    counts0, counts = jax.device_get((count(x[start:stop], select, num_samples=n0),
                                      count(x[start:stop], estimate, num_samples=n)))
    parts.append(list(map(certify.certify_from_counts, counts0, counts, [sigma] * len(counts),
                          [alpha] * len(counts))))
  return certify.Certificate(*(
      np.stack([np.concatenate([p[k][f] for p in parts]) for k in range(len(parts[0]))])
      for f in range(len(certify.Certificate._fields))))


def smoothadv_models(spec, variables, module, x, y, key, sigma, *, num_samples, predict_samples,
                     alpha, batch_size, chunk_size=None):
  """The registry attack `spec` on each model's soft smoothed classifier: (confirmed (K, N),
  l2 (K, N)), confirmed where PREDICT with fresh noise gives a class other than y."""
  built = attacks.build(spec)
  attack = lambda fn, batch, k: certify.smoothadv(built, fn, batch, k, sigma=sigma,
                                                  num_samples=num_samples)
  result = attack_study.attack_in_batches(attack, {'image': x, 'label': y}, variables, module,
                                          key, batch_size)
  count = functools.partial(count_models, variables, module=module, sigma=sigma,
                            chunk_size=certify.resolve_chunk_size(chunk_size),
                            num_samples=predict_samples, per_model=True)
  confirmed = np.zeros(result.success.shape, bool)
  for start, stop, keys in _batches(len(x), batch_size, key):
    counts = jax.device_get(count(result.x_adv[:, start:stop], certify.confirm_keys(keys)))
    for k, c in enumerate(counts):
      confirmed[k, start:stop] = certify.confirmed_from_counts(c, y[start:stop], alpha)
  return confirmed, np.asarray(result.l2)


def summarize(cert, y, radii):
  """Per-model metrics (certified accuracy at each radius, abstention rate) of a Certificate
  of (K, N) arrays."""
  correct = cert.prediction == y
  metrics = {f'certified_accuracy@{r:g}': [certify.certified_accuracy(cert.radius[k], correct[k],
                                                                       r)
                                           for k in range(len(correct))] for r in radii}
  metrics['abstention_rate'] = np.mean(cert.prediction == certify.ABSTAIN, axis=1)
  metrics['radius_median_correct'] = [np.median(cert.radius[k][correct[k]]) if correct[k].any()
                                      else float('nan') for k in range(len(correct))]
  return results_lib.summarize(metrics)


def run(config, workdir):
  """Certifies the classifiers of `workdir`; returns the results dict."""
  validate(config)
  out = paths(workdir, config.name)
  if os.path.exists(out['results']):
    raise UserError(f'{out["results"]} already exists; choose another --config.name or delete '
                    'that folder')
  _, dataset, module, variables = runs.load_classifiers(workdir)
  num = min(config.num_images, len(dataset.y_test))
  test = trainer.batch_dict(dataset, 'test')
  x, y = np.asarray(test['image'][:num]), np.asarray(test['label'][:num])
  key = jax.random.key(config.seed)
  settings = dict(n0=config.n0, n=config.n, alpha=config.alpha, batch_size=config.batch_size,
                  chunk_size=config.chunk_size)
  results = {'name': config.name, 'num_images': num, 'num_models': stacked.count(variables),
             'max_radius': {}, 'sigmas': {}, 'config': config.to_dict()}
  arrays = {'label': y, 'sigma': np.asarray(config.sigmas, np.float64)}
  certificates = []
  for index, sigma in enumerate(config.sigmas):
    cert = certify_models(variables, module, x, jax.random.fold_in(key, index), float(sigma),
                          **settings)
    certificates.append(cert)
    top = certify.max_radius(sigma, config.n, config.alpha)
    r, curves = zip(*[certify.accuracy_curve(cert.radius[k], cert.prediction[k] == y, top)
                      for k in range(len(cert.radius))])
    entry = {**summarize(cert, y, config.radii), 'curve': {'radius': r[0].tolist(),
                                                           'accuracy': np.stack(curves).tolist()},
             'attacks': {}}
    results['max_radius'][f'{sigma:g}'] = top
    for number, label in enumerate(sorted(config.attacks)):
      confirmed, l2 = smoothadv_models(
          config.attacks[label], variables, module, x, y,
          jax.random.fold_in(key, _ATTACK_KEY + len(config.attacks) * index + number),
          float(sigma), alpha=config.alpha, batch_size=config.batch_size,
          chunk_size=config.chunk_size, **config.smoothadv)
      entry['attacks'][label] = attack_summary(cert, y, confirmed, l2)
      arrays[f'{sigma:g}.{label}.confirmed'], arrays[f'{sigma:g}.{label}.l2'] = confirmed, l2
    results['sigmas'][f'{sigma:g}'] = entry
  for field in certify.Certificate._fields:
    arrays[field] = np.stack([getattr(c, field) for c in certificates])
  os.makedirs(out['dir'], exist_ok=True)
  workdir_lib.write_arrays(out['radii'], **arrays)
  report.plot_curves(results, out['figure'])
  workdir_lib.write_results(out['results'], results)  # last: it marks the run finished
  return results


def attack_summary(cert, y, confirmed, l2):
  """Confirmed success rate among the smoothed classifier's correct certificates, and the
  violations: confirmed successes closer than the certified radius (per model)."""
  correct = cert.prediction == y
  violations = correct & confirmed & (l2 < cert.radius)
  return {**results_lib.summarize({
      'success_rate': [confirmed[k][correct[k]].mean() if correct[k].any() else float('nan')
                       for k in range(len(correct))],
      'violations': violations.sum(axis=1)}), 'num_certified': correct.sum(axis=1).tolist()}
