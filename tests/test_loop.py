"""The shared training loop (`advgen.train.loop.fit`) on a toy state: which steps run, when it
logs, evaluates and checkpoints, what a resume re-runs, what it reports, and how it stops.

The toy step counts: `state['count']` is the number of steps applied and `state['visits'][s]` how
often step s ran, so a restart from 0, a skipped or repeated step, or a wrong restored state
shows in the final state. Each step's per-model loss is (step + 1) * [1, 2], so every logged
number can be checked exactly.
"""

import logging
import os
import time
import types

import jax.numpy as jnp
import numpy as np
import pytest

from advgen.errors import UserError
from advgen.train import loop, workdir as workdir_lib
from advgen.train.checkpoint import Checkpoints


class Killed(Exception):
  pass


def initial_state(num_steps):
  return {'count': jnp.zeros((), jnp.int32), 'visits': jnp.zeros(num_steps, jnp.int32)}


def toy_step(calls, clock=None, die_at=None, nan_at=None):
  """`train_step(state, step)` that records the steps it runs, checks it got the state of
  exactly `step` steps, and advances `clock` by half a second per step."""

  def train_step(state, step):
    if step == die_at:
      raise Killed()
    calls.append(step)
    assert int(state['count']) == step, f'step {step} got the state after {state["count"]}'
    if clock is not None:
      clock.now += 0.5
    loss = (step + 1.0) * np.array([1.0, 2.0])
    if step == nan_at:
      loss[0] = np.nan
    return ({'count': state['count'] + 1, 'visits': state['visits'].at[step].add(1)},
            {'loss': jnp.asarray(loss, jnp.float32)})

  return train_step


def records(workdir):
  return workdir_lib.MetricWriter(str(workdir)).read()


def saved_steps(workdir):
  checkpoints = Checkpoints(str(workdir))
  try:
    return sorted(checkpoints.all_steps())
  finally:
    checkpoints.close()


def run(workdir, num_steps=7, steps_per_epoch=3, log_every=2, **kwargs):
  calls, evaluated = [], []
  evaluate = kwargs.pop('evaluate', None)
  if evaluate is True:  # the default evaluation: records the step it saw
    evaluate = lambda state: (evaluated.append(int(state['count'])) or
                              {'accuracy': np.array([0.123456, 0.5])})
  step = kwargs.pop('train_step', None) or toy_step(calls)
  state = loop.fit(workdir=str(workdir), state=initial_state(num_steps), train_step=step,
                   num_steps=num_steps, steps_per_epoch=steps_per_epoch,
                   examples_per_step=10, log_every=log_every, evaluate=evaluate,
                   max_to_keep=kwargs.pop('max_to_keep', 10), **kwargs)
  return state, calls, evaluated


def test_every_step_runs_once_and_logs_evaluations_and_checkpoints_follow_the_schedule(tmp_path):
  """7 steps, epochs of 3, a log line every 2: logs at 2, 4, 6 and the last step (7); epoch ends
  (evaluation and checkpoint) at 3, 6 and 7. No line for a step that is none of these."""
  state, calls, evaluated = run(tmp_path, evaluate=True,
                                extra_metrics=lambda step: {'learning_rate': step / 100})
  assert calls == list(range(7))
  assert int(state['count']) == 7 and np.all(np.asarray(state['visits']) == 1)
  assert evaluated == [3, 6, 7]
  assert saved_steps(tmp_path) == [3, 6, 7]
  logged = records(tmp_path)
  assert [r['step'] for r in logged] == [2, 3, 4, 6, 7]
  for r in logged:
    assert r['epoch'] == pytest.approx(r['step'] / 3)
    is_log, is_epoch = r['step'] in (2, 4, 6, 7), r['step'] in (3, 6, 7)
    assert ('loss' in r['per_model']) == is_log and ('learning_rate' in r) == is_log
    assert ('accuracy' in r['per_model']) == is_epoch
    if is_log:  # the metrics of the step just run, per model, and their summary
      assert r['per_model']['loss'] == [r['step'], 2 * r['step']]
      assert r['mean']['loss'] == pytest.approx(1.5 * r['step'])
      assert r['std']['loss'] == pytest.approx(0.5 * r['step'])
      assert r['learning_rate'] == pytest.approx(r['step'] / 100)
    if is_epoch:
      assert r['per_model']['accuracy'] == pytest.approx([0.123456, 0.5])


def test_checkpoint_every_and_the_defaults(tmp_path):
  """An explicit `checkpoint_every` replaces the epoch schedule; by default a line is logged every
  100 steps and the last 2 checkpoints are kept; without `evaluate` nothing is evaluated and an
  epoch end that is not a log step writes no line."""
  _, calls, _ = run(tmp_path / 'every2', checkpoint_every=2)
  assert calls == list(range(7))
  assert saved_steps(tmp_path / 'every2') == [2, 4, 6, 7]
  assert [r['step'] for r in records(tmp_path / 'every2')] == [2, 4, 6, 7]

  defaults = tmp_path / 'defaults'
  calls = []
  loop.fit(workdir=str(defaults), state=initial_state(201), train_step=toy_step(calls),
           num_steps=201, steps_per_epoch=67, examples_per_step=10)
  assert calls == list(range(201))
  assert [r['step'] for r in records(defaults)] == [100, 200, 201]
  assert saved_steps(defaults) == [134, 201]


class FakeClock:
  """The loop's clock: 0.5 s per training step (toy_step) and 100 s per checkpoint save."""

  def __init__(self, monkeypatch):
    self.now = 1000.0
    monkeypatch.setattr(loop, 'time', types.SimpleNamespace(
        time=lambda: self.now, strftime=time.strftime, gmtime=time.gmtime))
    save = Checkpoints.save

    def slow_save(checkpoints, step, state):
      save(checkpoints, step, state)
      self.now += 100.0

    monkeypatch.setattr(Checkpoints, 'save', slow_save)


def test_rates_and_eta_count_training_time_only(tmp_path, monkeypatch, caplog):
  """Half a second per step, checkpoints excluded: 2 steps/s everywhere, 20 examples/s at 10
  examples per step, and an ETA of half a second per step left."""
  clock = FakeClock(monkeypatch)
  calls = []
  caplog.set_level(logging.INFO, logger='absl')
  evaluate = lambda state: {'accuracy': np.array([0.123456, 0.5])}
  run(tmp_path, log_every=1, evaluate=evaluate, train_step=toy_step(calls, clock))
  logged = [r for r in records(tmp_path) if 'loss' in r['per_model']]
  assert [r['step'] for r in logged] == list(range(1, 8))
  for r in logged:
    assert r['steps_per_second'] == pytest.approx(2.0)
    assert r['examples_per_second'] == pytest.approx(20.0)
    assert r['eta_seconds'] == pytest.approx((7 - r['step']) / 2)
  messages = [r.getMessage() for r in caplog.records if r.name == 'absl']
  # The progress line: step, epoch, mean loss, rate and ETA of that step.
  assert 'step 2/7 (epoch 0.67) loss 3.0000, 2.0 steps/s, ETA 00:00:02' in messages
  assert 'step 3: {\'accuracy\': 0.3117}' in messages  # the evaluation, mean over the models


def test_a_killed_run_resumes_from_its_checkpoint_without_rerunning_a_step(tmp_path, caplog):
  """Killed before step 5 (checkpoint at 3, lines logged up to 4): the resume restores the state
  of step 3, runs steps 3..6 only, drops the lines after 3 (and a half-written one) and ends
  with the numbers of an uninterrupted run."""
  reference, _, _ = run(tmp_path / 'reference', evaluate=True)
  workdir = tmp_path / 'run'
  killed = []
  with pytest.raises(Killed):
    run(workdir, evaluate=True, train_step=toy_step(killed, die_at=5))
  assert killed == list(range(5)) and saved_steps(workdir) == [3]
  assert [r['step'] for r in records(workdir)] == [2, 3, 4]
  with open(workdir / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 5, "per_mo')
  caplog.set_level(logging.INFO, logger='absl')
  calls = []
  state, _, evaluated = run(workdir, evaluate=True, train_step=toy_step(calls))
  assert calls == [3, 4, 5, 6]  # toy_step also checks each got the state of exactly its step
  assert evaluated == [6, 7]
  assert 'resuming from the checkpoint at step 3' in [r.getMessage() for r in caplog.records]
  for got, want in zip((state['count'], state['visits']), (reference['count'],
                                                          reference['visits'])):
    np.testing.assert_array_equal(got, want)
  assert np.all(np.asarray(state['visits']) == 1)  # no step ran twice into the final state
  strip = lambda r: {k: v for k, v in r.items() if k not in ('steps_per_second',
                                                             'examples_per_second', 'eta_seconds')}
  assert [strip(r) for r in records(workdir)] == [strip(r) for r in records(tmp_path /
                                                                            'reference')]
  # A finished workdir: nothing runs again.
  calls.clear()
  state, _, _ = run(workdir, train_step=toy_step(calls))
  assert calls == [] and int(state['count']) == 7


def test_divergence_stops_before_saving_and_names_the_last_good_checkpoint(tmp_path):
  """A NaN loss at step 5 (a log step with log_every=1): one-line error naming the metric, the
  step and the checkpoint that stays; the NaN state is neither saved nor logged."""
  workdir = tmp_path / 'late'
  with pytest.raises(UserError) as error:
    run(workdir, log_every=1, train_step=toy_step([], nan_at=4))
  directory = os.path.abspath(workdir / 'checkpoints')
  assert str(error.value) == (
      'training diverged: loss is [nan, 10.0] at step 5; rerun with a lower '
      'config.optimizer.learning_rate and a new --workdir (the last good checkpoint (step 3) '
      f'stays in {directory})')
  assert saved_steps(workdir) == [3]
  assert [r['step'] for r in records(workdir)] == [1, 2, 3, 4]

  workdir = tmp_path / 'early'  # before the first checkpoint
  with pytest.raises(UserError) as error:
    run(workdir, log_every=1, train_step=toy_step([], nan_at=0))
  directory = os.path.abspath(workdir / 'checkpoints')
  assert str(error.value).endswith(
      f'at step 1; rerun with a lower config.optimizer.learning_rate and a new --workdir '
      f'(no checkpoint was saved in {directory})')
  assert saved_steps(workdir) == [] and records(workdir) == []

  workdir = tmp_path / 'evaluation'  # a NaN evaluation also stops before saving
  with pytest.raises(UserError, match='training diverged: accuracy is'):
    run(workdir, evaluate=lambda state: {'accuracy': np.array([0.5, np.nan])})
  assert saved_steps(workdir) == []


def test_a_run_killed_before_its_first_checkpoint_does_not_log_lines_twice(tmp_path):
  with pytest.raises(Killed):
    run(tmp_path, train_step=toy_step([], die_at=2))  # line 2 logged, no checkpoint yet
  run(tmp_path)
  assert [r['step'] for r in records(tmp_path)] == [2, 4, 6, 7]


def test_rate_after_a_checkpoint_between_log_lines(tmp_path, monkeypatch):
  """The checkpoint at 3 falls between the log lines at 2 and 4: still 2 steps/s."""
  clock = FakeClock(monkeypatch)
  run(tmp_path, train_step=toy_step([], clock))
  logged = [r for r in records(tmp_path) if 'loss' in r['per_model']]
  assert [r['steps_per_second'] for r in logged] == pytest.approx([2.0] * len(logged))


def test_a_checkpoint_of_another_model_is_named_as_such_not_as_corrupt(tmp_path):
  """Readable files of other variables (another model, or an older version of it) are not
  'unreadable': deleting the step folder, the advice for a corrupt one, would not help."""
  saved = Checkpoints(str(tmp_path))
  saved.save(1, {'params': {'Dense_0': {'kernel': jnp.ones((3, 2))}}})
  saved.close()
  other = {'params': {'Dense_0': {'kernel': jnp.ones((3, 2)), 'bias': jnp.zeros(2)}}}
  with pytest.raises(UserError, match='holds other variables than the model.*new --workdir'):
    Checkpoints(str(tmp_path)).restore(other)
  same = Checkpoints(str(tmp_path)).restore({'params': {'Dense_0': {'kernel': jnp.zeros((3, 2))}}})
  np.testing.assert_array_equal(same['params']['Dense_0']['kernel'], np.ones((3, 2)))
