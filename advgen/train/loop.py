"""The training loop shared by classifiers and generators.

It owns what every run needs and nothing model-specific: resuming from the last checkpoint,
metrics.jsonl, progress with an ETA, divergence checks and periodic checkpoints. The caller
supplies `train_step(state, step) -> (state, metrics)` (jitted, data inside) and `evaluate`.
"""

import math
import time

import jax
import numpy as np
from absl import logging

from advgen import results as results_lib
from advgen.errors import UserError
from advgen.train.checkpoint import Checkpoints
from advgen.train.workdir import MetricWriter


def _check_finite(metrics, step, checkpoints):
  for name, value in metrics.items():
    if not np.all(np.isfinite(value)):
      last = checkpoints.latest_step()
      kept = f'the last good checkpoint (step {last}) stays' if last else 'no checkpoint was saved'
      raise UserError(f'training diverged: {name} is {np.asarray(value).tolist()} at step {step}; '
                      f'rerun with a lower config.optimizer.learning_rate and a new --workdir '
                      f'({kept} in {checkpoints.directory})')


def fit(*, workdir, state, train_step, num_steps, steps_per_epoch, examples_per_step,
        evaluate=None, log_every=100, checkpoint_every=None, max_to_keep=2, keep_period=None,
        extra_metrics=None):
  """Runs `train_step` from the last checkpoint (or step 0) to `num_steps`; returns the state.

  `evaluate(state) -> dict` runs at every epoch end; `extra_metrics(step) -> dict` adds host-side
  values (e.g. the learning rate) to each log line. Checkpoints are saved every
  `checkpoint_every` steps (default: each epoch) and only from finite states; the last
  `max_to_keep` stay, and with `keep_period` also every step divisible by it (e.g. one per epoch,
  for studies that evaluate every epoch afterwards). Metrics per model go to metrics.jsonl in the
  layout of `advgen.results` (`per_model`, `mean`, `std`).
  """
  checkpoint_every = checkpoint_every or steps_per_epoch
  checkpoints = Checkpoints(workdir, max_to_keep, keep_period)
  writer = MetricWriter(workdir)
  try:
    start = checkpoints.latest_step() or 0
    writer.truncate_after(start)  # lines a killed run logged after its last checkpoint
    if start:
      state = checkpoints.restore(state, start)
      logging.info('resuming from the checkpoint at step %d', start)
    last_time, last_step = time.time(), start
    for step in range(start, num_steps):
      state, metrics = train_step(state, step)
      done = step + 1
      is_log = done % log_every == 0 or done == num_steps
      is_epoch = done % steps_per_epoch == 0 or done == num_steps
      is_checkpoint = done % checkpoint_every == 0 or done == num_steps
      if not (is_log or is_epoch or is_checkpoint):
        continue
      metrics = jax.device_get(metrics)
      _check_finite(metrics, done, checkpoints)
      record, per_model = {}, {}
      if is_log:
        now = time.time()
        steps_per_second = (done - last_step) / max(now - last_time, 1e-9)
        last_time, last_step = now, done
        eta = (num_steps - done) / steps_per_second
        per_model.update(metrics)
        record.update(steps_per_second=steps_per_second,
                      examples_per_second=steps_per_second * examples_per_step, eta_seconds=eta)
        if extra_metrics:
          record.update(extra_metrics(done))
        logging.info('step %d/%d (epoch %.2f) loss %.4f, %.1f steps/s, ETA %s', done, num_steps,
                     done / steps_per_epoch, float(np.mean(metrics.get('loss', math.nan))),
                     steps_per_second, time.strftime('%H:%M:%S', time.gmtime(eta)))
      if is_epoch and evaluate is not None:
        evaluation = evaluate(state)
        _check_finite(evaluation, done, checkpoints)
        per_model.update(evaluation)
        logging.info('step %d: %s', done, {k: round(float(np.mean(v)), 4)
                                           for k, v in evaluation.items()})
      if record or per_model:
        writer.write(done, {'epoch': done / steps_per_epoch, **record,
                            **results_lib.summarize(per_model)})
      if is_checkpoint:
        saving = time.time()
        checkpoints.save(done, state)
        last_time += time.time() - saving  # checkpoint time is not training time
  finally:  # also on errors: a manager left open dies noisily in its threads at exit
    checkpoints.close()
  return state
