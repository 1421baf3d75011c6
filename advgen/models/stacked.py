"""The model axis: K models of one architecture kept as one pytree with a leading axis K.

The papers train and attack several models per setting (seeds, or one generator per class).
Stacking them lets one compiled program serve all K; these helpers are the only place that
knows how the axis is laid out and how a program runs over it on each backend.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np


def stack(trees):
  """K pytrees of the same structure (states, variables, outputs) into one with a leading model
  axis."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def select(tree, k):
  """Model `k`'s slice of a stacked pytree."""
  return jax.tree.map(lambda a: a[k], tree)


def count(tree):
  """The number K of stacked models."""
  return jax.tree.leaves(tree)[0].shape[0]


def over_models(fn):
  """`fn` on each model's slice of arguments stacked along a leading model axis, in one program.

  On accelerators the models are vmapped. On CPU, vmap turns every convolution into a grouped
  one that XLA:CPU runs slowly (5 fonts conv nets trained together: 0.57x the speed of training
  them one after another, against 1.07x unrolled; benchmarks/train_throughput.py; PGD on 5 of
  them: unrolled 3.2x as fast as vmapped, benchmarks/attack_throughput.py), so there the K
  models are unrolled in the program instead; compile time then grows with K.
  """
  if jax.default_backend() != 'cpu':
    return jax.vmap(fn)

  def unrolled(*args):
    outs = [fn(*select(args, k)) for k in range(count(args))]
    return stack(outs)

  return unrolled


def model_keys(seed, num_models):
  """One key per model: model k of seed s is the same whatever K is."""
  return jax.vmap(lambda k: jax.random.fold_in(jax.random.key(seed), k))(jnp.arange(num_models))


@functools.partial(jax.jit, static_argnames=('module', 'per_model'))
def _stacked_batch_logits(variables, x, *, module, per_model):
  apply = lambda v, inputs: module.apply(v, inputs, train=False)
  if per_model:
    return over_models(apply)(variables, x)
  return over_models(lambda v: apply(v, x))(variables)


def stacked_logits(module, variables, x, batch_size=500, per_model=False):
  """Logits (K, N, C) of K stacked classifiers on all of `x` (N, ...), or with `per_model` model
  k's on its own inputs x[k] (x: K, N, ...).

  Batches are padded to one size, so every call with the same models compiles nothing new; they
  are dispatched from the host rather than looped over inside the program, where XLA:CPU runs
  convolutions several times slower.
  """
  x = np.asarray(x)
  axis = 1 if per_model else 0
  n = x.shape[axis]
  pad = [(0, 0)] * x.ndim
  pad[axis] = (0, -n % batch_size)
  padded = np.pad(x, pad)
  parts = [_stacked_batch_logits(variables, np.take(padded, np.arange(i, i + batch_size), axis),
                                 module=module, per_model=per_model)
           for i in range(0, padded.shape[axis], batch_size)]
  return np.concatenate(jax.device_get(parts), axis=1)[:, :n]
