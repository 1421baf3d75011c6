"""The sandwich of the bounds study: certified <= found <= any classifier's bound, on one set of
generated samples x = g(z) and one base classifier f with its smoothed version g_sigma.

- certified: CERTIFY's radius of g_sigma (Cohen et al.), a lower bound on its robustness
  (0 where it abstains);
- found, smoothed: the smallest L2 radius among `epsilons` where SmoothAdv L2 PGD on the soft
  smoothed classifier (all radii in one vmapped program) finds a point that PREDICT with fresh
  noise gives another class than the certified one: an upper bound on g_sigma's robustness;
- found, base: the study's r_unc of f (the smallest of DeepFool, a bisection with L2 PGD and
  FAB-L2);
- Fawzi et al.'s Theorem 1 through the estimated modulus: the bound on the quantiles of the
  robustness of any classifier with the base classifier's class probabilities.

With probability >= 1 - alpha per example certified <= found; `findings` lists the exceptions.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from advgen import attacks, certify, models
from advgen.bounds import empirical, isoperimetric
from advgen.errors import UserError
from advgen.progress import Progress

QUANTILES = (0.1, 0.25, 0.5, 0.75)
CERTIFY_CHUNK = 25  # samples per CERTIFY call: a progress line between calls


def validate(config):
  """Checks config.sandwich (if set) against the study's classifiers, before any work."""
  settings = config.get('sandwich')
  if not settings:
    return
  if settings.classifier not in config.classifiers:
    raise UserError(f'config.sandwich.classifier={settings.classifier!r} names none of '
                    f'config.classifiers ({", ".join(config.classifiers)})')
  for field in ('num_samples', 'n0', 'n', 'soft_samples', 'predict_samples', 'pgd_steps'):
    value = settings[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise UserError(f'config.sandwich.{field} must be a positive integer, got {value!r}')
  if settings.num_samples > config.num_samples:
    raise UserError(f'config.sandwich.num_samples={settings.num_samples} exceeds the study\'s '
                    f'config.num_samples={config.num_samples}')
  if not settings.sigma > 0 or not 0 < settings.alpha < 1:
    raise UserError(f'config.sandwich needs sigma > 0 and alpha in (0, 1), got '
                    f'{settings.sigma} and {settings.alpha}')
  if not settings.epsilons or min(settings.epsilons) <= 0:
    raise UserError(f'config.sandwich.epsilons must be positive, got {list(settings.epsilons)}')


@functools.partial(jax.jit, static_argnames=('logits_fn', 'sigma', 'soft_samples', 'pgd_steps'))
def _smoothadv_sweep(logits_fn, x, y, key, epsilons, *, sigma, soft_samples, pgd_steps):
  """SmoothAdv L2 PGD (highest loss kept, every step) at each radius: (E, M, ...) results."""

  def at(epsilon):
    attack = lambda fn, batch, k: attacks.pgd(
        fn, attacks.L2Ball(batch['image'], epsilon), batch['label'], k, num_steps=pgd_steps,
        step_size=2.5 * epsilon / pgd_steps, step_rule='l2', random_start=False,
        early_stop=False)
    return certify.smoothadv(attack, logits_fn, {'image': x, 'label': y}, key, sigma=sigma,
                             num_samples=soft_samples)

  return jax.vmap(at)(epsilons)


def found_radius(logits_fn, x, y, key, settings, progress=None):
  """Per example the L2 distance of the closest confirmed SmoothAdv point over the radii
  `settings.epsilons` (inf if none), with PREDICT's fresh noise from `key`; advances `progress`
  after the sweep and after each radius's confirmation."""
  epsilons = jnp.asarray(sorted(settings.epsilons), jnp.float32)
  attack_key, confirm_key = jax.random.split(key)
  result = jax.device_get(_smoothadv_sweep(
      logits_fn, x, y, attack_key, epsilons, sigma=float(settings.sigma),
      soft_samples=settings.soft_samples, pgd_steps=settings.pgd_steps))
  _advance(progress)
  found = np.full(len(y), np.inf)
  for e in range(len(epsilons)):
    confirmed = certify.confirm(logits_fn, result.x_adv[e], y, jax.random.fold_in(confirm_key, e),
                                float(settings.sigma), settings.predict_samples, settings.alpha)
    found = np.where(confirmed, np.minimum(found, result.l2[e]), found)
    _advance(progress)
  return found


def _advance(progress):
  if progress is not None:
    progress.advance()


def _certify_in_chunks(logits_fn, x, key, settings, progress):
  """CERTIFY of x in chunks of CERTIFY_CHUNK samples (per-example keys: the same certificates as
  one call), advancing `progress` after each."""
  keys = certify.example_keys(key, len(x))
  parts = []
  for i in range(0, len(x), CERTIFY_CHUNK):
    parts.append(certify.certify(logits_fn, x[i:i + CERTIFY_CHUNK], keys[i:i + CERTIFY_CHUNK],
                                 float(settings.sigma), settings.n0, settings.n, settings.alpha))
    progress.advance()
  return certify.Certificate(*(np.concatenate(field) for field in zip(*parts)))


def measure(settings, module, variables, x, base, bound_curve, bound_at, key):
  """The sandwich entry of the results: per-example radii, their quantiles next to the bound's
  (`bound_at(p)`, image radius; `bound_curve` (radius, probability)) and the findings.

  `variables` are one model's; `base` its per-example r_unc and predictions on x."""
  logits_fn = models.logits_fn(module, variables)
  certify_key, attack_key = jax.random.split(key)
  chunks = -(-len(x) // CERTIFY_CHUNK)
  progress = Progress(f'sandwich: CERTIFY of {len(x)} samples (n = {settings.n}), SmoothAdv at '
                      f'{len(settings.epsilons)} radii, PREDICT on its points',
                      chunks + 1 + len(settings.epsilons), 'steps')
  cert = _certify_in_chunks(logits_fn, x, certify_key, settings, progress)
  certified = cert.prediction != certify.ABSTAIN
  labels = np.where(certified, cert.prediction, base['y']).astype(np.int32)
  found = found_radius(logits_fn, x, labels, attack_key, settings, progress)
  per_example = {'certified': cert.radius, 'found_smoothed': found, 'found_base': base['r_unc'],
                 'prediction': cert.prediction, 'base_prediction': base['y']}
  quantiles = {f'{p:g}': {'certified': empirical.quantile(cert.radius, p),
                          'found_smoothed': empirical.quantile(found, p),
                          'found_base': empirical.quantile(base['r_unc'], p),
                          'bound': float(bound_at(p))} for p in QUANTILES}
  exceptions = np.flatnonzero(certified & (cert.radius > found))
  ratio = lambda a, b: float(np.median(a[certified & np.isfinite(b)] / b[
      certified & np.isfinite(b)])) if np.any(certified & np.isfinite(b)) else float('nan')
  findings = {
      'certified_le_found': float(np.mean(cert.radius <= found)),
      'exceptions': exceptions.tolist(),
      'abstained': float(np.mean(~certified)),
      'found': float(np.mean(np.isfinite(found))),
      'agreement_with_base': float(np.mean(cert.prediction == base['y'])),
      'median_certified_over_found': ratio(cert.radius, found),
      'median_found_over_base': float(np.median(found[np.isfinite(found)] / base['r_unc'][
          np.isfinite(found)])) if np.any(np.isfinite(found)) else float('nan'),
      'found_le_bound': {p: q['found_smoothed'] <= q['bound'] for p, q in quantiles.items()},
  }
  return {'sigma': float(settings.sigma), 'n': settings.n, 'alpha': settings.alpha,
          'num_samples': len(x), 'epsilons': sorted(settings.epsilons),
          'max_radius': certify.max_radius(settings.sigma, settings.n, settings.alpha),
          'per_example': {k: np.asarray(v).tolist() for k, v in per_example.items()},
          'bound_curve': {'radius': np.asarray(bound_curve[0]).tolist(),
                          'probability': np.asarray(bound_curve[1]).tolist()},
          'quantiles': quantiles, 'findings': findings}


def from_study(config, model, decode_fn, z, base, modulus_estimate, key):
  """The sandwich of the bounds study's classifier `config.sandwich.classifier` on its first
  config.sandwich.num_samples generated samples: `model` is (module, model 0's variables, its
  class probabilities), `base` its study estimates (`empirical.Robustness`, per example)."""
  settings = config.sandwich
  module, variables, probs = model
  m = settings.num_samples
  x = np.asarray(decode_fn(z[:m]))
  omega, failure = modulus_estimate.omega, modulus_estimate.failure_prob
  curve = isoperimetric.bound_curve(probs, omega, failure)
  bound_at = lambda p: isoperimetric.robustness_upper_bound(p, probs, omega, failure)
  entry = measure(settings, module, variables, x,
                  {'y': np.asarray(base.y[:m]), 'r_unc': np.asarray(base.r_unc[:m])},
                  curve, bound_at, key)
  return {'classifier': settings.classifier, **entry}
