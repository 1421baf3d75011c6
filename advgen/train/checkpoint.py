"""Orbax checkpoints of a training state pytree, with errors a user can act on."""

import logging
import os
import sys

import jax
import orbax.checkpoint as ocp

from advgen.errors import UserError


class Checkpoints:
  """Saves and restores the latest states under `workdir/checkpoints`."""

  def __init__(self, workdir, max_to_keep=2, keep_period=None):
    """Keeps the last `max_to_keep` steps, and every step divisible by `keep_period` if set."""
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, keep_period=keep_period,
                                             create=True))

  def latest_step(self):
    return self._manager.latest_step()

  def all_steps(self):
    return list(self._manager.all_steps())

  def save(self, step, state):
    self._manager.save(int(step), args=ocp.args.StandardSave(state))
    self._manager.wait_until_finished()

  def restore(self, target, step=None):
    """Restores into the structure (and shardings) of `target`; the latest step by default."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise UserError(f'no checkpoint in {self.directory}; train a model in this workdir first')
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    held = _HeldRecords()
    logging.getLogger('absl').addFilter(held)
    _drop_closed_loop_errors()
    try:
      restored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # Orbax raises many types for unreadable files.
      reason = f'{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ""}'
      if 'tree structures do not match' in str(e):  # readable, but another model's variables
        raise UserError(
            f'checkpoint {step} in {self.directory} holds other variables than the model the '
            f'config builds ({reason}): it was trained by another model, or by an older version '
            'of this one (docs/training.md lists the models whose layers changed); train again '
            'in a new --workdir') from None
      raise UserError(
          f'checkpoint {step} in {self.directory} is unreadable ({reason}); delete that step '
          'folder to resume from an earlier one, or use a new --workdir') from None
    finally:
      logging.getLogger('absl').removeFilter(held)
    held.release()
    return restored

  def close(self):
    self._manager.close()


class _HeldRecords(logging.Filter):
  """Holds orbax's log lines during a restore: a failed one says everything in its one error
  line, a successful one logs them afterwards."""

  def __init__(self):
    super().__init__()
    self.records = []

  def filter(self, record):
    if '/orbax/' not in record.pathname:
      return True
    self.records.append(record)
    return False

  def release(self):
    for record in self.records:
      logging.getLogger('absl').handle(record)


def _drop_closed_loop_errors():
  """When a restore fails, tensorstore finishes the reads orbax left pending and reports, from its
  own threads, that orbax's event loop is closed; those reports are noise around the error (the
  hook drops that one report only, for the rest of the process)."""
  previous = sys.unraisablehook
  if getattr(previous, 'drops_closed_loop', False):
    return

  def hook(unraisable):
    error = unraisable.exc_value
    if not (isinstance(error, RuntimeError) and str(error) == 'Event loop is closed'):
      previous(unraisable)

  hook.drops_closed_loop = True
  sys.unraisablehook = hook
