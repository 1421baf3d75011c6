"""The one layout of results: per-model values under each metric's name, and their summaries.

Every result a run writes (a training run's results.json, each attack's entry, a metrics.jsonl
line, a study's cells) stores a metric as one value per model under `per_model`, with its mean
and standard deviation over the models under `mean` and `std`, all from `summarize`, so report
code reads every kind of run the same way. Plain numpy: the report package uses it too.
"""

import numpy as np


def summarize(per_model):
  """{'per_model': {name: [K values]}, 'mean': {name: float}, 'std': {name: float}} from
  {name: array of K values (or a scalar, for one model)}."""
  values = {name: np.atleast_1d(np.asarray(v, np.float64)) for name, v in per_model.items()}
  return {
      'per_model': {name: v.tolist() for name, v in values.items()},
      'mean': {name: _nan_safe(np.mean, v) for name, v in values.items()},
      'std': {name: _nan_safe(np.std, v) for name, v in values.items()},
  }


def _nan_safe(reduce, values):
  return float(reduce(values)) if values.size else float('nan')


def model_metrics(results, k):
  """{name: value} of model `k` out of a summarized result."""
  return {name: values[k] for name, values in results['per_model'].items()}
