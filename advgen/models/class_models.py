"""Class-specific generators as plain functions: K stacked generators (one per class, leading
model axis) used through each example's own class model, and applied to a dataset grouped by
class so each example costs one model's work.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from advgen.errors import UserError
from advgen.models import stacked


def _apply(module, method):
  return lambda v, inputs: module.apply(v, inputs, method=method)


def _by_sorted_chunks(apply, variables, inputs, y):
  """`apply(variables[y_i], inputs_i)` for each example i of a batch whose labels are traced.

  Running every class model on the whole batch costs K times one model's work, and gathering
  per-example parameters turns each layer into B tiny products. Instead the batch is sorted by
  class and cut into n chunks of c = ceil(B / K) examples; chunk j spans classes lo_j..hi_j, and
  since the labels are sorted there are at most n + K - 1 (chunk, class) pairs, a static count.
  Each pair runs its class's model on its chunk: about 2B examples' work, static-shaped.
  """
  k, b = stacked.count(variables), inputs.shape[0]
  c = -(-b // k)
  n = -(-b // c)
  order = jnp.argsort(y, stable=True)
  pad = lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], n * c - b, 0)])  # keeps labels sorted
  ys = pad(y[order]).reshape(n, c)
  xs = pad(inputs[order]).reshape((n, c) + inputs.shape[1:])
  lo, spans = ys[:, 0], ys[:, -1] - ys[:, 0] + 1
  starts = jnp.cumsum(spans) - spans
  slot = jnp.arange(n + k - 1)  # slots past the pairs' count repeat the last chunk, unused
  chunk = jnp.minimum(jnp.searchsorted(starts + spans, slot, side='right'), n - 1)
  label = jnp.minimum(lo[chunk] + slot - starts[chunk], k - 1)
  # vmapped, also on CPU: unrolling the pairs compiles 4x slower for no faster program.
  out = jax.vmap(apply)(jax.tree.map(lambda a: a[label], variables), xs[chunk])
  pair = starts[:, None] + ys - lo[:, None]  # (n, c): each sorted example's slot
  inverse = jnp.argsort(order)
  return jax.tree.map(
      lambda o: o[pair, jnp.arange(c)].reshape((n * c,) + o.shape[2:])[:b][inverse], out)


def _per_example(module, variables, method, name):
  apply = _apply(module, method)
  if stacked.count(variables) == 1:
    single = stacked.select(variables, 0)
    return lambda inputs, y=None: apply(single, inputs)

  def fn(inputs, y=None):
    if y is None:
      raise UserError(f'these generators are class-specific: call {name}(..., y) with the labels')
    return _by_sorted_chunks(apply, variables, jnp.asarray(inputs), jnp.asarray(y))

  return fn


def encode_fn(module, variables):
  """`(x, y=None) -> (mean, log_var)`: the encoder of each example's class (inference mode)."""
  return _per_example(module, variables, 'encode', 'encode_fn')


def decode_fn(module, variables):
  """`(z, y=None) -> x`: the decoder of each example's class, so decoded images keep label y.

  For a class-agnostic generator (K = 1) `y` is ignored. When every example has the same class
  `class_decode_fn` is about twice as cheap.
  """
  return _per_example(module, variables, 'decode', 'decode_fn')


def class_decode_fn(module, variables, k):
  """`z -> x` through the decoder of model `k` alone."""
  return functools.partial(_apply(module, 'decode'), stacked.select(variables, k))


def class_encode_fn(module, variables, k):
  """`x -> (mean, log_var)` through the encoder of model `k` alone."""
  return functools.partial(_apply(module, 'encode'), stacked.select(variables, k))


def group_by_class(labels, num_models):
  """Per-model example indices, padded: (index (K, m) int32, counts (K,)).

  Row k lists the examples of class k (all examples when K = 1), padded with its first entry up
  to the largest class size m.
  """
  labels = np.asarray(labels)
  if num_models == 1:
    return np.arange(len(labels), dtype=np.int32)[None], np.array([len(labels)])
  rows = [np.flatnonzero(labels == k) for k in range(num_models)]
  counts = np.array([len(r) for r in rows])
  if counts.min() == 0:
    raise UserError(f'class {int(np.argmin(counts))} has no examples; class-specific generators '
                    'need every class (set config.class_specific=False or add data)')
  width = counts.max()
  index = np.stack([np.concatenate([r, np.full(width - len(r), r[0])]) for r in rows])
  return index.astype(np.int32), counts


@functools.partial(jax.jit, static_argnames=('module', 'method', 'batch_size'))
def _grouped(variables, x, *, module, method, batch_size):
  """x (K, m, ...) with m a multiple of batch_size -> outputs of model k on row k."""
  apply = _apply(module, method)

  def one(v, rows):
    batches = rows.reshape((-1, batch_size) + rows.shape[1:])
    out = jax.lax.map(lambda b: apply(v, b), batches)
    return jax.tree.map(lambda o: o.reshape((-1,) + o.shape[2:]), out)

  return jax.vmap(one)(variables, x)


def apply_by_class(module, variables, x, y=None, method='encode', batch_size=500):
  """`module.<method>` of each example's class model on all of `x`, in fixed-size batches.

  Examples are grouped by class on the host so each is processed by its own model only (no K-fold
  work); outputs come back in the order of `x`. `method` is 'encode', 'decode' or 'reconstruct'.
  """
  k = stacked.count(variables)
  if k > 1 and y is None:
    raise UserError('these generators are class-specific: pass the labels y')
  x = np.asarray(x)
  index, counts = group_by_class(np.zeros(len(x), np.int32) if k == 1 else y, k)
  batch_size = int(min(batch_size, index.shape[1]))
  width = -(-index.shape[1] // batch_size) * batch_size
  index = np.concatenate([index, np.repeat(index[:, :1], width - index.shape[1], 1)], 1)
  out = jax.device_get(_grouped(variables, jnp.asarray(x[index]), module=module, method=method,
                                batch_size=batch_size))

  def scatter(o):
    result = np.zeros((len(x),) + o.shape[2:], o.dtype)
    for row, count in enumerate(counts):
      result[index[row, :count]] = o[row, :count]
    return result

  return jax.tree.map(scatter, out)
