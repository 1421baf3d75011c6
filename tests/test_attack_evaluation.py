"""Statistics the attack pipeline reports: successes that count (Stutz's ||z||_inf <= 2 rule),
distances to the manifold and their ratio to the perturbation, and the validity of examples on
the true fonts manifold of every class."""

import math

import jax
import numpy as np
import pytest

from advgen import evaluate
from advgen.attacks import AttackResult
from advgen.data import fonts


def _result(success, restart_success):
  n = len(success)
  zeros = np.zeros(n)
  return AttackResult(x_adv=np.zeros((n, 2, 2, 1)), v=np.zeros((n, 2, 2, 1)),
                      success=np.asarray(success), distance=zeros + 0.1, linf=zeros + 0.1,
                      l2=np.arange(n, dtype=float), logits=np.zeros((n, 3)), loss=zeros,
                      restart_success=np.asarray(restart_success))


def test_successes_outside_the_counted_codes_stay_in_the_denominator():
  restarts = np.array([[True, True], [True, False], [True, True], [False, False], [True, True]])
  res = _result(restarts.any(1), restarts)
  clean_logits = np.eye(3)[[0, 1, 2, 0, 1]] * 2
  y = np.array([0, 1, 2, 0, 2])  # the last input is misclassified
  counted = np.array([True, False, True, True, True])  # input 1's code has ||z||_inf > 2
  summary = evaluate.summarize(res, y, clean_logits, counted)
  assert summary['num_attacked'] == 4.0 and summary['num_counted'] == 3.0
  assert summary['success_rate'] == 4 / 8  # restarts (2 + 0 + 2 + 0) of 4 inputs
  assert summary['success_rate_any'] == 2 / 4
  assert summary['l2_median'] == 1.0  # inputs 0 and 2 only
  np.testing.assert_array_equal(evaluate.counted_successes(res, y, clean_logits, counted),
                                [True, False, True, False, False])
  plain = evaluate.summarize(res, y, clean_logits)
  assert plain['success_rate_any'] == 3 / 4 and 'num_counted' not in plain


def test_manifold_distance_statistics_and_ratio():
  distance = np.array([1.0, 2.0, 3.0, 0.5, 9.0])
  perturbation = np.array([2.0, 2.0, 3.0, 0.0, 1.0])
  mask = np.array([True, True, True, True, False])  # the zero perturbation has no ratio
  stats = evaluate.manifold_distance_stats(distance, perturbation, mask, 'manifold_true')
  assert stats['manifold_true_count'] == 3.0
  assert stats['manifold_true_distance_mean'] == 2.0
  assert stats['manifold_true_ratio_median'] == 1.0
  assert math.isclose(stats['manifold_true_ratio_mean'], (0.5 + 1 + 1) / 3)
  empty = evaluate.manifold_distance_stats(distance, perturbation, ~mask, 'x')
  assert empty['x_count'] == 1.0 and empty['x_ratio_mean'] == 9.0


def test_validity_is_strictly_nearest_own_class():
  distances = np.array([[0.1, 0.5, 0.9],   # own class 0 nearest: valid
                        [0.2, 0.3, 0.9],   # own class 1, class 0 nearer: invalid
                        [0.4, 0.4, 0.4],   # a tie is not valid
                        [0.9, 0.8, 0.7]])  # own class 2 nearest: valid
  labels = np.array([0, 1, 2, 2])
  stats = evaluate.validity(distances, labels)
  assert stats['validity'] == 0.5 and stats['validity_count'] == 4.0
  assert math.isclose(stats['validity_own_distance_mean'], (0.1 + 0.3 + 0.4 + 0.7) / 4)
  assert math.isclose(stats['validity_other_distance_median'], (0.4 + 0.5) / 2)  # .5 .2 .4 .8
  assert evaluate.validity(distances, labels, [True, False, False, False])['validity'] == 1.0
  assert math.isnan(evaluate.validity(distances, labels, np.zeros(4, bool))['validity'])


@pytest.fixture(scope='module')
def renders(fonts_manifold):
  images, labels, latents = fonts.sample(fonts_manifold, jax.random.key(5), 10)
  return images, labels, latents


def test_true_renders_are_valid_and_on_their_own_class_manifold(fonts_manifold, renders):
  images, labels, _ = renders
  settings = dict(num_candidates=8, num_random=8, num_restarts=1, num_steps=10)
  d = evaluate.class_manifold_distances(fonts_manifold, images, jax.random.key(0), 10,
                                        **settings)
  assert d.shape == (10, 10)
  own = d[np.arange(10), labels]
  assert np.median(own) < 1e-3  # the exact projection recovers (almost) every rendering
  others = d.copy()
  others[np.arange(10), labels] = np.inf
  assert np.min(others, axis=1).min() > 1.0  # other letters are far
  assert evaluate.validity(d, labels)['validity'] >= 0.9
  assert evaluate.validity(d, (labels + 1) % 10)['validity'] == 0.0
