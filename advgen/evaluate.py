"""Evaluation of classifiers and attacks: test error, success rates, robust accuracy, distances,
transfer. Plain functions of arrays (numpy or jax) returning dicts of Python floats, ready for
`metrics.jsonl` / `results.json`; a statistic over an empty selection is NaN.

To pool several batches, concatenate AttackResults field by field on axis 0 (every field is
batch-first), e.g. `jax.tree.map(lambda *a: np.concatenate(a), *results)`.
"""

import numpy as np


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


def success_rate(result, clean_correct):
  """Success on correctly classified inputs (Stutz et al.): the per-restart average (the paper's
  definition), the any-restart rate and the number of inputs attacked."""
  clean_correct = np.asarray(clean_correct)
  per_restart = np.asarray(result.restart_success)[clean_correct]  # (N, R)
  return {
      'success_rate': _mean(per_restart),
      'success_rate_any': _mean(per_restart.any(axis=-1)),
      'num_attacked': float(clean_correct.sum()),
  }


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


def summarize(result, y, clean_logits):
  """Test error, success rates and distance statistics of successful attacks on correct inputs."""
  clean_correct = correct(clean_logits, y)
  return {
      **test_error(clean_logits, y),
      **success_rate(result, clean_correct),
      **distance_stats(result, clean_correct & np.asarray(result.success)),
  }
