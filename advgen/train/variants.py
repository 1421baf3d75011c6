"""Training variants as batch transformations `(logits_fn, batch, key) -> batch`.

`batch` is the dict of per-example arrays the train step gathered (`image`, `label`, and the
dataset's latents such as fonts' `font` and `theta`); `logits_fn` is the model being trained
(inference mode), so adversarial variants attack the current model. Adversarial variants follow
Stutz et al.: each batch is half clean, half adversarial (the clean batch and its adversarial
copy, loss averaged over both). Attacks come from `attacks.build`, the same config entries the
attack pipeline uses; every setting lives in config.variant (see configs/fonts.py).
"""

import jax
import jax.numpy as jnp

from advgen import attacks, transforms
from advgen.errors import UserError


def normal(logits_fn, batch, key):
  del logits_fn, key
  return batch


def augmentation(radius, ranges):
  """Random affine transformations around the identity (Stutz et al.), clipped to `ranges`."""

  def transform(logits_fn, batch, key):
    del logits_fn
    images = batch['image']
    theta = transforms.sample_near_identity(key, images.shape[:1], radius, ranges)
    return {**batch, 'image': jax.vmap(transforms.transform)(images, theta)}

  return transform


def with_adversarial_half(spec):
  """The clean batch followed by its adversarial copy made by the attack of config entry `spec`;
  every other per-example field is repeated, so the copy keeps its labels and latents."""
  attack = attacks.build(spec)

  def transform(logits_fn, batch, key):
    x_adv = attack(logits_fn, batch, key).x_adv
    doubled = {k: jnp.concatenate([v, v]) for k, v in batch.items()}
    return {**doubled, 'image': jnp.concatenate([batch['image'], x_adv])}

  return transform


def _pgd_spec(variant, attack, **extra):
  """L-inf PGD with Adam on the perturbation (Stutz et al.'s attack), random start, every step."""
  return dict(attack=attack, epsilon=variant.epsilon, num_steps=variant.num_steps,
              step_rule='adam', step_size=variant.step_size, early_stop=False, **extra)


def _adversarial(config):
  return with_adversarial_half(_pgd_spec(config.variant, 'pgd_linf'))


def _fast(config):
  """FGSM from a random start with step 1.25 epsilon ("fast" adversarial training)."""
  epsilon = config.variant.epsilon
  return with_adversarial_half(dict(attack='fgsm', epsilon=epsilon, random_start=True,
                                    step_size=1.25 * epsilon))


def _adversarial_transformation(config):
  """PGD over affine parameters around the identity (Stutz et al., eq. 5). It warps the rendered
  image, so on fonts its examples leave the true manifold; it is meant for datasets without a
  known one."""
  return with_adversarial_half(_pgd_spec(config.variant, 'transform', ranges=_difficulty(config)))


def _augmentation(config):
  return augmentation(config.variant.radius, jnp.asarray(transforms.RANGES[_difficulty(config)]))


def _difficulty(config):
  return config.dataset.get('difficulty', 'hard')


VARIANTS = {
    'normal': lambda config: normal,
    'augmentation': _augmentation,
    'adversarial': _adversarial,
    'fast': _fast,
    'adversarial_transformation': _adversarial_transformation,
}
# The config.variant fields each variant reads.
_USES = {'normal': (), 'augmentation': ('radius',), 'adversarial': ('epsilon', 'num_steps',
         'step_size'), 'fast': ('epsilon',), 'adversarial_transformation': ('epsilon',
         'num_steps', 'step_size')}


def validate(config):
  """Checks config.variant (name and the settings it uses) before any data is loaded."""
  variant = config.variant
  if variant.name not in VARIANTS:
    raise UserError(f'unknown training variant {variant.name!r}; choose one of '
                    f'{", ".join(VARIANTS)}')
  for field in _USES[variant.name]:
    if field not in variant:
      raise UserError(f'training variant {variant.name!r} needs config.variant.{field}')
    value = variant[field]
    integer = field == 'num_steps'
    if not isinstance(value, int if integer else (int, float)) or value <= 0:
      kind = 'a positive integer' if integer else 'a positive number'
      raise UserError(f'config.variant.{field} must be {kind}, got {value!r}')


def batch_transform(config):
  """The transformation named by config.variant.name, with its settings from config.variant."""
  validate(config)
  return VARIANTS[config.variant.name](config)
