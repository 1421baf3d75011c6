"""The certification run on the tiny fonts classifiers: results, per-example radii and the figure
agree with the library, and no attack on the smoothed classifier beats a certificate."""

import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from advgen import certify, models
from advgen.cli import load_config
from advgen.errors import UserError
from advgen.models import stacked
from advgen.studies import certify as study, runs
from advgen.train import workdir as workdir_lib
from conftest import ROOT, built_once, configured

TINY = os.path.join(ROOT, 'configs', 'certify_fonts_tiny.py')


@pytest.fixture(scope='module')
def certified(trained_tiny, tmp_path_factory):
  config = load_config(TINY)

  def run(path):
    shutil.copytree(trained_tiny[0], path)
    study.run(config, path)

  workdir = built_once(tmp_path_factory, 'certified_tiny', run)
  out = study.paths(workdir, config.name)
  return workdir, config, workdir_lib.read_json(out['results']), workdir_lib.read_arrays(
      out['radii'])


def test_results_hold_certified_accuracy_per_sigma_and_model(certified):
  workdir, config, results, arrays = certified
  assert results['num_images'] == 20 and results['num_models'] == 2
  assert list(results['sigmas']) == ['0.12', '0.25']
  assert arrays['radius'].shape == (2, 2, 20) and arrays['label'].shape == (20,)
  for index, (sigma, entry) in enumerate(results['sigmas'].items()):
    radius, prediction = arrays['radius'][index], arrays['prediction'][index]
    assert np.all(radius <= results['max_radius'][sigma] + 1e-9)
    assert np.all((prediction == certify.ABSTAIN) == (radius == 0))
    correct = prediction == arrays['label']
    for k in range(2):
      per_model = {name: values[k] for name, values in entry['per_model'].items()}
      accuracy = [per_model[f'certified_accuracy@{r:g}'] for r in config.radii]
      assert accuracy == sorted(accuracy, reverse=True)
      assert accuracy[0] == pytest.approx(correct[k].mean())
      assert per_model['abstention_rate'] == pytest.approx(np.mean(prediction[k] == -1))
      np.testing.assert_allclose(entry['curve']['accuracy'][k][0], correct[k].mean())
  assert os.path.getsize(study.paths(workdir, config.name)['figure']) > 0


def test_stored_certificates_are_the_librarys(certified):
  """Model 1 at sigma 0.25 recomputed with certify.certify batch by batch, with the keys the
  run documents (seed, the sigma's index, the example's index)."""
  workdir, config, _, arrays = certified
  _, dataset, module, variables = runs.load_classifiers(workdir)
  logits_fn = models.logits_fn(module, stacked.select(variables, 1))
  key = jax.random.fold_in(jax.random.key(config.seed), 1)
  parts = [certify.certify(logits_fn, dataset.x_test[s:s + 10],
                           certify.example_keys(key, 10, s), 0.25, config.n0, config.n,
                           config.alpha, chunk_size=config.chunk_size) for s in (0, 10)]
  count = np.concatenate([p.count for p in parts])
  assert np.abs(count - arrays['count'][1, 1]).max() <= 2  # a vote may flip by float rounding
  np.testing.assert_allclose(np.concatenate([p.radius for p in parts]), arrays['radius'][1, 1],
                             atol=0.02)


def test_no_confirmed_attack_is_closer_than_a_certified_radius(certified):
  """Soundness: SmoothAdv-PGD (L2, eps 0.5) on each model's soft smoothed classifier; a
  candidate confirmed by PREDICT inside a correct certificate's radius would contradict it."""
  _, config, results, arrays = certified
  epsilon = config.attacks.pgd_l2.epsilon
  for index, (sigma, entry) in enumerate(results['sigmas'].items()):
    confirmed, l2 = arrays[f'{sigma}.pgd_l2.confirmed'], arrays[f'{sigma}.pgd_l2.l2']
    assert np.all(l2 <= epsilon + 1e-4)
    correct = arrays['prediction'][index] == arrays['label']
    assert not np.any(correct & confirmed & (l2 < arrays['radius'][index]))
    assert entry['attacks']['pgd_l2']['per_model']['violations'] == [0, 0]
    assert entry['attacks']['pgd_l2']['num_certified'] == correct.sum(1).tolist()


def test_runs_are_named_and_never_overwritten(certified, monkeypatch):
  workdir, config, _, _ = certified
  monkeypatch.setattr(runs, 'load_classifiers', lambda *a: pytest.fail('loaded the models'))
  with pytest.raises(UserError, match='already exists'):
    study.run(config, workdir)
  proc = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'certify.py'),
                         f'--config={TINY}', f'--workdir={workdir}'], capture_output=True,
                        text=True, cwd=ROOT)
  assert proc.returncode == 2 and 'already exists' in proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize('overrides, message', [
    ({'sigmas': (0.25, -1.0)}, 'config.sigmas must be positive'),
    ({'n': 0}, 'config.n must be a positive integer'),
    ({'alpha': 2.0}, r'config.alpha must be in \(0, 1\)'),
    ({'name': '../x'}, 'config.name must be a folder name'),
    ({'attacks.pgd_l2.epsilon': -0.5}, 'epsilon must be a positive'),
    ({'smoothadv.num_samples': 0}, 'smoothadv.num_samples must be a positive'),
])
def test_bad_settings_fail_before_any_model_is_loaded(overrides, message, tmp_path):
  with pytest.raises(UserError, match=message):
    study.run(configured(TINY, **overrides), str(tmp_path))  # an empty workdir
