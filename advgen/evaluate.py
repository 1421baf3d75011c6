"""Evaluation of classifiers and attacks: test error, success rates, robust accuracy, distances,
transfer. Plain functions of arrays (numpy or jax) returning dicts of Python floats, ready for
`metrics.jsonl` / `results.json`; a statistic over an empty selection is NaN.

To pool several batches, concatenate AttackResults field by field on axis 0 (every field is
batch-first), e.g. `jax.tree.map(lambda *a: np.concatenate(a), *results)`.
"""

import numpy as np

from advgen.data import fonts
from advgen.progress import Progress


def _mean(values, mask=None):
  values = np.asarray(values, np.float64)
  if mask is not None:
    values = values[np.asarray(mask)]
  return float(values.mean()) if values.size else float('nan')


def _median(values, mask):
  values = np.asarray(values, np.float64)[np.asarray(mask)]
  return float(np.median(values)) if values.size else float('nan')


def correct(logits, y):
  """Per-example boolean: the prediction is the label."""
  return np.argmax(np.asarray(logits), axis=-1) == np.asarray(y)


def test_error(logits, y):
  return {'test_error': 1.0 - _mean(correct(logits, y))}


def success_rate(result, clean_correct, counted=None):
  """Success on correctly classified inputs (Stutz et al.): the per-restart average (the paper's
  definition), the any-restart rate and the number of inputs attacked; and the robust accuracy
  (RobustBench's measure): the share of all inputs correct and unbroken by every restart.

  `counted` (N,) bool restricts successes to the inputs that may count (Stutz's on-learned-manifold
  attack: test codes with ||z||_inf <= 2); the others stay in the denominator as failures, and
  `num_counted` says how many attacked inputs could count.
  """
  clean_correct = np.asarray(clean_correct)
  per_restart = np.asarray(result.restart_success)  # (N, R)
  out = {}
  if counted is not None:
    counted = np.asarray(counted, bool)
    per_restart = per_restart & counted[:, None]
    out['num_counted'] = float((counted & clean_correct).sum())
  robust = clean_correct & ~per_restart.any(axis=-1)
  per_restart = per_restart[clean_correct]
  return {
      'success_rate': _mean(per_restart),
      'success_rate_any': _mean(per_restart.any(axis=-1)),
      'num_attacked': float(clean_correct.sum()),
      'robust_accuracy': _mean(robust),
      **out,
  }


def counted_successes(result, y, clean_logits, counted=None):
  """Per-example successes that count: successful, on a correctly classified input, and `counted`
  (see `success_rate`)."""
  mask = correct(clean_logits, y) & np.asarray(result.success, bool)
  return mask if counted is None else mask & np.asarray(counted, bool)


def distance_stats(result, mask):
  """Mean and median over `mask` (usually successful on correct inputs) of the image L-inf and L2
  distances and of `distance`, the threat model's own norm (latent L-inf for on-manifold attacks,
  parameter L-inf for transformations)."""
  stats = {}
  for name in ('linf', 'l2', 'distance'):
    values = getattr(result, name)
    stats[f'{name}_mean'] = _mean(values, mask)
    stats[f'{name}_median'] = _median(values, mask)
  return stats


def robust_accuracy(results, clean_correct, epsilons):
  """Fraction of all inputs classified correctly and not fooled, per radius of a sweep.

  `results` is an AttackResult with a leading radius axis (from `attacks.sweep`).
  """
  fooled = np.asarray(results.success)  # (E, B)
  robust = np.asarray(clean_correct)[None] & ~fooled
  return {f'robust_accuracy@{float(eps):g}': _mean(r) for eps, r in zip(epsilons, robust)}


def transfer(logits_fn, x_adv, y, mask=None):
  """Adversarial inputs made on one model, scored on another (`logits_fn`): the fraction of the
  selected inputs (e.g. successful on the source, correct on the target) the target gets wrong."""
  fooled = ~correct(logits_fn(x_adv), y)
  count = fooled.size if mask is None else int(np.asarray(mask).sum())
  return {'transfer_success_rate': _mean(fooled, mask), 'num_transferred': float(count)}


def summarize(result, y, clean_logits, counted=None):
  """Test error, success rates and distance statistics of successful attacks on correct inputs
  (only `counted` ones, if given: see `success_rate`)."""
  return {
      **test_error(clean_logits, y),
      **success_rate(result, correct(clean_logits, y), counted),
      **distance_stats(result, counted_successes(result, y, clean_logits, counted)),
  }


def manifold_distance_stats(distance, perturbation, mask, name):
  """Distance to a manifold (Stutz et al. Sec. 3.2, Fig. 3) of the selected examples (`mask`,
  usually the counted successes), and its ratio to the perturbation norm ||x_adv - x||_2:
  about 1 when examples leave the manifold orthogonally, about 0 when they stay on it.
  Keys `{name}_distance_mean`, `_median`, `{name}_ratio_mean`, `_median`, `{name}_count`."""
  distance = np.asarray(distance, np.float64)
  perturbation = np.asarray(perturbation, np.float64)
  mask = np.asarray(mask, bool) & (perturbation > 0)
  ratio = distance / np.where(perturbation > 0, perturbation, 1.0)
  return {f'{name}_distance_mean': _mean(distance, mask),
          f'{name}_distance_median': _median(distance, mask),
          f'{name}_ratio_mean': _mean(ratio, mask), f'{name}_ratio_median': _median(ratio, mask),
          f'{name}_count': float(mask.sum())}


def class_manifold_distances(manifold, images, key, num_classes, **project_settings):
  """(N, C): the L2 distance of each image to the true fonts manifold of every class c, from
  `fonts.project(manifold, images, c, ...)` (the same key for every class)."""
  images = np.asarray(images)
  progress = Progress(f'projecting {len(images)} images onto each of {num_classes} class '
                      'manifolds', len(images) * num_classes, 'projections')
  columns = []
  for c in range(num_classes):
    labels = np.full(len(images), c, np.int32)
    columns.append(np.asarray(fonts.project(manifold, images, labels, key, progress=progress,
                                            **project_settings)[2]))
  return np.stack(columns, axis=1)


def validity(distances, labels, mask=None):
  """Stutz et al.'s Def. 1 made measurable on fonts: the fraction of the selected examples that
  are strictly closer to the true manifold of their own class than to any other's
  (`distances` (N, C) from `class_manifold_distances`), with the residual distance to their own
  class's manifold and to the nearest other one."""
  distances = np.asarray(distances, np.float64)
  labels = np.asarray(labels)
  rows = np.arange(len(labels))
  own = distances[rows, labels]
  others = distances.copy()
  others[rows, labels] = np.inf
  nearest_other = others.min(axis=1)
  mask = np.ones(len(labels), bool) if mask is None else np.asarray(mask, bool)
  return {'validity': _mean(own < nearest_other, mask),
          'validity_own_distance_mean': _mean(own, mask),
          'validity_own_distance_median': _median(own, mask),
          'validity_other_distance_median': _median(nearest_other, mask),
          'validity_count': float(mask.sum())}
