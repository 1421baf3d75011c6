"""The batched k-NN classifier against a brute-force numpy k-NN."""

import numpy as np
import pytest

from advgen.errors import UserError
from advgen.models import knn


def brute_force(train_x, train_y, x, k, num_classes):
  """Indices of the k nearest (stable sort: ties to the lower index) and the majority vote,
  ties to the class of the nearest neighbour among the tied classes."""
  t = np.asarray(train_x, np.float64).reshape(len(train_x), -1)
  q = np.asarray(x, np.float64).reshape(len(x), -1)
  d = ((q[:, None] - t[None]) ** 2).sum(-1)
  indices = np.argsort(d, axis=1, kind='stable')[:, :k]
  predictions = []
  for row in np.asarray(train_y)[indices]:
    counts = np.bincount(row, minlength=num_classes)
    tied = np.flatnonzero(counts == counts.max())
    predictions.append(next(label for label in row if label in tied))
  return np.take_along_axis(d, indices, 1), indices, np.array(predictions)


def _data(seed, num_train, num_test, shape, num_classes, grid=None):
  rng = np.random.default_rng(seed)
  draw = ((lambda s: rng.integers(0, grid, s).astype(np.float32)) if grid else
          (lambda s: rng.normal(size=s).astype(np.float32)))
  return (draw((num_train,) + shape), rng.integers(0, num_classes, num_train), draw(
      (num_test,) + shape))


@pytest.mark.parametrize('grid', [None, 3])
def test_agrees_with_brute_force(grid):
  """Continuous data, and data on a small integer grid (exact ties between distances and between
  votes, which the tie rules decide), for odd and even K."""
  train_x, train_y, x = _data(0, 200, 37, (3, 2, 1), 4, grid)
  distances, indices = knn.nearest(train_x, x, 7, train_block=64, query_block=16)
  want_d, want_i, _ = brute_force(train_x, train_y, x, 7, 4)
  np.testing.assert_array_equal(indices, want_i)
  np.testing.assert_allclose(distances, want_d, rtol=1e-5, atol=1e-5)
  ks = (1, 2, 3, 4, 6, 7)
  many = knn.knn_predict_many(train_x, train_y, x, ks, 4, train_block=64, query_block=16)
  for k, predictions in zip(ks, np.asarray(many)):
    np.testing.assert_array_equal(predictions, brute_force(train_x, train_y, x, k, 4)[2])
  np.testing.assert_array_equal(knn.knn_predict(train_x, train_y, x, 4, 4), many[3])
  if grid:  # both kinds of tie happen on this data
    assert np.any(want_d[:, 1:] == want_d[:, :-1])
    counts = [np.bincount(row, minlength=4) for row in train_y[want_i[:, :4]]]
    assert any((c == c.max()).sum() > 1 for c in counts)


def test_blocks_of_any_size_give_the_same_neighbours():
  train_x, train_y, x = _data(1, 101, 23, (4, 4, 1), 3, grid=3)
  want = knn.nearest(train_x, x, 5, train_block=101, query_block=23)
  for train_block, query_block in [(1, 1), (7, 5), (64, 23), (100, 8), (4096, 256)]:
    got = knn.nearest(train_x, x, 5, train_block=train_block, query_block=query_block)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])


def test_one_neighbour_classifies_the_training_set_perfectly():
  train_x, train_y, _ = _data(2, 300, 1, (8, 8, 1), 10)
  predictions = knn.knn_predict(train_x, train_y, train_x, 1, 10, train_block=128,
                                query_block=64)
  np.testing.assert_array_equal(predictions, train_y)
  assert np.mean(knn.knn_predict(train_x, train_y, train_x, 9, 10) == train_y) < 0.9


def test_many_ks_from_one_search():
  train_x, train_y, x = _data(3, 150, 40, (5,), 3, grid=4)
  ks = knn.odd_ks(7)
  assert ks == (7, 5, 3, 1)
  many = knn.knn_predict_many(train_x, train_y, x, ks, 3, train_block=32)
  assert many.shape == (4, 40)
  for row, k in zip(np.asarray(many), ks):
    np.testing.assert_array_equal(row, brute_force(train_x, train_y, x, k, 3)[2])
  assert len({tuple(row) for row in np.asarray(many)}) > 1  # K matters on this data
  logits = knn.knn_logits(train_x, train_y, x, 7, 3)
  assert logits.shape == (40, 3)
  np.testing.assert_array_equal(np.floor(logits).sum(-1), 7)  # the votes


def test_refuses_bad_k():
  train_x, _, x = _data(4, 5, 2, (2,), 2)
  with pytest.raises(UserError, match='between 1 and the training set size 5'):
    knn.nearest(train_x, x, 6)
  with pytest.raises(UserError, match='positive odd'):
    knn.odd_ks(4)
