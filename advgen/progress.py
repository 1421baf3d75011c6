"""Progress of a long host loop: what it does, how far it is and an ETA, as absl INFO lines.

Loops advance it between their compiled calls (a batch, a class, a chunk), never inside one, so
it costs a clock reading and no device synchronization. It logs at a modest rate: when the phase
starts, after its first unit, then at most once every `every` seconds, and when it ends. The ETA
leaves the first unit out where it can, as that one usually carries the compilation.
"""

import time

from absl import logging


def clock_text(seconds):
  """Seconds as H:MM:SS (hours may exceed a day)."""
  seconds = int(round(seconds))
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


class Progress:
  """`Progress(what, total, unit)`, then `advance(count)` after each piece of the work."""

  def __init__(self, what, total, unit, every=20.0, clock=time.monotonic):
    self.what, self.total, self.unit, self.every = what, total, unit, every
    self.done = 0
    self._clock = clock
    self._start = self._last = clock()
    self._first = None  # (time, done) after the first unit: the ETA's origin
    logging.info('%s: %d %s', what, total, unit)

  def eta(self, now):
    """Seconds left at `now`, from the rate since the first unit (or since the start)."""
    since, done = self._first if self._first and self.done > self._first[1] else (self._start, 0)
    rate = (self.done - done) / max(now - since, 1e-9)
    return (self.total - self.done) / max(rate, 1e-12)

  def advance(self, count=1):
    self.done += count
    now = self._clock()
    first = self._first is None
    if first:
      self._first = (now, self.done)
    if self.done >= self.total:
      logging.info('%s: %d %s done in %s', self.what, self.done, self.unit,
                   clock_text(now - self._start))
    elif first or now - self._last >= self.every:
      logging.info('%s: %d/%d %s (%.0f%%) in %s, ETA %s', self.what, self.done, self.total,
                   self.unit, 100 * self.done / self.total, clock_text(now - self._start),
                   clock_text(self.eta(now)))
    else:
      return
    self._last = now
