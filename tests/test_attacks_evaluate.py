"""Evaluation statistics on hand-made attack results."""

import math

import numpy as np
import pytest

from advgen import evaluate
from advgen.attacks import AttackResult


def _result(success, restart_success, linf, l2, distance):
  n = len(success)
  return AttackResult(x_adv=np.zeros((n, 2, 2, 1)), v=np.zeros((n, 2, 2, 1)),
                      success=np.asarray(success), distance=np.asarray(distance, float),
                      linf=np.asarray(linf, float), l2=np.asarray(l2, float),
                      logits=np.zeros((n, 3)), loss=np.zeros(n),
                      restart_success=np.asarray(restart_success))


def test_success_rates_count_correct_inputs_per_restart_and_any_restart():
  restarts = [[True, False], [False, False], [True, True], [True, True]]
  res = _result([True, False, True, True], restarts, [0.1, 0.3, 0.2, 0.9], [1.0, 3.0, 2.0, 9.0],
                [0.5, 0.6, 0.7, 0.8])
  clean_logits = np.array([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0], [2.0, 0, 0]])
  y = np.array([0, 1, 2, 1])  # the last input is misclassified: not attacked
  summary = evaluate.summarize(res, y, clean_logits)
  assert summary['test_error'] == 0.25
  assert summary['num_attacked'] == 3.0
  assert summary['success_rate'] == 0.5  # (1 + 0 + 2) / 6
  assert math.isclose(summary['success_rate_any'], 2 / 3)
  assert summary['robust_accuracy'] == 0.25  # correct, and no restart broke it: the second only
  assert math.isclose(summary['linf_mean'], 0.15) and math.isclose(summary['linf_median'], 0.15)
  assert math.isclose(summary['l2_mean'], 1.5) and math.isclose(summary['distance_median'], 0.6)
  assert all(isinstance(v, float) for v in summary.values())


def test_robust_accuracy_and_transfer():
  swept = _result(np.array([[False, False, False], [True, False, False], [True, True, False]]),
                  np.zeros((3, 3, 1), bool), np.zeros((3, 3)), np.zeros((3, 3)), np.zeros((3, 3)))
  clean_correct = np.array([True, True, False])
  robust = evaluate.robust_accuracy(swept, clean_correct, [0.0, 0.1, 0.3])
  assert robust == {'robust_accuracy@0': 2 / 3, 'robust_accuracy@0.1': 1 / 3,
                    'robust_accuracy@0.3': 0.0}

  target = lambda x: np.stack([x.sum((1, 2, 3)), -x.sum((1, 2, 3))], -1)
  x_adv = np.array([1.0, -1.0, 1.0, -1.0]).reshape(4, 1, 1, 1)
  y = np.array([0, 0, 1, 1])
  assert evaluate.transfer(target, x_adv, y) == {'transfer_success_rate': 0.5,
                                                 'num_transferred': 4.0}
  masked = evaluate.transfer(target, x_adv, y, mask=np.array([False, True, True, False]))
  assert masked == {'transfer_success_rate': 1.0, 'num_transferred': 2.0}
  empty = evaluate.distance_stats(swept, np.zeros((3, 3), bool))
  assert math.isnan(empty['l2_mean'])


def test_only_counted_inputs_can_succeed_and_the_rest_stay_in_the_denominator():
  """Stutz's on-learned-manifold attack counts successes only on codes inside the box: an
  uncounted success is a failure, an uncounted input still attacked."""
  restarts = [[True, False], [True, True], [False, False], [True, True]]
  res = _result([True, True, False, True], restarts, [0.1, 0.2, 0.3, 0.4], [1.0, 2.0, 3.0, 4.0],
                [0.1, 0.2, 0.3, 0.4])
  clean_logits = np.array([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0], [2.0, 0, 0]])
  y = np.array([0, 1, 2, 1])  # the last is wrong when clean
  counted = np.array([True, False, True, True])
  summary = evaluate.summarize(res, y, clean_logits, counted)
  assert summary['num_attacked'] == 3.0 and summary['num_counted'] == 2.0
  assert summary['success_rate'] == pytest.approx(1 / 6)  # only the first input's first restart
  assert summary['success_rate_any'] == pytest.approx(1 / 3)
  assert summary['robust_accuracy'] == 0.5  # the uncounted second and the third
  np.testing.assert_array_equal(evaluate.counted_successes(res, y, clean_logits, counted),
                                [True, False, False, False])
  assert summary['linf_mean'] == pytest.approx(0.1)  # distances of counted successes only
