"""Training generators: VAE, VAE-GAN and DCGAN, class-specific ones all in one compiled program,
with the one trainer skeleton (`trainer`); this module holds their losses and results.

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
latent codes, restoring) uses it. What a finished run measures is in `generator_eval`.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from advgen import data, manifold, results as results_lib
from advgen.errors import UserError
from advgen.models import class_models, generators
from advgen.train import generator_eval, trainer, workdir as workdir_lib

LATENTS = 'latents.npz'
RECONSTRUCTIONS = 'reconstructions.png'
SAMPLES = 'samples.png'


def num_models(config, num_classes):
  return num_classes if config.class_specific else 1


def validate(config):
  """Every check of a generator config that needs no data, before anything is loaded."""
  trainer.validate_common(config)
  generators.check_name(config.model.name)
  for name in ('beta', 'gamma'):
    if not isinstance(config.loss[name], (int, float)) or config.loss[name] < 0:
      raise UserError(f'config.loss.{name} must be a non-negative number, got '
                      f'{config.loss[name]!r}')
  ev = config.eval
  if not isinstance(ev.truncation, (int, float)) or ev.truncation <= 0:
    raise UserError(f'config.eval.truncation must be positive, got {ev.truncation!r}')
  for field in ('batch_size', 'grid_columns'):
    if not isinstance(ev[field], int) or ev[field] < 1:
      raise UserError(f'config.eval.{field} must be a positive integer, got {ev[field]!r}')
  for field in ('num_distance', 'num_reference', 'num_classified'):
    if not isinstance(ev.get(field, 0), int) or ev.get(field, 0) < 0:
      raise UserError(f'config.eval.{field} must be a non-negative integer, got '
                      f'{ev.get(field)!r}')
  if ev.get('classifier_workdir'):
    if not config.class_specific:
      raise UserError('config.eval.classifier_workdir needs class_specific generators (the '
                      'GAN-test accuracy compares each sample with its class); unset it')
    if ev.num_classified < 1:
      raise UserError(f'config.eval.num_classified must be positive, got {ev.num_classified}')
  if config.dataset.name == 'fonts' and ev.get('num_reference', 0) > config.dataset.num_test:
    raise UserError(f'config.eval.num_reference={ev.num_reference} is more than the '
                    f'{config.dataset.num_test} test images; lower it')


def make_step(module, tx, config):
  """One generator's update on a batch dict; `config` is config.loss."""
  beta, gamma = float(config.beta), float(config.gamma)
  prior_samples = bool(config.get('prior_samples', False))

  def step(state, batch, key, shared):
    del shared
    return train_step(state, batch['image'], key, module=module, tx=tx, beta=beta, gamma=gamma,
                      prior_samples=prior_samples)

  return step


def build(config, dataset, models=None):
  """The trainer Setup of `models` (default: all K of them), model k on class k's images."""
  validate(config)
  module = generators.create(config.model.name, dataset.input_shape,
                             **config.model.get('kwargs', {}))
  pools, counts = class_models.group_by_class(dataset.y_train,
                                            num_models(config, dataset.num_classes))
  return trainer.build(config, module, make_step, dataset.input_shape, pools, counts,
                       models=models, over=jax.vmap, settings=config.loss)


def _bce_with_logits(logits, label):
  """-log sigmoid(logits) for label 1, -log(1 - sigmoid(logits)) for label 0, per example."""
  return optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, label))


def train_step(state, x, key, *, module, tx, beta, gamma, prior_samples=False):
  """One simultaneous update of encoder, decoder and discriminator of one model on images `x`.

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


def eval_variables(state):
  """The variables to evaluate and use: with the moving average of params if one is kept."""
  return {'params': state.eval_params, 'batch_stats': state.batch_stats}


def _labels(y, total):
  return np.zeros(len(y), np.int32) if total == 1 else y


def train(config, workdir, judges=None):
  """Trains the configured generators in `workdir`; returns the results dict.

  `judges` (module, stacked variables) are the classifiers of config.eval.classifier_workdir,
  loaded by the caller (`advgen.studies.runs.train_generator`), for the GAN-test accuracy.
  """
  results_path = trainer.begin(config, workdir)
  validate(config)
  if config.eval.get('classifier_workdir') and judges is None:
    raise UserError('config.eval.classifier_workdir is set: train through '
                    'advgen.studies.runs.train_generator (scripts/train_generator.py), which '
                    'loads its classifiers')
  dataset = data.load(config.dataset)
  setup = build(config, dataset)
  workdir_lib.prepare(workdir, config)  # only a config that builds is recorded
  module, total = setup.module, setup.num_models
  y_test, y_train = _labels(dataset.y_test, total), _labels(dataset.y_train, total)
  bs = config.eval.batch_size

  def evaluate(state):
    if not module.has_encoder:
      return {}
    errors, _ = generator_eval.reconstruction_errors(module, eval_variables(state),
                                                     dataset.x_test, y_test, bs)
    return {'test_l1': generator_eval.per_model_mean(errors, y_test, total)}

  state = trainer.fit(config, workdir, setup, trainer.batch_dict(dataset, 'train'), evaluate)
  variables = eval_variables(state)
  results = {'num_train': len(dataset.y_train), 'num_test': len(dataset.y_test),
             'num_steps': config.num_epochs * setup.steps_per_epoch, 'num_models': total,
             'model': config.model.name, 'class_specific': bool(config.class_specific)}
  if dataset.info:  # fonts: which fonts were used (count and file-list hash)
    results['dataset'] = dataset.info
  per_model = {}
  eval_key = jax.random.fold_in(jax.random.key(config.seed), 10**6)
  columns = config.eval.grid_columns

  if module.has_encoder:
    errors, recon = generator_eval.reconstruction_errors(module, variables, dataset.x_test,
                                                         y_test, bs)
    per_model['test_l1'] = generator_eval.per_model_mean(errors, y_test, total)
    results['test_l1'] = float(errors.mean())  # over all test images
    generator_eval.save_reconstructions(os.path.join(workdir, RECONSTRUCTIONS), dataset.x_test,
                                        recon, y_test, total, columns)
    z_train, lv_train = manifold.latent_codes(module, variables, dataset.x_train, y_train, bs)
    z_test, lv_test = manifold.latent_codes(module, variables, dataset.x_test, y_test, bs)
    np.savez(os.path.join(workdir, LATENTS), z_train=z_train, log_var_train=lv_train,
             y_train=dataset.y_train, z_test=z_test, log_var_test=lv_test, y_test=dataset.y_test)
    logging.info('test L1 reconstruction error %.4f; latent codes in %s', errors.mean(),
                 os.path.join(workdir, LATENTS))

  samples_key, distance_key = jax.random.split(eval_key)
  generator_eval.save_samples(os.path.join(workdir, SAMPLES), module, variables, samples_key,
                              columns, config.eval.truncation)
  if judges is not None:
    per_model_samples = -(-config.eval.num_classified // total)
    accuracy = generator_eval.gan_test_accuracy(*judges, np.asarray(generator_eval.sample(
        module, variables, jax.random.fold_in(samples_key, 2), per_model_samples,
        config.eval.truncation)))
    per_model['gan_test_accuracy'] = accuracy
    results['num_classified'] = total * per_model_samples
  if dataset.name == 'fonts' and config.eval.num_distance:
    results.update(generator_eval.manifold_distances(
        config, dataset, module, variables, total, jax.random.fold_in(samples_key, 1),
        distance_key))
  results.update(results_lib.summarize(per_model))
  workdir_lib.write_results(results_path, results)
  return results
