"""A batched k-nearest-neighbour classifier (squared L2 distance) in JAX, for any dataset.

Distances are computed block by block, `query_block` queries against `train_block` training
points at a time (memory query_block x train_block, whatever the dataset's size), keeping a
running `lax.top_k` of the nearest: the same neighbours as one top-k over the whole training set.
`knn_logits` gives per-class vote scores whose argmax is the k-NN prediction, so a k-NN classifier
is a `logits_fn` like any model (for decision-based attacks such as HopSkipJump, which read only
the argmax). `knn_predict_many` evaluates several K (e.g. `odd_ks(7)` = 7, 5, 3, 1, as in Deniz et
al.'s k-NN experiment) from one search for the largest.

Ties: between training points at equal distance, the lower training index is nearer; between
classes with equal votes, the class of the nearest neighbour among them wins.
"""

import functools

import jax
import jax.numpy as jnp

from advgen.errors import UserError


def odd_ks(z):
  """(z, z - 2, ..., 1) for an odd z: the K of the k-NN experiment."""
  if z < 1 or z % 2 == 0:
    raise UserError(f'the largest K must be a positive odd number, got {z!r}')
  return tuple(range(z, 0, -2))


def _blocks(a, size):
  """`a` (N, ...) padded with zeros to a multiple of `size` and split into (N / size, size, ...)."""
  pad = -a.shape[0] % size
  a = jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1))
  return a.reshape((a.shape[0] // size, size) + a.shape[1:])


@functools.partial(jax.jit, static_argnames=('k', 'train_block', 'query_block'))
def nearest(train_x, x, k, *, train_block=4096, query_block=256):
  """Squared L2 distances (N, k), ascending, and training indices (N, k) of the k nearest
  training points of each of the N inputs `x` (any shape after the first axis)."""
  num_train = train_x.shape[0]
  if not 1 <= k <= num_train:
    raise UserError(f'k must be between 1 and the training set size {num_train}, got {k}')
  train = train_x.reshape(num_train, -1).astype(jnp.float32)
  queries = x.reshape(x.shape[0], -1).astype(jnp.float32)
  # Shifting the origin to a training point shrinks the norms (less cancellation in
  # |q|^2 - 2 q.t + |t|^2) and keeps data on an integer grid exact, so its ties are exact.
  centre = train[0]
  train, queries = train - centre, queries - centre
  train_block = min(train_block, num_train)
  query_block = min(query_block, x.shape[0])
  blocks = (_blocks(train, train_block), _blocks(jnp.sum(jnp.square(train), -1), train_block),
            _blocks(jnp.arange(num_train), train_block),
            _blocks(jnp.ones(num_train, bool), train_block))

  def search(q):
    q_sq = jnp.sum(jnp.square(q), -1, keepdims=True)

    def merge(best, block):
      t, t_sq, index, valid = block
      d = q_sq - 2.0 * jnp.dot(q, t.T, precision=jax.lax.Precision.HIGHEST) + t_sq[None]
      d = jnp.where(valid[None], jnp.maximum(d, 0.0), jnp.inf)
      # Earlier (lower-index) candidates come first, and top_k keeps the first of equal values.
      candidates = jnp.concatenate([best[0], d], axis=1)
      indices = jnp.concatenate([best[1], jnp.broadcast_to(index, d.shape)], axis=1)
      neg, pos = jax.lax.top_k(-candidates, k)
      return (-neg, jnp.take_along_axis(indices, pos, axis=1)), None

    init = (jnp.full((q.shape[0], k), jnp.inf), jnp.zeros((q.shape[0], k), jnp.int32))
    return jax.lax.scan(merge, init, blocks)[0]

  distances, indices = jax.lax.map(search, _blocks(queries, query_block))
  flat = lambda a: a.reshape((-1, k))[:x.shape[0]]
  return flat(distances), flat(indices)


def votes(neighbour_labels, num_classes):
  """Per-class scores (N, num_classes) of neighbour labels (N, k) sorted nearest first: the vote
  count plus a fraction < 1 that is larger the nearer the class's nearest neighbour, so the
  argmax is the majority with ties broken by the nearest neighbour among the tied classes."""
  k = neighbour_labels.shape[1]
  one_hot = jax.nn.one_hot(neighbour_labels, num_classes)  # (N, k, C)
  counts = jnp.sum(one_hot, axis=1)
  rank = jnp.arange(k, dtype=jnp.float32)[None, :, None]
  first = jnp.min(jnp.where(one_hot > 0, rank, float(k)), axis=1)  # k where the class is absent
  return counts + (k - first) / (k + 1.0)


@functools.partial(jax.jit, static_argnames=('k', 'num_classes', 'train_block', 'query_block'))
def knn_logits(train_x, train_y, x, k, num_classes, *, train_block=4096, query_block=256):
  """Vote scores (N, num_classes) of the k-NN classifier; argmax is its prediction."""
  _, indices = nearest(train_x, x, k, train_block=train_block, query_block=query_block)
  return votes(train_y[indices], num_classes)


def knn_predict(train_x, train_y, x, k, num_classes, **blocks):
  """The k-NN prediction (N,) for inputs `x`."""
  return jnp.argmax(knn_logits(train_x, train_y, x, k, num_classes, **blocks), axis=-1)


@functools.partial(jax.jit, static_argnames=('ks', 'num_classes', 'train_block', 'query_block'))
def knn_predict_many(train_x, train_y, x, ks, num_classes, *, train_block=4096,
                     query_block=256):
  """Predictions (len(ks), N) for every K in the tuple `ks`, from one search for max(ks)
  neighbours: the K nearest are the first K of the max(ks) nearest."""
  _, indices = nearest(train_x, x, max(ks), train_block=train_block, query_block=query_block)
  labels = train_y[indices]
  return jnp.stack([jnp.argmax(votes(labels[:, :k], num_classes), axis=-1) for k in ks])
