"""Bounds next to measured robustness: Fawzi et al.'s Tables 1-2 for a generator and classifiers.

`run(config, workdir)` trains (or loads) a class-agnostic generator with a Gaussian prior in
`workdir/generator` and the configured classifiers in `workdir/classifiers/NAME` (a killed run
resumes there, a finished one is loaded), then on x = g(z), z ~ N(0, I):

- measures each classifier's class probabilities P_i (its regions in latent space) and E||g(z)||
  on `num_prob_samples` latents, and a modulus of continuity omega of g (`estimate_modulus`);
- estimates r_Z, r_in and r_unc (`empirical.estimate`) on `num_samples` latents, all K stacked
  models of a classifier workdir in one jit-compiled program per batch;
- bounds the p-quantiles: Theorem 1 with omega = identity for r_Z, and omega(.) with the
  modulus' failure probability for r_in and r_unc (r_unc <= r_in <= omega(r_Z));

and writes results.json (every number, per-example estimates and the bound curves included),
then report.md (the table), figures/robustness_cdf.png and figures/figure2.png from it
(`advgen.report.bounds`), and figures/examples.png.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from advgen import data
from advgen.bounds import empirical, isoperimetric, modulus
from advgen.errors import UserError
from advgen.models import stacked
from advgen.progress import Progress
from advgen.report import bounds as report, images as image_report, sandwich as sandwich_report
from advgen.studies import runs, sandwich
from advgen.train import classifier as classifier_lib, generator as generator_lib
from advgen.train import workdir as workdir_lib

RESULTS = 'results.json'
TABLE, CDF_FIGURE, FIGURE2 = report.TABLE, report.CDF_FIGURE, report.FIGURE2
EXAMPLES = os.path.join('figures', 'examples.png')
PER_EXAMPLE = ('y', 'r_z', 'r_in', 'r_in_deepfool', 'r_in_search', 'r_unc', 'r_unc_deepfool',
               'r_unc_pgd', 'r_unc_fab', 'image_norm')


def _frozen(settings):
  """A hashable form of a dict of plain settings (a static jit argument)."""
  return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in settings.items()))


@functools.partial(jax.jit, static_argnames=('classifier', 'generator', 'settings'))
def _estimate_models(classifier_variables, generator_variables, z, key, *, classifier, generator,
                     settings):
  """`empirical.estimate` for each of the K stacked classifiers, in one program."""
  decode_fn = lambda v: generator.apply(generator_variables, v, method='decode')
  kwargs = {name: dict(value) for name, value in settings if name != 'refine_steps'}
  refine = dict(settings)['refine_steps']

  def one(variables):
    logits_fn = lambda x: classifier.apply(variables, x, train=False)
    return empirical.estimate(logits_fn, decode_fn, z, key, refine_steps=refine, **kwargs)

  return stacked.over_models(one)(classifier_variables)


@functools.partial(jax.jit, static_argnames=('classifier', 'generator', 'num_classes'))
def _predict_models(classifier_variables, generator_variables, z, *, classifier, generator,
                    num_classes):
  """Per stacked classifier: (class counts of f(g(z)) over z (N, B, d), sum of ||g(z)||)."""
  decode_fn = lambda v: generator.apply(generator_variables, v, method='decode')

  def one(variables):
    logits_fn = lambda x: classifier.apply(variables, x, train=False)
    _, counts, norm_sum = empirical.predicted_classes(logits_fn, decode_fn, z, num_classes)
    return counts, norm_sum

  return stacked.over_models(one)(classifier_variables)


def validate(config):
  """Every check of a bounds config, its generator's and classifiers' included, before any
  work or any file is written."""
  if not 0 < config.p < 1:
    raise UserError(f'config.p must be in (0, 1), got {config.p}')
  for field in ('num_samples', 'num_prob_samples', 'batch_size', 'refine_steps'):
    if not isinstance(config[field], int) or config[field] < 1:
      raise UserError(f'config.{field} must be a positive integer, got {config[field]!r}')
  if not isinstance(config.fab.num_steps, int) or config.fab.num_steps < 0:
    raise UserError(f'config.fab.num_steps must be an integer >= 0 (0: no FAB), got '
                    f'{config.fab.num_steps!r}')
  if not isinstance(config.fab.restarts, int) or config.fab.restarts < 1:
    raise UserError(f'config.fab.restarts must be a positive integer, got {config.fab.restarts!r}')
  if not 0 < config.modulus.quantile <= 1:
    raise UserError(f'config.modulus.quantile must be in (0, 1], got {config.modulus.quantile}')
  if not config.modulus.radii or min(config.modulus.radii) <= 0:
    raise UserError(f'config.modulus.radii must be positive, got {list(config.modulus.radii)}')
  for field in ('num_points', 'num_directions'):
    if not isinstance(config.modulus[field], int) or config.modulus[field] < 1:
      raise UserError(f'config.modulus.{field} must be a positive integer, got '
                      f'{config.modulus[field]!r}')
  if config.num_samples % config.batch_size or config.num_prob_samples % config.batch_size:
    raise UserError(f'config.num_samples={config.num_samples} and config.num_prob_samples='
                    f'{config.num_prob_samples} must be multiples of config.batch_size='
                    f'{config.batch_size}')
  if not config.classifiers:
    raise UserError('config.classifiers is empty; configure at least one classifier')
  if config.generator.class_specific:
    raise UserError('the bounds need one generator with a Gaussian prior over all classes; set '
                    'config.generator.class_specific=False')
  generator_lib.validate(config.generator)
  data.check(config.generator.dataset, 'config.generator.dataset')
  for name in config.classifiers:
    classifier_lib.validate(config.classifiers[name])
    data.check(config.classifiers[name].dataset, f'config.classifiers.{name}.dataset')
  sandwich.validate(config)


def check_workdir(config, workdir):
  """Refuses a workdir that holds another run (a classifier's, another study's), before its
  results.json is taken for this study's."""
  path = os.path.join(workdir, 'config.json')
  if os.path.exists(path) and workdir_lib.read_json(path).get('study') != 'bounds':
    raise UserError(f'--workdir={workdir} holds a run that is not a bounds study (its config.json '
                    'has no study=bounds); pass a new --workdir for the bounds study')
  workdir_lib.check_config(workdir, config)


def _row_stats(values, p, scale, bound):
  values = np.asarray(values, np.float64)
  q = empirical.quantile(values, p)
  finite = values[np.isfinite(values)]
  return {'quantile': q, 'normalized': q / scale, 'found': float(np.isfinite(values).mean()),
          'median': empirical.quantile(values, 0.5),
          'mean_found': float(finite.mean()) if finite.size else float('nan'),
          'fraction_within_bound': float(np.mean(values <= bound))}


def _summarize(estimates, test_error, probs, p, norms, omega, failure_prob, workdir):
  """The results entry of one classifier from its per-example estimates (numpy)."""
  latent_bound = float(isoperimetric.robustness_upper_bound(p, probs))
  image_bound = float(isoperimetric.robustness_upper_bound(p, probs, omega, failure_prob))
  bounds = {'latent': latent_bound, 'in_distribution': image_bound, 'unconstrained': image_bound}
  entry = {'workdir': workdir, 'test_error': float(test_error), 'class_probs': probs.tolist(),
           'bound': {}, 'empirical': {}, 'parts': {}}
  for key, _, field, norm in report.ROWS:
    entry['bound'][key] = {'radius': bounds[key], 'normalized': bounds[key] / norms[norm]}
    entry['empirical'][key] = _row_stats(estimates[field], p, norms[norm], bounds[key])
  for field in ('r_in_deepfool', 'r_in_search', 'r_unc_deepfool', 'r_unc_pgd', 'r_unc_fab'):
    q = empirical.quantile(estimates[field], p)
    entry['parts'][field] = {'quantile': q, 'normalized': q / norms['expected_image_norm']}
  entry['fab'] = _fab_gain(estimates)
  entry['fraction_unc_le_in'] = float(np.mean(estimates['r_unc'] <= estimates['r_in']))
  entry['bound_curve'] = {}
  for key, _, _, norm in report.ROWS:
    radius, probability = isoperimetric.bound_curve(
        probs, None if key == 'latent' else omega, 0.0 if key == 'latent' else failure_prob)
    entry['bound_curve'][key] = {'radius': (radius / norms[norm]).tolist(),
                                 'probability': probability.tolist()}
  entry['per_example'] = {k: np.asarray(estimates[k]).tolist() for k in PER_EXAMPLE}
  return entry


def _fab_gain(estimates):
  """How often FAB-L2 found a smaller r_unc than DeepFool and the PGD bisection, and by how much
  (the median relative decrease over those samples)."""
  before = np.minimum(estimates['r_unc_deepfool'], estimates['r_unc_pgd'])
  smaller = estimates['r_unc_fab'] < before
  decrease = 1 - estimates['r_unc_fab'][smaller] / before[smaller]  # 1 where only FAB found one
  return {'fraction_smaller': float(np.mean(smaller)),
          'median_decrease': float(np.median(decrease)) if decrease.size else 0.0}


def run(config, workdir):
  """Trains or loads the models, measures and bounds robustness; returns the results dict."""
  results_path = os.path.join(workdir, RESULTS)
  validate(config)
  workdir_lib.check_writable(workdir)
  check_workdir(config, workdir)
  if os.path.exists(results_path):
    raise UserError(f'{results_path} already exists: this bounds study is finished; use a new '
                    '--workdir, or move that file away to redo the measurements (the trained '
                    'models in the workdir are reused)')
  workdir_lib.prepare(workdir, config)
  _, gen_dataset, gen_module, gen_variables, gen_results = runs.train_or_load(
      'generator', config.generator, os.path.join(workdir, 'generator'))
  gen_variables = stacked.select(gen_variables, 0)
  latent_dim = gen_module.latent_dim
  decode_fn = jax.jit(lambda v: gen_module.apply(gen_variables, v, method='decode'))

  key = jax.random.key(config.seed)
  prob_key, sample_key, modulus_key, attack_key = jax.random.split(key, 4)
  batch = config.batch_size
  z_prob = empirical.sample_latents(prob_key, config.num_prob_samples, latent_dim).reshape(
      -1, batch, latent_dim)
  z = empirical.sample_latents(sample_key, config.num_samples, latent_dim)
  logging.info('modulus of continuity from %d latents x %d directions x %d radii (one program)',
               config.modulus.num_points, config.modulus.num_directions,
               len(config.modulus.radii))
  estimate = modulus.estimate_modulus(decode_fn, modulus_key, latent_dim,
                                      list(config.modulus.radii), config.modulus.num_points,
                                      config.modulus.num_directions, config.modulus.quantile)
  settings = (('deepfool', _frozen(config.deepfool)), ('pgd', _frozen(config.pgd)),
              ('fab', _frozen(config.fab)),
              ('refine_steps', int(config.refine_steps)), ('search', _frozen(config.search)))
  results = {'p': float(config.p), 'latent_dim': latent_dim, 'num_samples': config.num_samples,
             'num_prob_samples': config.num_prob_samples,
             'expected_latent_norm': float(isoperimetric.expected_gaussian_norm(latent_dim)),
             'modulus': {'radii': estimate.radii.tolist(),
                         'ratio_quantile': estimate.ratio_quantile.tolist(),
                         'quantile': estimate.quantile, 'failure_prob': estimate.failure_prob},
             'generator': {'workdir': 'generator', **{k: v for k, v in gen_results.items()
                                                      if np.isscalar(v)}},
             'classifiers': {}}
  image_norms, examples, collected = [], {}, {}
  sandwiched = None  # (module, model 0's variables, its class probabilities) of the sandwich
  for name in sorted(config.classifiers):
    subdir = os.path.join('classifiers', name)
    _, dataset, module, variables, cls_results = runs.train_or_load(
        'classifier', config.classifiers[name], os.path.join(workdir, subdir))
    if tuple(dataset.input_shape) != tuple(gen_dataset.input_shape):
      raise UserError(f'classifier {name!r} takes inputs of shape {dataset.input_shape} but the '
                      f'generator makes {gen_dataset.input_shape}; train both on one dataset')
    logging.info('classifier %s: class probabilities from %d generated samples (one program)',
                 name, config.num_prob_samples)
    counts, norm_sums = jax.device_get(_predict_models(
        variables, gen_variables, z_prob, classifier=module, generator=gen_module,
        num_classes=dataset.num_classes))
    image_norms.append(np.asarray(norm_sums, np.float64) / config.num_prob_samples)
    progress = Progress(f'classifier {name}: r_Z, r_in and r_unc of {config.num_samples} '
                        'generated samples', -(-config.num_samples // batch), 'batches')
    parts = []
    for i in range(0, config.num_samples, batch):
      parts.append(jax.device_get(_estimate_models(
          variables, gen_variables, z[i:i + batch], jax.random.fold_in(attack_key, i),
          classifier=module, generator=gen_module, settings=settings)))
      progress.advance()
    per_model = jax.tree.map(lambda *a: np.concatenate(a, axis=1), *parts)  # (K, N, ...)
    examples[name] = jax.tree.map(lambda a: a[0], per_model)
    if name == (config.get('sandwich') or {}).get('classifier'):
      sandwiched = (module, stacked.select(variables, 0), counts[0] / counts[0].sum())
    num_models = counts.shape[0]
    for k in range(num_models):
      label = name if num_models == 1 else f'{name}_{k}'
      estimates = {f: np.asarray(getattr(per_model, f)[k]) for f in PER_EXAMPLE}
      collected[label] = (estimates, cls_results['per_model']['test_error'][k],
                          counts[k] / counts[k].sum(),
                          subdir)
  results['expected_image_norm'] = float(np.mean(np.concatenate(image_norms)))
  norms = {'expected_latent_norm': results['expected_latent_norm'],
           'expected_image_norm': results['expected_image_norm']}
  for label, (estimates, error, probs, subdir) in collected.items():
    results['classifiers'][label] = _summarize(estimates, error, probs, config.p, norms,
                                               estimate.omega, estimate.failure_prob, subdir)
  names = list(results['classifiers'])
  results['bound'] = {key: max(results['classifiers'][n]['bound'][key]['normalized']
                               for n in names) for key, *_ in report.ROWS}
  curves = isoperimetric.figure2_curve(list(config.figure2.dims),
                                       list(config.figure2.num_classes), config.figure2.p)
  results['figure2'] = {k: np.asarray(v).tolist() for k, v in curves.items()}
  if sandwiched is not None:
    results['sandwich'] = sandwich.from_study(config, sandwiched, decode_fn, z,
                                              examples[config.sandwich.classifier], estimate,
                                              jax.random.fold_in(key, 4))
  results['table'] = _table(results)
  write_report(results, workdir)
  _examples_figure(decode_fn, z, examples, os.path.join(workdir, EXAMPLES))
  workdir_lib.write_results(results_path, results)  # last: it marks the run finished
  return results


def write_report(results, workdir):
  """report.md and the figures into `workdir`, from the results alone (nothing recomputed);
  returns the table."""
  table = _table(results)
  with open(os.path.join(workdir, TABLE), 'w') as f:
    f.write(table)
  report.plot_cdfs(results, os.path.join(workdir, CDF_FIGURE))
  report.plot_figure2(results['figure2'], os.path.join(workdir, FIGURE2))
  if 'sandwich' in results:
    sandwich_report.plot(results['sandwich'], os.path.join(workdir, sandwich_report.FIGURE))
  return table


def _table(results):
  """report.md: the Fawzi table, then the sandwich's when the study has one."""
  table = report.table_markdown(results) + report.fab_markdown(results)
  if 'sandwich' in results:
    table += sandwich_report.table_markdown(results['sandwich'],
                                            results['sandwich']['classifier'])
  return table


def stored(workdir):
  """The results.json of a finished bounds study in `workdir`."""
  path = os.path.join(workdir, RESULTS)
  if not os.path.exists(path):
    raise UserError(f'{path} does not exist: run the study before --report_only')
  return workdir_lib.read_json(path)


def _examples_figure(decode_fn, z, examples, path, count=8):
  """g(z), then per classifier (its first model) the generated images at r_Z and r_in and the
  unconstrained adversarial image."""
  rows, titles = [np.asarray(decode_fn(z[:count]))], ['g(z)']
  for name, estimates in examples.items():
    rows += [np.asarray(decode_fn(jnp.asarray(estimates.z_adv[:count]))),
             np.asarray(estimates.x_in[:count]), np.asarray(estimates.x_unc[:count])]
    titles += [f'{name}: g(z + r_Z)', f'{name}: r_in', f'{name}: r_unc']
  image_report.image_rows(rows, titles, path)
