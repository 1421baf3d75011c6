"""Progress lines of long phases: their rate limit and ETA (a fake clock), and the loops that
drive them (attack batches, projection chunks) computing what they computed without them."""

import logging

import jax
import numpy as np
import pytest

from advgen import progress as progress_lib
from advgen.data import fonts, fonts_projection
from advgen.studies import attack as attack_study


class Clock:
  def __init__(self):
    self.now = 1000.0

  def __call__(self):
    return self.now


@pytest.fixture
def lines(caplog):
  """The absl INFO lines logged so far (captured on the absl logger itself, as flag parsing in
  an earlier test of the worker may raise its level)."""
  caplog.set_level(logging.INFO, logger='absl')
  return lambda: [r.getMessage() for r in caplog.records if r.name == 'absl']


def test_lines_at_start_first_unit_every_period_and_end(lines):
  clock = Clock()
  progress = progress_lib.Progress('attack pgd', 10, 'batches', every=20.0, clock=clock)
  for seconds in [30, 1, 1, 5, 5, 10, 1, 1, 1, 1]:  # the first carries the compilation
    clock.now += seconds
    progress.advance()
  assert lines() == [
      'attack pgd: 10 batches',
      'attack pgd: 1/10 batches (10%) in 0:00:30, ETA 0:04:30',
      # 2/10 .. 5/10 come within 20 s of the last line; 6/10 is 22 s after it
      'attack pgd: 6/10 batches (60%) in 0:00:52, ETA 0:00:18',
      'attack pgd: 10 batches done in 0:00:56']


def test_eta_leaves_the_first_unit_out_once_later_ones_are_timed():
  clock = Clock()
  progress = progress_lib.Progress('x', 100, 'steps', clock=clock)
  clock.now += 600  # compiling
  progress.advance()
  assert progress.eta(clock.now) == pytest.approx(99 * 600)  # only the first unit is known
  for _ in range(9):
    clock.now += 2
    progress.advance()
  assert progress.eta(clock.now) == pytest.approx(90 * 2)
  assert progress_lib.clock_text(90061) == '25:01:01'


def test_attack_in_batches_logs_each_batch_and_keeps_the_order(lines, monkeypatch):
  calls = []

  def fake(variables, batch, key, *, module, attack, per_model):
    calls.append(batch['label'].shape)
    return {'label': np.stack([batch['label'], batch['label'] + 1])}  # (K=2, B)

  monkeypatch.setattr(attack_study, 'attack_models', fake)
  test = {'label': np.arange(10)}
  variables = {'w': np.zeros((2, 3))}
  out = attack_study.attack_in_batches(None, test, variables, None, jax.random.key(0), 4,
                                       name='attack fgsm')
  np.testing.assert_array_equal(out['label'], [np.arange(10), np.arange(1, 11)])
  assert calls == [(4,), (4,), (2,)]
  assert lines()[0] == 'attack fgsm on 2 models x 10 images: 3 batches'
  assert lines()[-1].startswith('attack fgsm on 2 models x 10 images: 3 batches done in ')


def test_projection_in_chunks_gives_each_image_its_own_result(fonts_manifold, lines,
                                                               monkeypatch):
  """Chunked, every image keeps its own random starts and candidate, and the padding of the
  last chunk is cut off: the same as one call on all images."""
  x, y, latents = fonts.sample(fonts_manifold, jax.random.key(1), 8)
  noisy = np.random.default_rng(3).uniform(0, 1, x.shape).astype(np.float32)  # far from all:
  weak = dict(num_candidates=1, num_rotations=1, num_random=16, num_restarts=1, num_steps=0,
              schedule=())  # the best start is often a random one, so each image's key counts
  key = jax.random.key(5)
  whole = fonts.project(fonts_manifold, noisy, y, key, **weak)
  candidate = (latents['font'], latents['theta'])
  whole_given = fonts.project(fonts_manifold, noisy, y, key, candidate=candidate, **weak)
  assert not lines()  # one chunk: nothing to report
  # Memory grows with images x fonts: a budget of 3 images' worth of this manifold's fonts per
  # call gives 8 images in 3 chunks of 3, one row padded.
  monkeypatch.setattr(fonts_projection, 'CHUNK_PAIRS', 3 * fonts_manifold.prototypes.shape[0])
  chunked = fonts.project(fonts_manifold, noisy, y, key, **weak)
  chunked_given = fonts.project(fonts_manifold, noisy, y, key, candidate=candidate, **weak)
  for a, b in zip(whole + whole_given, chunked + chunked_given):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert lines()[0] == 'projecting 8 images onto their class manifolds: 8 images'
  assert lines()[-1].startswith('projecting 8 images onto their class manifolds: 8 images done')
