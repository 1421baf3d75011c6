import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advgen import models, robustness
from advgen.cli import load_config
from advgen.errors import UserError
from advgen.train import state as state_lib
from conftest import ROOT


@pytest.fixture(scope='module')
def attacked(trained_tiny, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('attacked') / 'run')
  shutil.copytree(trained_tiny[0], workdir)
  config = load_config(os.path.join(ROOT, 'configs', 'attack_fonts_tiny.py'))
  return workdir, config, robustness.run(config, workdir)


def test_every_configured_attack_is_reported_for_every_model(attacked):
  workdir, config, results = attacked
  stored = json.load(open(os.path.join(workdir, robustness.RESULTS)))
  assert json.dumps(stored, sort_keys=True) == json.dumps(results, sort_keys=True)  # NaN-safe
  assert results['num_images'] == config.num_images and results['num_models'] == 2
  for name in config.attacks:
    per_model = results[name]['per_model']
    assert len(per_model) == 2
    for summary in per_model:
      assert 0 <= summary['success_rate'] <= summary['success_rate_any'] <= 1
      assert summary['num_attacked'] == pytest.approx(config.num_images *
                                                      (1 - summary['test_error']))
    assert [t['target'] for t in results[name]['transfer']] == [1, 0]
  assert os.path.getsize(os.path.join(workdir, robustness.FIGURE)) > 0


def test_image_space_attack_respects_its_radius(attacked):
  _, config, results = attacked
  epsilon = config.attacks.pgd_linf.epsilon
  for summary in results['pgd_linf']['per_model']:
    if summary['success_rate_any'] > 0:
      assert summary['linf_mean'] <= epsilon + 1e-5


def test_results_are_not_overwritten(attacked):
  workdir, config, _ = attacked
  before = open(os.path.join(workdir, robustness.RESULTS)).read()
  with pytest.raises(UserError, match='already exists'):
    robustness.run(config, workdir)
  assert open(os.path.join(workdir, robustness.RESULTS)).read() == before


def test_on_true_manifold_attack_needs_the_fonts_generator():
  from advgen import data
  import ml_collections
  spheres = data.load(ml_collections.ConfigDict(dict(name='spheres', num_train=10, num_test=10,
                                                     seed=0)))
  with pytest.raises(UserError, match='needs the fonts dataset'):
    robustness.build_attack(dict(attack='on_true_manifold', epsilon=0.3, num_steps=1,
                                 step_size=0.1, step_rule='sign'), spheres)


def test_models_attacked_together_equal_each_attacked_alone():
  """The K-model program (unrolled on CPU, vmapped elsewhere) gives model k what attacking model k
  alone gives."""
  module = models.classifier('stutz_convnet', 10)
  per_model = [models.init(module, k, (28, 28, 1)) for k in jax.random.split(jax.random.key(0), 2)]
  stacked = state_lib.stack(per_model)
  x = jax.random.uniform(jax.random.key(1), (6, 28, 28, 1))
  y = jnp.arange(6) % 10
  attack = robustness.build_attack(
      dict(attack='pgd_linf', epsilon=0.1, num_steps=5, step_size=0.02, early_stop=False), None)
  key = jax.random.key(2)
  together = robustness.attack_models(stacked, x, y, key, {}, module=module, attack=attack)
  for k, variables in enumerate(per_model):
    alone = jax.jit(lambda v: attack(models.logits_fn(module, v), x, y, key, {}))(variables)
    np.testing.assert_allclose(together.x_adv[k], alone.x_adv, atol=1e-5)
    assert not np.allclose(alone.x_adv, x)  # the attack moved the images
  assert not np.allclose(together.x_adv[0], together.x_adv[1])  # each model got its own attack
