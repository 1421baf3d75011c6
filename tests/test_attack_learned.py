"""The on-learned-manifold attack of the pipeline (Stutz eq. 3): tiny class-specific VAE-GANs
(configs/vaegan_fonts_tiny.py, trained once per session), the decoder of each example's true
class, test codes and their box, successes counted only where ||z_test||_inf <= 2, validity on
the true fonts manifolds, and the generator-inversion distance."""

import copy
import json
import os
import shutil

import jax
import numpy as np
import pytest

from advgen import attacks, evaluate, manifold
from advgen.cli import load_config
from advgen.errors import UserError
from advgen.models import class_models
from advgen.studies import attack as attack_study, runs
from conftest import ROOT, built_once


@pytest.fixture(scope='module')
def generator_workdir(trained_vaegan_tiny):
  return trained_vaegan_tiny[0]


@pytest.fixture(scope='module')
def attacked(trained_tiny, generator_workdir, tmp_path_factory):
  config = load_config(os.path.join(ROOT, 'configs', 'attack_fonts_learned_tiny.py'))
  del config.attacks['on_true_manifold']  # its own tests are in test_attack_script.py
  config.generator_workdir = generator_workdir
  config.distance.methods = ('learned',)
  # Validity projects each measured example onto all 10 true class manifolds: most of the run.
  config.distance.num_images = config.num_examples = 5

  def attack(path):
    shutil.copytree(trained_tiny[0], path)
    attack_study.run(config, path)

  workdir = built_once(tmp_path_factory, 'attacked_learned_tiny', attack)
  results = json.load(open(attack_study.paths(workdir, config.name)['results']))
  with np.load(attack_study.paths(workdir, config.name)['examples']) as f:
    stored = dict(f)
  return workdir, config, results, stored


def test_learned_manifold_decodes_with_each_examples_true_class(generator_workdir):
  _, _, module, variables = runs.load_generators(generator_workdir)
  z = jax.random.normal(jax.random.key(0), (6, module.latent_dim))
  labels = np.array([3, 0, 9, 3, 5, 1])
  space = attacks.learned_manifold(module, variables, [[-3.0] * 10, [3.0] * 10])
  assert space.field == 'code' and space.box.shape == (2, 10)
  decoded = np.asarray(space.decode(z, {'label': labels}))
  for i, label in enumerate(labels):
    own = class_models.class_decode_fn(module, variables, int(label))(z[i:i + 1])
    np.testing.assert_allclose(decoded[i:i + 1], own, atol=1e-5)
  other = class_models.class_decode_fn(module, variables, 4)(z)
  assert not np.allclose(decoded, other, atol=1e-3)


@pytest.mark.parametrize('labels', [np.random.RandomState(0).randint(0, 10, 37),  # chunks span
                                    np.full(23, 7), np.arange(30) % 10])          # classes
def test_decoding_by_class_matches_each_class_decoder(generator_workdir, labels):
  """decode_fn sorts the batch by class into chunks; each example still gets its own class's
  decoder, in the batch's order."""
  _, _, module, variables = runs.load_generators(generator_workdir)
  z = jax.random.normal(jax.random.key(1), (len(labels), module.latent_dim))
  decoded = np.asarray(jax.jit(class_models.decode_fn(module, variables))(z, labels))
  for label in np.unique(labels):
    rows = labels == label
    own = class_models.class_decode_fn(module, variables, int(label))(z[rows])
    np.testing.assert_allclose(decoded[rows], own, atol=1e-5)


def test_attack_moves_the_test_codes_inside_their_box(attacked, generator_workdir):
  workdir, config, results, stored = attacked
  _, dataset, _, _ = runs.load_classifiers(workdir)
  _, _, module, variables = runs.load_generators(generator_workdir)
  codes = manifold.latent_codes(module, variables, dataset.x_test, dataset.y_test)[0]
  box = results['learned_manifold']['code_box']
  np.testing.assert_allclose(box, [codes.min(0), codes.max(0)], rtol=1e-5, atol=1e-5)
  num = config.num_images
  counted = np.abs(codes[:num]).max(1) <= attack_study.CODE_BOUND
  np.testing.assert_array_equal(stored['on_learned_manifold.counted'], counted)
  assert results['learned_manifold']['num_counted_codes'] == counted.sum() < num
  # The adversarial images are decodings of codes within eps of the test codes.
  distance = stored['on_learned_manifold.distance']
  assert distance.max() <= config.attacks.on_learned_manifold.epsilon + 1e-5
  decode = class_models.decode_fn(module, variables)
  e = config.num_examples
  start = np.asarray(decode(codes[:e], dataset.y_test[:e]))
  moved = np.sqrt(((stored['on_learned_manifold.x_adv'] - start) ** 2).sum((2, 3, 4)))
  np.testing.assert_allclose(moved, stored['on_learned_manifold.l2'][:, :e], rtol=1e-3,
                             atol=1e-4)


def test_successes_count_only_where_the_code_is_within_two(attacked):
  _, _, results, stored = attacked
  per_model = results['attacks']['on_learned_manifold']['per_model']
  counted, correct = stored['on_learned_manifold.counted'], stored['clean_correct']
  success = stored['on_learned_manifold.success']
  restarts = stored['on_learned_manifold.restart_success']
  assert (success & ~counted & correct).any()  # otherwise the rule would not show
  for k in range(2):
    assert per_model['success_rate_any'][k] == pytest.approx(
        (success[k] & counted)[correct[k]].mean())
    assert per_model['success_rate'][k] == pytest.approx(
        (restarts[k] & counted[:, None])[correct[k]].mean())
    assert per_model['num_attacked'][k] == correct[k].sum()
    assert per_model['num_counted'][k] == (correct[k] & counted).sum()
  np.testing.assert_array_equal(stored['on_learned_manifold.counted_success'],
                                success & counted & correct)


def test_validity_and_inversion_distance_of_the_learned_examples(attacked):
  _, config, results, stored = attacked
  per_model = results['attacks']['on_learned_manifold']['per_model']
  m = config.distance.num_images
  d = stored['on_learned_manifold.validity_distances']
  y = stored['label'][:m]
  assert d.shape == (2, m, 10)
  masks = stored['on_learned_manifold.counted_success'][:, :m]
  assert masks.any()
  for k in range(2):
    for key, value in evaluate.validity(d[k], y, masks[k]).items():
      assert per_model[key][k] == pytest.approx(value, nan_ok=True)
  assert results['learned_manifold']['decoded_codes']['validity_count'] == m
  # Generator inversion: the examples are decodings of the true class's generator, so they lie
  # (nearly) on its image, much nearer than the clean test images.
  inverted = stored['on_learned_manifold.learned_distance']
  clean = stored['clean.learned_distance']
  assert np.median(inverted) < 0.5 * np.median(clean)
  assert results['distance_methods'] == ['learned']


def test_a_class_agnostic_generator_is_refused_for_the_learned_attack(monkeypatch, attacked,
                                                                      generator_workdir):
  workdir, config, _, _ = attacked
  config = copy.deepcopy(config)
  load = runs.load_generators

  def one_model(path):
    cfg, dataset, module, variables = load(path)
    return cfg, dataset, module, jax.tree.map(lambda a: a[:1], variables)

  monkeypatch.setattr(runs, 'load_generators', one_model)
  config.name = 'agnostic'
  with pytest.raises(UserError, match='needs class-specific ones'):
    attack_study.run(config, workdir)
