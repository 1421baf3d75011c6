"""What a finished generator run measures: reconstruction errors, samples, the GAN-test accuracy
against classifiers trained on real data (Shmelkov et al., 2018) and, on fonts, distances to the
true class manifolds (`fonts.project`) of samples, real test images and noise.

Plain functions of (module, variables, arrays); image grids are written by `advgen.report`.
"""

import functools

import jax
import numpy as np
from absl import logging

from advgen import evaluate
from advgen.data import fonts
from advgen.models import class_models, generators, stacked
from advgen.report import images as image_report


def reconstruction_errors(module, variables, x, y, batch_size):
  """(mean absolute pixel error per example, reconstructions)."""
  recon = class_models.apply_by_class(module, variables, x, y, 'reconstruct', batch_size)
  return np.abs(recon - x).reshape(len(x), -1).mean(axis=1), recon


def per_model_mean(values, y, num):
  return np.array([values[y == k].mean() for k in range(num)])


@functools.partial(jax.jit, static_argnames=('module', 'num_per_model', 'truncation'))
def sample(module, variables, key, num_per_model, truncation=2.0):
  """(K, n, H, W, C) images from each stacked model, z from the truncated prior."""
  z = generators.truncated_prior(key, (stacked.count(variables), num_per_model,
                                       module.latent_dim), truncation)
  return jax.vmap(lambda v, zk: module.apply(v, zk, method='decode'))(variables, z)


def save_samples(path, module, variables, key, columns, truncation):
  """A grid of prior samples: a row per class model, or columns x columns of one model."""
  total = stacked.count(variables)
  per_row = columns if total > 1 else columns * columns
  images = np.asarray(sample(module, variables, key, per_row, truncation))
  image_report.save_grid(path, images.reshape((-1, columns) + images.shape[2:]))


def save_reconstructions(path, x, recon, y, num_models, columns):
  """Per class (or for the first examples): a row of test images above their reconstructions."""
  rows = []
  groups = [np.flatnonzero(y == k)[:columns] for k in range(num_models)] if num_models > 1 \
      else [np.arange(len(x))[i * columns:(i + 1) * columns] for i in range(5)]
  for idx in groups:
    if len(idx) < columns:
      continue
    rows += [x[idx], recon[idx]]
  image_report.save_grid(path, np.stack(rows))


def gan_test_accuracy(classifier, classifier_variables, images):
  """Per class model k (K,): the share of its samples (`images` (K, n, H, W, C)) that the stacked
  classifiers assign to class k, averaged over the classifiers."""
  total, per_model = images.shape[:2]
  labels = np.repeat(np.arange(total), per_model)
  logits = stacked.stacked_logits(classifier, classifier_variables,
                                  np.reshape(images, (-1,) + images.shape[2:]))
  correct = (np.argmax(logits, axis=-1) == labels).mean(axis=0)  # over the classifiers
  logging.info('GAN-test accuracy %.3f', correct.mean())
  return per_model_mean(correct, labels, total)


def true_manifold_distance(dataset, images, labels, key, **project_kwargs):
  """Distance of each image to the true fonts manifold of its class, from `fonts.project`."""
  return np.asarray(fonts.project(dataset.manifold, images, labels, key, **project_kwargs)[2])


def manifold_distances(config, dataset, module, variables, total, samples_key, key):
  """Distances to the true fonts manifolds of generated samples (eval.num_distance, spread over
  the class models) and, for reference, of real test images and of uniform noise
  (eval.num_reference each): samples of class model k to class k's manifold, with the validity
  (the share nearer class k's manifold than any other's, Stutz et al.'s Def. 1 made measurable:
  the honest measure of class-specific generators for on-manifold attacks); samples of a
  class-agnostic generator to the nearest class's manifold."""
  per_model = -(-config.eval.num_distance // total)
  n, m = per_model * total, config.eval.get('num_reference', config.eval.num_distance)
  project_kwargs = dict(config.eval.get('project', {}))
  generated = np.asarray(sample(module, variables, samples_key, per_model,
                                config.eval.truncation)).reshape((n,) + dataset.input_shape)
  per_class = evaluate.class_manifold_distances(dataset.manifold, generated, key,
                                                dataset.num_classes, **project_kwargs)  # (n, C)
  out = {}
  if total == 1:
    sample_distance = per_class.min(axis=1)
  else:
    labels = np.repeat(np.arange(total, dtype=np.int32), per_model)
    sample_distance = per_class[np.arange(n), labels]
    out.update({f'sample_{k}': v for k, v in evaluate.validity(per_class, labels).items()})
  noise = jax.random.uniform(jax.random.fold_in(key, 1), (m * int(np.prod(dataset.input_shape)),))
  noise = np.asarray(noise).reshape((m,) + dataset.input_shape)
  reference = np.concatenate([dataset.x_test[:m], noise])
  reference_labels = np.concatenate([dataset.y_test[:m], dataset.y_test[:m]])
  both = true_manifold_distance(dataset, reference, reference_labels, key, **project_kwargs)
  distances = {'sample': sample_distance, 'test': both[:m], 'noise': both[m:]}
  logging.info('mean distance to the true manifold: samples %.3f, test images %.3f, noise %.3f',
               *(distances[k].mean() for k in ('sample', 'test', 'noise')))
  out.update({f'{k}_distance': float(v.mean()) for k, v in distances.items()})
  out.update(sample_distance_median=float(np.median(distances['sample'])),
             num_distance=n, num_reference=m)
  return out
