"""Distance of images to a data manifold, and the latent codes of a dataset.

- `invert`: project images onto a generator's image, min_z ||g(z) - x||_2, batched, with restarts,
  as one jit-compiled program (Stutz et al.; the projection behind Fawzi et al.'s Theorem 2).
- `subspace_distance`: Stutz et al.'s approximation without a generator: the residual of the
  least-squares projection onto the span of the k nearest training images (centred).
- `latent_codes`: encoder means (and log-variances) of a dataset, each image through the encoder
  of its own class; saved by the generator training as `latents.npz` for on-manifold attacks.

On fonts the *true* class manifold is known; its projection is `advgen.data.fonts.project`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from advgen.errors import UserError
from advgen.models import class_models, generators


@functools.partial(jax.jit, static_argnames=('decode_fn', 'latent_dim', 'num_restarts',
                                             'num_steps'))
def invert(decode_fn, x, key, y=None, z_init=None, *, latent_dim, num_restarts=4, num_steps=200,
           learning_rate=0.05, bound=None):
  """Latent codes whose decodings are nearest to `x`: (z (B, d), decoded (B, ...), residual (B,)).

  Minimizes ||decode_fn(z) - x||_2^2 per example with Adam from `num_restarts` starts (N(0, I)
  draws truncated to [-2, 2]; the first start is `z_init` when given, e.g. the encoder mean) and
  keeps the best restart. `decode_fn(z)` (or `decode_fn(z, y)` when labels `y` are given, for
  class-specific generators) must treat examples independently (inference mode), so the batch is B
  independent problems. `bound` clips z to a latent box [-bound, bound]. The residual is the
  L2 distance from `x` to the generator's image (as far as the optimization finds it).
  """
  batch = x.shape[0]
  bound = jnp.inf if bound is None else bound  # traced: a new box needs no new compilation
  starts = generators.truncated_prior(key, (num_restarts, batch, latent_dim))
  if z_init is not None:
    starts = starts.at[0].set(z_init)
  starts = jnp.clip(starts, -bound, bound)
  targets = jnp.broadcast_to(x, (num_restarts,) + x.shape).reshape((-1,) + x.shape[1:])
  labels = None if y is None else jnp.tile(jnp.asarray(y), num_restarts)

  def decode(z):  # (R, B, d) -> (R * B, ...) in one call of the decoder
    flat = z.reshape(-1, latent_dim)
    return decode_fn(flat) if labels is None else decode_fn(flat, labels)

  def squared_errors(z):
    diff = (decode(z) - targets).reshape(num_restarts * batch, -1)
    return jnp.sum(diff ** 2, axis=1)

  opt = optax.adam(learning_rate)

  def step(carry, _):
    z, opt_state = carry
    grad = jax.grad(lambda z: jnp.sum(squared_errors(z)))(z)
    updates, opt_state = opt.update(grad, opt_state)
    return (jnp.clip(z + updates, -bound, bound), opt_state), None

  (z, _), _ = jax.lax.scan(step, (starts, opt.init(starts)), None, length=num_steps)
  decoded = decode(z).reshape((num_restarts, batch) + x.shape[1:])
  errors = jnp.sum((decoded - x[None]).reshape(num_restarts, batch, -1) ** 2, axis=-1)
  best = jnp.argmin(errors, axis=0)
  pick = lambda a: a[best, jnp.arange(batch)]
  return pick(z), pick(decoded), jnp.sqrt(pick(errors))


def latent_codes(module, variables, x, y=None, batch_size=500):
  """Encoder means and log-variances (N, d) of images `x`, each through its class's encoder."""
  if not module.has_encoder:
    raise UserError('this generator has no encoder (a DCGAN); get latent codes with '
                    'advgen.manifold.invert instead')
  return class_models.apply_by_class(module, variables, x, y, 'encode', batch_size)


@functools.partial(jax.jit, static_argnames=('num_neighbours', 'batch_size'))
def _subspace_distance(x, reference, num_neighbours, batch_size):
  ref = reference.reshape(reference.shape[0], -1)
  ref_sq = jnp.sum(ref ** 2, axis=1)

  def one(v):
    _, nearest = jax.lax.top_k(-(ref_sq - 2.0 * ref @ v), num_neighbours)
    neighbours = ref[nearest]
    centre = jnp.mean(neighbours, axis=0)
    basis = (neighbours - centre).T  # (D, k)
    coef = jnp.linalg.lstsq(basis, v - centre)[0]
    return jnp.linalg.norm(basis @ coef - (v - centre))

  flat = x.reshape(-1, batch_size, ref.shape[1])
  return jax.lax.map(jax.vmap(one), flat).reshape(-1)


def subspace_distance(x, reference, num_neighbours=50, batch_size=100):
  """Stutz et al.'s distance to the manifold: the L2 residual of each image's least-squares
  projection onto the affine span of its `num_neighbours` nearest `reference` images (centred on
  their mean). Pass training images as `reference`; a reference image is its own neighbour.
  """
  x, reference = np.asarray(x, np.float32), np.asarray(reference, np.float32)
  if not 1 <= num_neighbours <= len(reference):
    raise UserError(f'num_neighbours={num_neighbours} must be between 1 and the number of '
                    f'reference images ({len(reference)})')
  n = len(x)
  batch_size = max(1, min(batch_size, n))
  padded = -(-n // batch_size) * batch_size
  x = np.concatenate([x, np.zeros((padded - n,) + x.shape[1:], x.dtype)])
  return np.asarray(_subspace_distance(jnp.asarray(x), jnp.asarray(reference), num_neighbours,
                                       batch_size))[:n]
