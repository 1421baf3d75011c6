"""Training variants as batch transformations `(logits_fn, x, y, key) -> (x, y)`.

`logits_fn` is the model being trained (inference mode), so adversarial variants attack the
current model. Adversarial variants follow Stutz et al.: each batch is half clean, half
adversarial (the clean batch and its adversarial copy, loss averaged over both).
"""

import jax
import jax.numpy as jnp
import optax

from advgen import attacks, transforms
from advgen.errors import UserError


def normal(logits_fn, x, y, key):
  del logits_fn, key
  return x, y


def augmentation(radius, ranges):
  """Random affine transformations around the identity (Stutz et al.), clipped to `ranges`."""

  def transform(logits_fn, x, y, key):
    del logits_fn
    theta = transforms.sample_near_identity(key, x.shape[:1], radius, ranges)
    return jax.vmap(transforms.transform)(x, theta), y

  return transform


def _with_adversarial_half(attack):
  def transform(logits_fn, x, y, key):
    x_adv = attack(logits_fn, x, y, key).x_adv
    return jnp.concatenate([x, x_adv]), jnp.concatenate([y, y])

  return transform


def adversarial(epsilon, num_steps, step_size):
  """L-inf PGD with Adam on the perturbation (Stutz et al.'s attack), random start."""
  step_rule = optax.adam(step_size)
  return _with_adversarial_half(lambda logits_fn, x, y, key: attacks.pgd(
      logits_fn, attacks.LinfBall(x, epsilon), y, key, num_steps=num_steps, step_rule=step_rule,
      early_stop=False))


def fast(epsilon):
  """FGSM from a random start with step 1.25 epsilon ("fast" adversarial training)."""
  return _with_adversarial_half(lambda logits_fn, x, y, key: attacks.fgsm(
      logits_fn, attacks.LinfBall(x, epsilon), y, key, random_start=True,
      step_size=1.25 * epsilon))


def adversarial_transformation(epsilon, num_steps, step_size, ranges):
  """PGD over affine parameters around the identity (Stutz et al., eq. 5)."""
  step_rule = optax.adam(step_size)
  return _with_adversarial_half(lambda logits_fn, x, y, key: attacks.pgd(
      logits_fn, attacks.TransformBall(x, epsilon, ranges), y, key, num_steps=num_steps,
      step_rule=step_rule, early_stop=False))


VARIANTS = ('normal', 'augmentation', 'adversarial', 'fast', 'adversarial_transformation')


def batch_transform(config):
  """The transformation named by config.variant.name, with its settings from config.variant."""
  variant = config.variant
  ranges = jnp.asarray(transforms.RANGES[config.dataset.get('difficulty', 'hard')])
  if variant.name == 'normal':
    return normal
  if variant.name == 'augmentation':
    return augmentation(variant.radius, ranges)
  if variant.name == 'adversarial':
    return adversarial(variant.epsilon, variant.num_steps, variant.step_size)
  if variant.name == 'fast':
    return fast(variant.epsilon)
  if variant.name == 'adversarial_transformation':
    return adversarial_transformation(variant.epsilon, variant.num_steps, variant.step_size,
                                      ranges)
  raise UserError(f'unknown training variant {variant.name!r}; choose one of '
                  f'{", ".join(VARIANTS)}')
