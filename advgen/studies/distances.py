"""Distances of adversarial examples to the data manifold, and the validity of on-manifold ones.

Distance to the manifold (Stutz et al. Sec. 3.2) of the first `config.distance.num_images`
examples, by every method of `config.distance.methods` the run has: 'true' (fonts: the true
projection with the true class, given the clean image's (font, theta) as a known point of the
manifold), 'learned' (inversion of the true class's generator) and 'subspace' (50-nearest-
neighbour subspace of the training images); statistics over the counted successes on correctly
classified inputs, with the ratio to ||x_adv - x||_2.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from advgen import evaluate, manifold
from advgen.data import fonts
from advgen.models import stacked
from advgen.progress import Progress

METHODS = ('true', 'learned', 'subspace')


@functools.partial(jax.jit, static_argnames=('module', 'latent_dim', 'num_restarts',
                                             'num_steps'))
def _invert_rows(variables, x, key, *, module, latent_dim, num_restarts, num_steps,
                 learning_rate):
  """Residuals (K, m) of inverting row k of x (K, m, ...) through generator k alone."""

  def one(v, rows):
    z_init = module.apply(v, rows, method='encode')[0] if module.has_encoder else None
    decode = lambda z: module.apply(v, z, method='decode')
    return manifold.invert(decode, rows, key, z_init=z_init, latent_dim=latent_dim,
                           num_restarts=num_restarts, num_steps=num_steps,
                           learning_rate=learning_rate)[2]

  return jax.vmap(one)(variables, x)


def learned_distance(generator, images, labels, key, **settings):
  """Distance of each image to the image of its class's generator (`manifold.invert`, from the
  encoder mean and truncated-prior restarts), each class inverted by its own generator only."""
  images, labels = np.asarray(images), np.asarray(labels)
  num_models = stacked.count(generator['variables'])
  rows = ([np.arange(len(images))] if num_models == 1 else
          [np.flatnonzero(labels == k) for k in range(num_models)])
  width = max(len(r) for r in rows)
  if not width:
    return np.zeros(0, np.float32)
  index = np.stack([np.concatenate([r, np.zeros(width - len(r), int)]) for r in rows])
  residual = np.asarray(_invert_rows(generator['variables'], jnp.asarray(images[index]), key,
                                     module=generator['module'],
                                     latent_dim=generator['module'].latent_dim, **settings))
  out = np.zeros(len(images), np.float32)
  for k, r in enumerate(rows):
    out[r] = residual[k, :len(r)]
  return out


def methods(config, dataset, generator):
  """{method: (images, labels, key, origin) -> distances} for every configured method this run
  has. `origin` holds the true latents of the clean images the rows were made from ({}: none):
  on fonts their (font, theta) is a point of the manifold the true projection is never farther
  than, so a regular example is never measured farther from the manifold than its perturbation."""
  settings = config.distance
  available = {
      'true': dataset.name == 'fonts',
      'learned': generator is not None,
      'subspace': settings.subspace.num_neighbours <= len(dataset.x_train),
  }
  make = {
      'true': lambda images, labels, key, origin: np.asarray(fonts.project(
          dataset.manifold, images, labels, key, **settings.true,
          candidate=(origin['font'], origin['theta']) if 'theta' in origin else None)[2]),
      'learned': lambda images, labels, key, origin: learned_distance(
          generator, images, labels, key, **settings.learned),
      'subspace': lambda images, labels, key, origin: manifold.subspace_distance(
          images, dataset.x_train, **settings.subspace),
  }
  return {m: make[m] for m in METHODS if m in settings.methods and available[m]}


def manifold_metrics(result, test, masks, m, measure, key):
  """Per model: distance-to-manifold statistics of the first `m` examples (counted successes),
  and the per-example distances (K, m) by method."""
  x, y = test['image'], test['label']
  num_models = masks.shape[0]
  extra, arrays = [{} for _ in range(num_models)], {}
  if not (m and measure):
    return extra, arrays
  x_adv = np.asarray(result.x_adv[:, :m])
  delta = (x_adv - np.asarray(x[None, :m])).reshape(num_models, m, -1)
  perturbation = np.sqrt(np.sum(np.square(delta, dtype=np.float64), axis=-1))  # (K, m)
  labels = np.tile(np.asarray(y[:m]), num_models)
  origin = {name: np.concatenate([np.asarray(test[name][:m])] * num_models)
            for name in ('font', 'theta') if name in test}
  progress = Progress(f'distances to the manifold of {num_models} models x {m} examples '
                      f'({", ".join(measure)})', len(measure), 'methods')
  for method, fn in measure.items():
    d = np.asarray(fn(x_adv.reshape((-1,) + x_adv.shape[2:]), labels, key, origin)).reshape(
        num_models, m)
    progress.advance()
    arrays[f'{method}_distance'] = d
    for k in range(num_models):
      extra[k].update(evaluate.manifold_distance_stats(d[k], perturbation[k], masks[k, :m],
                                                       f'manifold_{method}'))
  return extra, arrays


def validity(config, dataset, x_adv, y, masks, key):
  """Per model: the validity of learned on-manifold examples (`evaluate.validity`), measured with
  the true fonts projection onto every class; and the (K, m, C) distances."""
  num_models, m = masks.shape
  flat = np.asarray(x_adv).reshape((-1,) + x_adv.shape[2:])
  d = evaluate.class_manifold_distances(dataset.manifold, flat, key, dataset.num_classes,
                                        **config.distance.true).reshape(num_models, m, -1)
  return [evaluate.validity(d[k], y, masks[k]) for k in range(num_models)], d
