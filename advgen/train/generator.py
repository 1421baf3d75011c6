"""Training generators: VAE, VAE-GAN and DCGAN, class-specific ones all in one compiled program.

A class-specific run trains K = num_classes models, model k only on the images of class k; a
class-agnostic run is K = 1 on all images. The K states are stacked and one jitted step is
vmapped over them, so model k gets the same numbers whether it is trained with the others or
alone (`build(..., models=[k])`): its seed, data order and step keys depend only on (seed, k).

Losses (Stutz et al.'s VAE-GAN, per example, averaged over the batch; one forward pass, each part
updated with the gradient of its own loss):
  encoder       KL(q(z|x) || N(0, I)) + beta * ||x - dec(z)||_1 + gamma * GAN_dec
  decoder       beta * ||x - dec(z)||_1 + gamma * GAN_dec
  discriminator gamma * GAN_disc
with GAN_dec = -log D(dec(z)) (non-saturating) and GAN_disc = -log D(x) - log(1 - D(dec(z))) on
reconstructions, and with `config.loss.prior_samples` also on decoded prior samples (Larsen et
al.), each fake term averaged over the fakes. A VAE drops the GAN terms; a DCGAN decodes
z ~ N(0, I) with the same two GAN losses (weight 1). With `config.ema_decay` > 0 the state also
keeps a moving average of the params, and everything after training (evaluation, samples,
latent codes, `restore`) uses it.

On fonts, a finished run also measures quality against the known manifold: the test L1
reconstruction error and the mean distance (`fonts.project`) of generated samples, real test
images and uniform noise to the true class manifolds. With `config.eval.classifier_workdir`, a
class-specific run also reports the GAN-test accuracy (Shmelkov et al., 2018): the share of prior
samples of class model k that classifiers trained on real data call k, i.e. how recognisable the
samples are.
"""

import dataclasses
import functools
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from PIL import Image

from advgen import data, manifold
from advgen.data import fonts
from advgen.errors import UserError
from advgen.models import generators
from advgen.train import classifier as classifier_lib, loop, state as state_lib
from advgen.train import workdir as workdir_lib
from advgen.train.checkpoint import Checkpoints
from advgen.train.classifier import batch_sharding, model_keys, replicate

RESULTS = 'results.json'
LATENTS = 'latents.npz'
RECONSTRUCTIONS = 'reconstructions.png'
SAMPLES = 'samples.png'


def num_models(config, num_classes):
  return num_classes if config.class_specific else 1


@dataclasses.dataclass
class Setup:
  """What `build` returns: the module, the stacked initial state, the compiled step and the
  per-model data plan."""
  module: Any
  state: Any
  tx: Any
  schedule: Any
  multi_step: Any  # jitted (state, order, step, x_all, keys) -> (state, metrics)
  steps_per_epoch: int
  models: tuple  # which of the K models (classes) are stacked, in order
  keys: Any  # (len(models),) one key per stacked model
  train_index: np.ndarray  # (len(models), m) example indices of each model, padded
  train_counts: np.ndarray  # (len(models),)


def _validate(config, dataset):
  if config.batch_size < 1:
    raise UserError(f'config.batch_size must be positive, got {config.batch_size}')
  if config.batch_size % jax.device_count():
    raise UserError(f'config.batch_size={config.batch_size} must be divisible by the '
                    f'{jax.device_count()} devices')
  for name in ('beta', 'gamma'):
    if config.loss[name] < 0:
      raise UserError(f'config.loss.{name} must be non-negative, got {config.loss[name]}')
  if not 0 <= config.get('ema_decay', 0.0) < 1:
    raise UserError(f'config.ema_decay must be in [0, 1) (0: no moving average of the params), '
                    f'got {config.ema_decay}')
  if config.eval.truncation <= 0:
    raise UserError(f'config.eval.truncation must be positive, got {config.eval.truncation}')
  if config.eval.get('classifier_workdir'):
    if not config.class_specific:
      raise UserError('config.eval.classifier_workdir needs class_specific generators (the '
                      'GAN-test accuracy compares each sample with its class); unset it')
    if config.eval.num_classified < 1:
      raise UserError(f'config.eval.num_classified must be positive, got '
                      f'{config.eval.num_classified}')


def build(config, dataset, models=None):
  """Module, stacked initial states and data plan for `models` (default: all K of them).

  The number of steps per epoch comes from the smallest class of the whole dataset, so a model
  trained alone takes exactly the steps it takes among the others.
  """
  _validate(config, dataset)
  module = generators.create(config.model.name, dataset.input_shape,
                             **config.model.get('kwargs', {}))
  total = num_models(config, dataset.num_classes)
  models = tuple(range(total)) if models is None else tuple(int(k) for k in models)
  if not models or min(models) < 0 or max(models) >= total:
    raise UserError(f'models must be a non-empty subset of 0..{total - 1}, got {list(models)}')
  index, counts = generators.group_by_class(dataset.y_train, total)
  if config.batch_size > counts.min():
    raise UserError(f'config.batch_size={config.batch_size} is larger than the '
                    f'{counts.min()} training images of the smallest '
                    f'{"class" if total > 1 else "set"}; lower it or raise num_train')
  steps_per_epoch = int(counts.min()) // config.batch_size
  tx, schedule, init, multi_step = _programs(
      module, json.dumps(workdir_lib.config_to_dict(config.optimizer), sort_keys=True),
      steps_per_epoch, float(config.loss.beta), float(config.loss.gamma),
      bool(config.loss.get('prior_samples', False)), config.batch_size,
      tuple(dataset.input_shape), float(config.get('ema_decay', 0.0)))
  keys = model_keys(config.seed, total)[jnp.asarray(models)]
  models_index = np.asarray(models)
  return Setup(module, init(keys), tx, schedule, multi_step, steps_per_epoch, models, keys,
               index[models_index], counts[models_index])


@functools.lru_cache(maxsize=8)
def _programs(module, optimizer, steps_per_epoch, beta, gamma, prior_samples, batch_size,
              input_shape, ema_decay):
  """(tx, schedule, jitted init, jitted multi-model step), cached on their static settings so
  that runs with the same config in one process (a resumed run, tests) compile once."""
  tx, schedule = state_lib.optimizer(ml_collections.ConfigDict(json.loads(optimizer)),
                                     steps_per_epoch)
  init = jax.jit(jax.vmap(lambda k: state_lib.create(module, tx, jax.random.fold_in(k, 0),
                                                     input_shape, average=ema_decay > 0)))
  step_fn = functools.partial(train_step, module=module, tx=tx, beta=beta, gamma=gamma,
                              prior_samples=prior_samples)
  sharding = batch_sharding()
  multi_step = jax.jit(functools.partial(
      _multi_step, step_fn=step_fn, batch_size=batch_size, steps_per_epoch=steps_per_epoch,
      sharding=sharding, ema_decay=ema_decay))
  return tx, schedule, init, multi_step


def _bce_with_logits(logits, label):
  """-log sigmoid(logits) for label 1, -log(1 - sigmoid(logits)) for label 0, per example."""
  return optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, label))


def train_step(state, x, key, *, module, tx, beta, gamma, prior_samples=False):
  """One simultaneous update of encoder, decoder and discriminator of one model on batch `x`.

  With `prior_samples` (VAE-GAN only) the GAN terms also see decodings of z ~ N(0, I), as in
  Larsen et al.'s VAE/GAN, which trains the decoder on the codes that sampling uses.

  One forward and one backward pass: the decoder-side losses see the discriminator through
  stop_gradient and the discriminator sees stop_gradient(fakes), so the gradient of their sum
  gives each part the gradient of its own loss (KL does not depend on the decoder).
  """
  eps_key, prior_key = jax.random.split(key)
  batch = x.shape[0]
  pixels = float(np.prod(x.shape[1:]))

  def apply(params, inputs, method, part):
    """Output in training mode, and the new batch statistics of `part` (flax returns the whole
    collection, the other parts' statistics unchanged)."""
    variables = {'params': params, 'batch_stats': state.batch_stats}
    out, updates = module.apply(variables, inputs, train=True, method=method,
                                mutable=['batch_stats'])
    return out, {part: updates['batch_stats'][part]}

  def loss_fn(params):
    batch_stats = dict(state.batch_stats)
    metrics = {}
    if module.has_encoder:
      (mean, log_var), updates = apply(params, x, 'encode', 'encoder')
      batch_stats.update(updates)
      z = mean + jnp.exp(0.5 * log_var) * generators.flat_normal(eps_key, mean.shape)
    else:
      z = generators.flat_normal(prior_key, (batch, module.latent_dim))
    with_prior = prior_samples and module.has_encoder and module.has_discriminator
    if with_prior:  # one decoder pass over both batches, so one update of its batch statistics
      z = jnp.concatenate([z, generators.flat_normal(prior_key, (batch, module.latent_dim))])
    fakes, updates = apply(params, z, 'decode', 'decoder')
    fake = fakes[:batch]
    batch_stats.update(updates)
    generator_loss, discriminator_loss = 0.0, 0.0
    if module.has_encoder:
      kl = jnp.mean(0.5 * jnp.sum(jnp.exp(log_var) + mean ** 2 - 1.0 - log_var, axis=1))
      l1 = jnp.mean(jnp.sum(jnp.abs(fake - x).reshape(batch, -1), axis=1))
      generator_loss = kl + beta * l1
      metrics.update(kl=kl, l1=l1 / pixels, loss=kl + beta * l1)
    if module.has_discriminator:
      weight = gamma if module.has_encoder else 1.0
      frozen = {'params': jax.lax.stop_gradient(params)}
      fake_seen = module.apply(frozen, fakes, method='discriminate')
      logits = module.apply({'params': params}, jnp.concatenate(
          [x, jax.lax.stop_gradient(fakes)]), method='discriminate')
      real, fake_logits = logits[:batch], logits[batch:]
      gan_decoder = jnp.mean(_bce_with_logits(fake_seen, 1.0))  # non-saturating
      gan_discriminator = (jnp.mean(_bce_with_logits(real, 1.0)) +
                           jnp.mean(_bce_with_logits(fake_logits, 0.0)))
      generator_loss = generator_loss + weight * gan_decoder
      discriminator_loss = weight * gan_discriminator
      metrics.update(gan_decoder=gan_decoder, gan_discriminator=gan_discriminator,
                     d_real=jnp.mean(jax.nn.sigmoid(real)),
                     d_fake=jnp.mean(jax.nn.sigmoid(fake_logits)))
      if not module.has_encoder:
        metrics['loss'] = gan_decoder
    return generator_loss + discriminator_loss, (batch_stats, metrics)

  (_, (batch_stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(params=optax.apply_updates(state.params, updates),
                            batch_stats=batch_stats, opt_state=opt_state)
  metrics['grad_norm'] = optax.tree.norm(grads)
  return new_state, metrics


def _multi_step(state, order, step, x_all, keys, *, step_fn, batch_size, steps_per_epoch,
                sharding, ema_decay):
  """One update of each stacked model on its own batch (rows of `order`), then of the moving
  average of their params if one is kept."""
  start = (step % steps_per_epoch) * batch_size
  index = jax.lax.dynamic_slice_in_dim(order, start, batch_size, axis=1)  # (K, B)
  x = x_all[index]
  if sharding is not None:  # on one device the constraint only slows XLA:CPU down (about 10x)
    x = jax.lax.with_sharding_constraint(x, sharding)
  step_keys = jax.vmap(lambda k: jax.random.fold_in(k, step))(keys)
  state, metrics = jax.vmap(step_fn)(state, x, step_keys)
  if ema_decay > 0:
    state = state_lib.average_params(state, step, ema_decay)
  return state, metrics


_permutation = jax.jit(jax.random.permutation, static_argnums=1)


def trainer(config, dataset, setup):
  """`train_step(state, step) -> (state, metrics)` over the stacked models, data on device."""
  x_train = replicate(dataset.x_train)
  order_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(setup.keys)
  step_keys = jax.vmap(lambda k: jax.random.fold_in(k, 2))(setup.keys)
  used = setup.steps_per_epoch * config.batch_size

  @functools.lru_cache(maxsize=1)
  def order_of(epoch):
    """(K, used) example indices: each model's own class, in its own order for this epoch."""
    rows = [row[:count][np.asarray(_permutation(jax.random.fold_in(key, epoch), int(count)))]
            for row, count, key in zip(setup.train_index, setup.train_counts, order_keys)]
    return jnp.asarray(np.stack([r[:used] for r in rows]))

  def step(state, i):
    return setup.multi_step(state, order_of(i // setup.steps_per_epoch), i, x_train, step_keys)

  return step


def eval_variables(state):
  """The variables to evaluate and use: with the moving average of params if one is kept."""
  return {'params': state.eval_params, 'batch_stats': state.batch_stats}


def reconstruction_errors(module, variables, x, y, batch_size):
  """(mean absolute pixel error per example, reconstructions)."""
  recon = generators.apply_by_class(module, variables, x, y, 'reconstruct', batch_size)
  return np.abs(recon - x).reshape(len(x), -1).mean(axis=1), recon


def per_model_mean(values, y, num):
  return np.array([values[y == k].mean() for k in range(num)])


@functools.partial(jax.jit, static_argnames=('module', 'num_per_model', 'truncation'))
def sample(module, variables, key, num_per_model, truncation=2.0):
  """(K, n, H, W, C) images from each stacked model, z from the truncated prior."""
  z = generators.truncated_prior(key, (generators.num_models(variables), num_per_model,
                                       module.latent_dim), truncation)
  return jax.vmap(lambda v, zk: module.apply(v, zk, method='decode'))(variables, z)


def true_manifold_distance(dataset, images, labels, key, **project_kwargs):
  """Distance of each image to the true fonts manifold of its class (of the nearest class if
  labels is None), from `fonts.project`."""
  if labels is not None:
    return np.asarray(fonts.project(dataset.manifold, images, labels, key, **project_kwargs)[2])
  per_class = [np.asarray(fonts.project(dataset.manifold, images,
                                        np.full(len(images), c, np.int32), key,
                                        **project_kwargs)[2])
               for c in range(dataset.num_classes)]
  return np.min(np.stack(per_class), axis=0)


def save_grid(path, rows, scale=2):
  """Writes images (R, C, H, W, ch) in [0, 1] as one PNG grid with a 1-pixel separator."""
  rows = np.asarray(rows)
  r, c, h, w, ch = rows.shape
  canvas = np.full((r * (h + 1) + 1, c * (w + 1) + 1, ch), 0.5, np.float32)
  for i in range(r):
    for j in range(c):
      canvas[1 + i * (h + 1):1 + i * (h + 1) + h, 1 + j * (w + 1):1 + j * (w + 1) + w] = rows[i, j]
  canvas = np.uint8(np.round(np.clip(canvas, 0, 1) * 255))
  image = Image.fromarray(canvas[..., 0] if ch == 1 else canvas)
  image.resize((image.width * scale, image.height * scale), Image.NEAREST).save(path)


def _reconstruction_grid(x, recon, y, num_models, columns):
  """Per class (or for the first examples): a row of test images above their reconstructions."""
  rows = []
  groups = [np.flatnonzero(y == k)[:columns] for k in range(num_models)] if num_models > 1 \
      else [np.arange(len(x))[i * columns:(i + 1) * columns] for i in range(5)]
  for idx in groups:
    if len(idx) < columns:
      continue
    rows += [x[idx], recon[idx]]
  return np.stack(rows)


def train(config, workdir):
  """Trains the configured generators in `workdir`; returns the results dict."""
  results_path = os.path.join(workdir, RESULTS)
  workdir_lib.check_config(workdir, config)
  workdir_lib.refuse_finished(results_path)
  dataset = data.load(config.dataset)
  setup = build(config, dataset)
  judges = _classifiers(config.eval.get('classifier_workdir'), dataset)  # fails before training
  workdir_lib.prepare(workdir, config)  # only a config that builds is recorded
  module, total = setup.module, len(setup.models)
  num_steps = config.num_epochs * setup.steps_per_epoch
  state = replicate(setup.state)
  y_test = np.zeros(len(dataset.y_test), np.int32) if total == 1 else dataset.y_test
  y_train = np.zeros(len(dataset.y_train), np.int32) if total == 1 else dataset.y_train
  bs = config.eval.batch_size

  def evaluate(state):
    if not module.has_encoder:
      return {}
    errors, _ = reconstruction_errors(module, eval_variables(state), dataset.x_test, y_test, bs)
    return {'test_l1': per_model_mean(errors, y_test, total)}

  state = loop.fit(
      workdir=workdir, state=state, train_step=trainer(config, dataset, setup),
      num_steps=num_steps, steps_per_epoch=setup.steps_per_epoch,
      examples_per_step=config.batch_size * total, evaluate=evaluate, log_every=config.log_every,
      checkpoint_every=config.get('checkpoint_every_epochs', 1) * setup.steps_per_epoch,
      max_to_keep=config.get('max_checkpoints', 2),
      extra_metrics=lambda step: {'learning_rate': float(setup.schedule(step))})
  variables = eval_variables(state)
  results = {'num_train': len(dataset.y_train), 'num_test': len(dataset.y_test),
             'num_steps': num_steps, 'num_models': total, 'model': config.model.name,
             'class_specific': bool(config.class_specific)}
  eval_key = jax.random.fold_in(jax.random.key(config.seed), 10**6)
  columns = config.eval.grid_columns

  if module.has_encoder:
    errors, recon = reconstruction_errors(module, variables, dataset.x_test, y_test, bs)
    per_model = per_model_mean(errors, y_test, total)
    results.update(test_l1=float(errors.mean()), test_l1_per_model=per_model.tolist())
    save_grid(os.path.join(workdir, RECONSTRUCTIONS),
              _reconstruction_grid(dataset.x_test, recon, y_test, total, columns))
    z_train, lv_train = manifold.latent_codes(module, variables, dataset.x_train, y_train, bs)
    z_test, lv_test = manifold.latent_codes(module, variables, dataset.x_test, y_test, bs)
    np.savez(os.path.join(workdir, LATENTS), z_train=z_train, log_var_train=lv_train,
             y_train=dataset.y_train, z_test=z_test, log_var_test=lv_test, y_test=dataset.y_test)
    logging.info('test L1 reconstruction error %.4f; latent codes in %s', errors.mean(),
                 os.path.join(workdir, LATENTS))

  samples_key, distance_key = jax.random.split(eval_key)
  per_row = columns if total > 1 else columns * columns
  images = np.asarray(sample(module, variables, samples_key, per_row, config.eval.truncation))
  save_grid(os.path.join(workdir, SAMPLES), images.reshape((-1, columns) + images.shape[2:]))

  if judges is not None:
    per_model = -(-config.eval.num_classified // total)
    results.update(gan_test_accuracy(*judges, np.asarray(sample(
        module, variables, jax.random.fold_in(samples_key, 2), per_model, config.eval.truncation))))
  if dataset.name == 'fonts' and config.eval.num_distance:
    results.update(_manifold_distances(config, dataset, module, variables, total,
                                       jax.random.fold_in(samples_key, 1), distance_key))
  workdir_lib.write_results(results_path, results)
  return results


def _classifiers(workdir, dataset):
  """(module, stacked variables) of the classifiers trained in `workdir`, or None if unset."""
  if not workdir:
    return None
  config, _, module, variables = classifier_lib.restore(workdir)
  if config.dataset.name != dataset.name:
    raise UserError(f'config.eval.classifier_workdir={workdir} holds classifiers of '
                    f'{config.dataset.name!r}, not of {dataset.name!r}; pass a workdir trained on '
                    'the same dataset')
  return module, variables


def gan_test_accuracy(classifier, classifier_variables, images):
  """GAN-test accuracy of `images` (K, n, H, W, C), n samples of each class model k: the share
  that each of the stacked classifiers assigns to the sample's class, averaged over them."""
  total, per_model = images.shape[:2]
  labels = np.repeat(np.arange(total), per_model)
  logits = classifier_lib.stacked_logits(classifier, classifier_variables,
                                         np.reshape(images, (-1,) + images.shape[2:]))
  correct = (np.argmax(logits, axis=-1) == labels).mean(axis=0)  # over the classifiers
  logging.info('GAN-test accuracy %.3f', correct.mean())
  return {'gan_test_accuracy': float(correct.mean()),
          'gan_test_accuracy_per_model': per_model_mean(correct, labels, total).tolist(),
          'num_classified': total * per_model}


def _manifold_distances(config, dataset, module, variables, total, samples_key, key):
  """Mean distance to the true fonts manifold of generated samples (eval.num_distance, spread
  over the class models) and, for reference, of real test images and of uniform noise
  (eval.num_reference each)."""
  per_model = -(-config.eval.num_distance // total)
  n, m = per_model * total, config.eval.get('num_reference', config.eval.num_distance)
  if m > len(dataset.y_test):
    raise UserError(f'config.eval.num_reference={m} is more than the {len(dataset.y_test)} test '
                    'images; lower it')
  project_kwargs = dict(config.eval.get('project', {}))
  generated = np.asarray(sample(module, variables, samples_key, per_model,
                                config.eval.truncation)).reshape((n,) + dataset.input_shape)
  labels = None if total == 1 else np.repeat(np.arange(total, dtype=np.int32), per_model)
  noise = jax.random.uniform(jax.random.fold_in(key, 1), (m * int(np.prod(dataset.input_shape)),))
  noise = np.asarray(noise).reshape((m,) + dataset.input_shape)
  reference = np.concatenate([dataset.x_test[:m], noise])
  reference_labels = np.concatenate([dataset.y_test[:m], dataset.y_test[:m]])
  if labels is None:  # class-agnostic samples: distance to the nearest class manifold
    generated = true_manifold_distance(dataset, generated, None, key, **project_kwargs)
    both = true_manifold_distance(dataset, reference, reference_labels, key, **project_kwargs)
  else:  # one projection program for samples and references
    both = true_manifold_distance(dataset, np.concatenate([generated, reference]),
                                  np.concatenate([labels, reference_labels]), key,
                                  **project_kwargs)
    generated, both = both[:n], both[n:]
  distances = {'sample': generated, 'test': both[:m], 'noise': both[m:]}
  logging.info('mean distance to the true manifold: samples %.3f, test images %.3f, noise %.3f',
               *(distances[k].mean() for k in ('sample', 'test', 'noise')))
  out = {f'{k}_distance': float(v.mean()) for k, v in distances.items()}
  out.update(sample_distance_median=float(np.median(distances['sample'])),
             num_distance=n, num_reference=m)
  return out


def restore(workdir, step=None):
  """(config, dataset, module, stacked variables) of the generators trained in `workdir`.

  The variables have a leading model axis: K = num_classes for class-specific generators, 1 for a
  class-agnostic one. Use `generators.encode_fn(module, variables)` and `decode_fn(...)`.
  """
  config = workdir_lib.stored_config(workdir, 'generator', 'scripts/train_generator.py',
                                     ('loss', 'class_specific'))
  dataset = data.load(config.dataset)
  setup = build(config, dataset)
  checkpoints = Checkpoints(workdir)
  state = checkpoints.restore(setup.state, step)
  checkpoints.close()
  return config, dataset, setup.module, eval_variables(state)


def load_latents(workdir):
  """The arrays of `latents.npz` written by a finished run (z_train, y_train, z_test, ...)."""
  path = os.path.join(workdir, LATENTS)
  if not os.path.exists(path):
    raise UserError(f'{path} does not exist; finish training a generator with an encoder in '
                    f'{workdir} first')
  with np.load(path) as f:
    return dict(f)
