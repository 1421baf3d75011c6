"""The bounds study's sandwich on configs/studies/bounds_tiny.py: certified <= found on every
generated sample (alpha's share aside), the base radii and the bound are the study's own, and
report.md and figures/sandwich.png show it."""

import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advgen import certify
from advgen.cli import load_config
from advgen.errors import UserError
from advgen.report import sandwich as sandwich_report
from advgen.studies import bounds as experiment, sandwich
from conftest import ROOT, built_once, configured

CONFIG = os.path.join(ROOT, 'configs', 'studies', 'bounds_tiny.py')


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  config = load_config(CONFIG)
  workdir = built_once(tmp_path_factory, 'bounds_tiny', lambda path: experiment.run(config, path))
  return workdir, config, experiment.stored(workdir)


def test_certified_radii_never_exceed_the_confirmed_found_ones(tiny):
  _, config, results = tiny
  entry = results['sandwich']
  per_example = {k: np.asarray(v, np.float64) for k, v in entry['per_example'].items()}
  assert per_example['certified'].shape == (config.sandwich.num_samples,)
  certified = per_example['prediction'] != -1
  assert certified.sum() >= 3  # the check has certificates to break
  exceptions = np.flatnonzero(certified & (per_example['certified'] > per_example['found_smoothed']))
  assert entry['findings']['exceptions'] == exceptions.tolist() == []  # alpha = 0.001: about none
  assert entry['findings']['certified_le_found'] == 1.0
  assert np.all(per_example['certified'] <= entry['max_radius'] + 1e-9)
  assert np.all(per_example['found_smoothed'] <= max(config.sandwich.epsilons) + 1e-4)


def test_base_radii_and_bound_are_the_studys(tiny):
  _, config, results = tiny
  entry, base = results['sandwich'], results['classifiers']['mlp_0']
  m = config.sandwich.num_samples
  np.testing.assert_array_equal(entry['per_example']['found_base'], base['per_example']['r_unc'][:m])
  np.testing.assert_array_equal(entry['per_example']['base_prediction'], base['per_example']['y'][:m])
  assert entry['quantiles'][f'{config.p:g}']['bound'] == pytest.approx(
      base['bound']['unconstrained']['radius'])
  curve = entry['bound_curve']  # the image-space curve, not normalized
  scale = results['expected_image_norm']
  np.testing.assert_allclose(np.asarray(curve['radius']) / scale,
                             base['bound_curve']['unconstrained']['radius'], rtol=1e-6)


def test_report_and_figure_show_the_sandwich(tiny):
  workdir, _, results = tiny
  table = open(os.path.join(workdir, experiment.TABLE)).read()
  assert table == results['table']
  assert table.count('## Certified ≤ found ≤ bound') == 1
  rows = [line for line in table.split('## Certified')[1].splitlines() if line.startswith('| 0.')]
  assert len(rows) == len(results['sandwich']['quantiles'])
  assert table.endswith(sandwich_report.table_markdown(results['sandwich'], 'mlp'))
  assert os.path.getsize(os.path.join(workdir, sandwich_report.FIGURE)) > 0


@pytest.mark.parametrize('overrides, message', [
    ({'sandwich.classifier': 'resnet'}, 'names none of'),
    ({'sandwich.num_samples': 1000}, 'exceeds'),
    ({'sandwich.epsilons': (0.5, -1.0)}, 'epsilons must be positive'),
])
def test_bad_sandwich_settings_fail_before_any_work(overrides, message, tmp_path):
  with pytest.raises(UserError, match=message):
    experiment.run(configured(CONFIG, **overrides), str(tmp_path))
  assert not os.path.exists(tmp_path / 'config.json')


def test_certificates_in_chunks_are_those_of_one_call():
  """CERTIFY runs in chunks for its progress lines; per-example keys make the chunks' certificates
  those of one call over all samples (30 samples: a partial last chunk of 5)."""
  w = jax.random.normal(jax.random.key(0), (16,))
  logits_fn = lambda v: jnp.stack([jnp.zeros(v.shape[0]), v.reshape(v.shape[0], -1) @ w], -1)
  x = jax.random.uniform(jax.random.key(1), (30, 4, 4, 1)) - 0.5
  settings = types.SimpleNamespace(sigma=0.25, n0=20, n=200, alpha=0.001)
  steps = []
  progress = types.SimpleNamespace(advance=lambda: steps.append(1))
  chunked = sandwich._certify_in_chunks(logits_fn, x, jax.random.key(2), settings, progress)
  whole = certify.certify(logits_fn, x, jax.random.key(2), 0.25, 20, 200, 0.001)
  for got, want in zip(chunked, whole):
    np.testing.assert_array_equal(got, want)
  assert len(steps) == 2 and sandwich.CERTIFY_CHUNK == 25
