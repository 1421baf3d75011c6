"""Training variants: a batch transformation `(logits_fn, batch, key) -> batch` and the loss of
the transformed batch's logits.

`batch` is the dict of per-example arrays the train step gathered (`image`, `label`, and the
dataset's latents such as fonts' `font` and `theta`); `logits_fn` is the model being trained
(inference mode), so adversarial variants attack the current model. Adversarial variants follow
Stutz et al.: each batch is half clean, half adversarial (the clean batch and its adversarial
copy, loss averaged over both). Attacks come from `attacks.build`, the same config entries the
attack pipeline uses; every setting lives in config.variant (see configs/fonts.py).
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from advgen import attacks, data, transforms
from advgen.errors import UserError


def cross_entropy(logits, batch):
  return optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']).mean()


class Variant(NamedTuple):
  """What a training variant changes in the one train step."""
  transform: Callable  # (logits_fn, batch, key) -> batch
  loss: Callable = cross_entropy  # (logits, transformed batch) -> scalar
  replays: int = 1  # > 1: free adversarial training's replays of each batch, with this epsilon
  epsilon: float = 0.0


def normal(logits_fn, batch, key):
  """The batch as it is."""
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


def gaussian_augmentation(sigma):
  """Each image plus Gaussian noise N(0, sigma^2 I), unclipped: the base classifier of randomized
  smoothing learns the noisy images the smoothed classifier shows it (Cohen et al.)."""

  def transform(logits_fn, batch, key):
    del logits_fn
    images = batch['image']
    return {**batch, 'image': images + sigma * jax.random.normal(key, images.shape, images.dtype)}

  return transform


def _adversarial_copy(spec, manifolds=None):
  """`(logits_fn, batch, key) -> batch` of adversarial copies by the attack of config entry
  `spec`: other per-example fields are kept, except that an on-manifold attack's latent field
  holds the attacked code (the copy's true latent)."""
  attack = attacks.build(spec, manifolds)
  space = attacks.registry.needs_manifold(spec)
  field = manifolds[space].field if space else None

  def copy(logits_fn, batch, key):
    result = attack(logits_fn, batch, key)
    out = {**batch, 'image': result.x_adv}
    if field is not None:
      out[field] = result.v
    return out

  return copy


def _concatenate(batches):
  return {k: jnp.concatenate([b[k] for b in batches]) for k in batches[0]}


def with_adversarial_half(spec, manifolds=None):
  """The clean batch followed by its adversarial copy made by the attack of config entry `spec`;
  the copy keeps its labels and latents (an on-manifold attack's code is the attacked one)."""
  copy = _adversarial_copy(spec, manifolds)
  return lambda logits_fn, batch, key: _concatenate([batch, copy(logits_fn, batch, key)])


def mixed_adversarial_half(specs, fractions, manifolds=None):
  """The clean batch followed by adversarial copies, the first `fractions[0]` of the examples
  attacked by `specs[0]`, the next by `specs[1]`, ... (Stutz et al.'s Fig. 7: regular and
  on-manifold adversarial training combined). Shares are rounded to whole examples."""
  copies = [_adversarial_copy(spec, manifolds) for spec in specs]

  def transform(logits_fn, batch, key):
    size = len(batch['label'])
    bounds = [round(size * sum(fractions[:i])) for i in range(len(fractions) + 1)]
    keys = jax.random.split(key, len(copies))
    parts = [copy(logits_fn, {k: v[lo:hi] for k, v in batch.items()}, part_key)
             for copy, lo, hi, part_key in zip(copies, bounds, bounds[1:], keys) if hi > lo]
    return _concatenate([batch] + parts)

  return transform


def _pgd_spec(variant, attack, **extra):
  """L-inf PGD with Adam on the perturbation (Stutz et al.'s attack), random start, every step."""
  return dict(attack=attack, epsilon=variant.epsilon, num_steps=variant.num_steps,
              step_rule='adam', step_size=variant.step_size, early_stop=False, **extra)


def _adversarial(config):
  return with_adversarial_half(_pgd_spec(config.variant, 'pgd_linf'))


def _true_manifold(config):
  """The fonts generator of the dataset: font and class fixed, theta attacked inside its ranges."""
  if config.dataset.name != 'fonts':
    raise UserError(f'training variant {config.variant.name!r} perturbs the fonts generator\'s '
                    f'parameters; it needs config.dataset.name=fonts, not '
                    f'{config.dataset.name!r}')
  return {'true': attacks.true_manifold(data.fonts_manifold(config.dataset))}


def _on_true_manifold(config):
  """Stutz et al.'s eq. 4 with the exact fonts generator: the adversarial half is
  render(font, class, theta + delta), PGD with Adam on delta (|delta|_inf <= epsilon, every
  step), theta + delta inside the dataset's ranges, from each image's own font, class and theta."""
  return with_adversarial_half(_pgd_spec(config.variant, 'on_true_manifold'),
                               _true_manifold(config))


_KINDS = {'adversarial': 'pgd_linf', 'on_true_manifold': 'on_true_manifold',
          'adversarial_transformation': 'transform'}


def _combined(config):
  """Regular and on-manifold adversarial training in one batch (Stutz et al.'s Fig. 7): the
  adversarial half is split between the variants in config.variant.mix by
  config.variant.fractions."""
  variant = config.variant
  specs = [_pgd_spec(variant, _KINDS[kind], **({'ranges': _difficulty(config)}
                                                if kind == 'adversarial_transformation' else {}))
           for kind in variant.mix]
  manifolds = _true_manifold(config) if 'on_true_manifold' in variant.mix else None
  return mixed_adversarial_half(specs, list(variant.fractions), manifolds)


def trades_loss(beta):
  """Zhang et al.'s TRADES: CE(f(x), y) + beta * KL(f(x) || f(x')) on a batch [x; x']."""

  def loss(logits, batch):
    clean, adversarial = jnp.split(logits, 2)
    labels = jnp.split(batch['label'], 2)[0]
    log_p, log_q = jax.nn.log_softmax(clean), jax.nn.log_softmax(adversarial)
    kl = jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1).mean()
    return optax.softmax_cross_entropy_with_integer_labels(clean, labels).mean() + beta * kl

  return loss


def trades_copy(epsilon, num_steps, step_size):
  """TRADES' inner maximization: signed steps on KL(f(x) || f(x')) over x' in the L-inf ball,
  from x plus small Gaussian noise (0.001), as in Zhang et al.'s code."""

  def transform(logits_fn, batch, key):
    x = batch['image']
    ball = attacks.LinfBall(x, epsilon)
    target = jax.lax.stop_gradient(jax.nn.log_softmax(logits_fn(x)))

    def kl(v):
      log_q = jax.nn.log_softmax(logits_fn(v))
      return jnp.sum(jnp.exp(target) * (target - log_q))

    def step(_, v):
      return ball.project(v + step_size * jnp.sign(jax.grad(kl)(v)))

    start = ball.project(x + 0.001 * jax.random.normal(key, x.shape, x.dtype))
    x_adv = jax.lax.fori_loop(0, num_steps, step, start)
    return _concatenate([batch, {**batch, 'image': x_adv}])

  return transform


def _free(config):
  """Free adversarial training (Shafahi et al., 2019): each batch replayed `replays` times, the
  perturbation carried over (`steps.free_train_step`). Divide num_epochs by `replays` for the
  paper's budget of updates."""
  return Variant(normal, replays=config.variant.replays, epsilon=config.variant.epsilon)


def needs_generator(config):
  return config.variant.name == 'on_learned_manifold'


def _on_learned_manifold(config, learned):
  """Stutz et al.'s eq. 4 with class-specific generators: the adversarial half is
  dec_y(z + zeta), PGD with Adam on zeta (|zeta|_inf <= epsilon, every step), z + zeta inside
  the box of the training codes, for the `paired` batch the trainer draws from a separate
  permutation of the training set (of its safe codes with config.variant.safe)."""
  if learned is None:  # loading a trained run: the step is never traced
    def transform(logits_fn, batch, key):
      raise UserError('on-learned-manifold training needs its generator: train through '
                      'advgen.studies.runs.train_classifier')
    return transform
  copy = _adversarial_copy(_pgd_spec(config.variant, 'on_learned_manifold'),
                           {'learned': learned})

  def transform(logits_fn, batch, key):
    clean = {k: v for k, v in batch.items() if k != 'paired'}
    return _concatenate([clean, copy(logits_fn, batch['paired'], key)])

  return transform


def _trades(config):
  variant = config.variant
  return Variant(trades_copy(variant.epsilon, variant.num_steps, variant.trades_step_size),
                 trades_loss(variant.beta))


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
    'gaussian_augmentation': lambda config: gaussian_augmentation(config.variant.sigma),
    'adversarial': _adversarial,
    'fast': _fast,
    'adversarial_transformation': _adversarial_transformation,
    'on_true_manifold': _on_true_manifold,
    'combined': _combined,
    'trades': _trades,
    'free': _free,
    'on_learned_manifold': _on_learned_manifold,
}
_PGD = ('epsilon', 'num_steps', 'step_size')
# The config.variant fields each variant reads.
_USES = {'normal': (), 'augmentation': ('radius',), 'gaussian_augmentation': ('sigma',),
         'adversarial': _PGD, 'fast': ('epsilon',),
         'adversarial_transformation': _PGD, 'on_true_manifold': _PGD, 'combined': _PGD,
         'trades': ('epsilon', 'num_steps', 'trades_step_size', 'beta'),
         'free': ('epsilon', 'replays'), 'on_learned_manifold': _PGD}


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
    integer = field in ('num_steps', 'replays')
    if not isinstance(value, int if integer else (int, float)) or value <= 0:
      kind = 'a positive integer' if integer else 'a positive number'
      raise UserError(f'config.variant.{field} must be {kind}, got {value!r}')
  if variant.name == 'combined':
    _validate_mix(variant)
  on_true = variant.name == 'on_true_manifold' or (
      variant.name == 'combined' and 'on_true_manifold' in variant.mix)
  if on_true and config.dataset.name != 'fonts':
    _true_manifold(config)  # raises its error


def _validate_mix(variant):
  mix, fractions = list(variant.get('mix', ())), list(variant.get('fractions', ()))
  unknown = [kind for kind in mix if kind not in _KINDS]
  if not mix or unknown:
    raise UserError(f'config.variant.mix must name adversarial variants among '
                    f'{", ".join(_KINDS)}, got {mix}')
  if len(fractions) != len(mix) or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
    raise UserError(f'config.variant.fractions must be {len(mix)} positive shares summing to 1 '
                    f'(one per config.variant.mix entry), got {fractions}')


def get(config, learned=None):
  """The Variant named by config.variant.name, with its settings from config.variant;
  `learned` is the LatentSpace of on-learned-manifold training."""
  validate(config)
  name = config.variant.name
  variant = _on_learned_manifold(config, learned) if name == 'on_learned_manifold' else (
      VARIANTS[name](config))
  return variant if isinstance(variant, Variant) else Variant(variant)
