"""AutoAttack (Croce & Hein, ICML 2020): a fixed cascade of parameter-free attacks, each run only
on the points still robust, a point counting as robust only if no stage broke it.

The versions and their settings are those of the authors' reference code (fra31/auto-attack,
`autoattack.py`, `set_version`): `standard` is APGD-CE, APGD-T (9 targets), FAB-T (9 targets) and
Square (5000 queries), one restart each, for L-inf and L2; for L1 it is APGD-CE (5 restarts) and
APGD-T (5 targets). `plus` adds the untargeted APGD-DLR and FAB with 5 restarts; `rand` (for
randomized models) is APGD-CE and APGD-DLR with the expectation over 20 draws per step.

The whole cascade is one jit-compiled program, so `attack_models` compiles it over K models. The
reference gathers the robust points of each stage on the host; static shapes forbid that here, so
each stage sorts the batch robust-first and runs over fixed-size chunks of that order in a
`while_loop` that stops at the first chunk without a robust point: a stage's work is proportional
to the points still robust, and a batch broken early skips the later stages. The sanity checks of
the reference run on the host before the attack (`checks`).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from advgen.attacks import losses, norms, result, threat as threats
from advgen.attacks.apgd import apgd
from advgen.attacks.fab import fab
from advgen.attacks.pgd import CPU_CHUNK_SIZE
from advgen.attacks.pytree import static_field
from advgen.attacks.square import square
from advgen.errors import UserError

VERSIONS = ('standard', 'plus', 'rand', 'custom')
STAGES = ('apgd_ce', 'apgd_dlr', 'apgd_t', 'fab', 'fab_t', 'square')
NORMS = norms.BY_NAME
ROBUST, MISCLASSIFIED = -1, -2  # `stage` of points no stage broke, and of points wrong when clean
_APGD_LOSS = {'apgd_ce': 'ce', 'apgd_dlr': 'dlr', 'apgd_t': 'dlr_targeted'}
ACCELERATOR_CHUNK = 256  # points per stage call on accelerators: later stages skip broken chunks
_SLACK = 1e-5  # float32 rounding of an exact projection: ||delta|| may exceed eps by this much
_PROBE = 250  # images the checks look at (the reference's batch)
_PROBABILITY_TOLERANCE, _RANDOM_TOLERANCE = 1e-5, 1e-4  # the reference's thresholds


class AutoAttackResult(result.AttackResult):
  """An AttackResult plus, per point, `stage`: the index in `names` of the stage that broke it,
  ROBUST (-1) or MISCLASSIFIED (-2, wrong on the clean image, never attacked), and
  `robust_after` (B, stages): still robust after each stage. `names` (static) are the stages."""
  stage: jax.Array
  robust_after: jax.Array
  names: tuple = static_field(default=())


def _recipe(norm, version, attacks_to_run):
  """(stage, settings) pairs of a version, the reference's `set_version`."""
  if version == 'custom':
    return tuple((name, {}) for name in attacks_to_run)
  if version == 'standard' and norm == 'l1':
    return (('apgd_ce', {'restarts': 5}), ('apgd_t', {'num_targets': 5}))
  if version == 'standard':
    return (('apgd_ce', {}), ('apgd_t', {}), ('fab_t', {}), ('square', {}))
  if version == 'plus':
    many = {'restarts': 5}
    stages = (('apgd_ce', many), ('apgd_dlr', many), ('fab', many), ('square', {}),
              ('apgd_t', {}), ('fab_t', {}))
    return tuple(s for s in stages if norm != 'l1' or s[0] != 'square')  # Square: L-inf, L2
  return (('apgd_ce', {'eot_iter': 20}), ('apgd_dlr', {'eot_iter': 20}))


def check(norm, version, attacks_to_run=()):
  """A UserError for a norm, version or stage list the cascade cannot run (before any work)."""
  if isinstance(attacks_to_run, str):
    raise UserError(f'attacks_to_run is a list of stages, got the string {attacks_to_run!r}; '
                    f'write ({attacks_to_run!r},)')
  if norm not in NORMS:
    raise UserError(f'unknown AutoAttack norm {norm!r}; choose one of {", ".join(NORMS)}')
  if version not in VERSIONS:
    raise UserError(f'unknown AutoAttack version {version!r}; choose one of '
                    f'{", ".join(VERSIONS)}')
  unknown = [name for name in attacks_to_run if name not in STAGES]
  if unknown:
    raise UserError(f'unknown AutoAttack stage {unknown[0]!r} in attacks_to_run; choose from '
                    f'{", ".join(STAGES)}')
  if version == 'custom' and not attacks_to_run:
    raise UserError("version='custom' runs the stages of attacks_to_run, which is empty; name "
                    f'some of {", ".join(STAGES)}')
  if attacks_to_run and version != 'custom':
    raise UserError(f"attacks_to_run goes with version='custom' (got version={version!r}); "
                    "set version='custom' or leave attacks_to_run out")
  if norm == 'l1' and 'square' in attacks_to_run:
    raise UserError('Square runs in the linf and l2 balls only; leave square out of an l1 '
                    'attacks_to_run')


def plan(norm, version, num_classes, attacks_to_run=()):
  """`(stages, notes)`: the (name, settings) pairs the cascade runs on a model of `num_classes`
  classes, and what had to change: stages of a DLR loss the model has too few classes for are
  left out, targets capped at classes - 1 (the reference only warns, then fails)."""
  check(norm, version, attacks_to_run)
  stages, notes = [], []
  for name, settings in _recipe(norm, version, attacks_to_run):
    needed = losses.MIN_CLASSES.get(_APGD_LOSS.get(name), 0)
    if num_classes < needed:
      notes.append(f'{name} left out: its loss needs at least {needed} classes, the model has '
                   f'{num_classes}')
      continue
    settings = dict(settings)
    if name in ('apgd_t', 'fab_t'):
      targets = settings.get('num_targets', 9)
      if targets > num_classes - 1:
        notes.append(f'{name}: {targets} targets capped at classes - 1 = {num_classes - 1}')
      settings['num_targets'] = min(targets, num_classes - 1)
    stages.append((name, settings))
  return tuple(stages), notes


def _stage(name, settings, logits_fn, x, y, key, *, norm, epsilon, num_steps, num_queries,
           randomized, chunk_size):
  """The stage `name` on the points (x, y): its adversarial images."""
  settings = dict(settings)
  if name in _APGD_LOSS:
    eot_iter = settings.pop('eot_iter', None)
    return apgd(logits_fn, threats.BALLS[norm](x, epsilon), y, key, num_steps=num_steps,
                loss=_APGD_LOSS[name], eot_iter=eot_iter if randomized else None,
                chunk_size=chunk_size, **settings).x_adv
  if name in ('fab', 'fab_t'):
    return fab(logits_fn, x, y, key, norm=norm, epsilon=epsilon, num_steps=num_steps,
               targeted=name == 'fab_t', chunk_size=chunk_size, **settings).x_adv
  return square(logits_fn, x, y, key, norm=norm, epsilon=epsilon, num_queries=num_queries,
                chunk_size=chunk_size, rescale_schedule=False).x_adv  # the reference's Square


def _robust_first(run, classify, x, y, alive, key, chunk, within):
  """`run(x, y, key)` on the `alive` points only, over chunks of `chunk` points in robust-first
  order; returns per point (B) the adversarial image, its logits and whether it broke the point
  (misclassified and `within` ball and box). Points not alive come back not broken."""
  batch = x.shape[0]
  count = -(-batch // chunk)
  pad = count * chunk - batch
  padded = lambda a, value=0: jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1),
                                      constant_values=value)
  xp, yp, alive = padded(x), padded(y), padded(alive, False)
  order = jnp.argsort(~alive, stable=True)
  num_alive = jnp.sum(alive)
  logits_shape = jax.eval_shape(classify, x[:1], key).shape[1:]
  init = (jnp.zeros((), jnp.int32), xp, jnp.zeros((xp.shape[0],) + logits_shape, x.dtype),
          jnp.zeros(xp.shape[0], bool))

  def body(carry):
    j, x_adv, logits, broken = carry
    index = jax.lax.dynamic_slice_in_dim(order, j * chunk, chunk)
    part_key, check_key = jax.random.split(jax.random.fold_in(key, j))
    xs, ys = xp[index], yp[index]
    adv = run(xs, ys, part_key)
    out = classify(adv, check_key)
    valid = j * chunk + jnp.arange(chunk) < num_alive
    hit = valid & losses.success(out, ys, False) & within(adv, xs)
    return (j + 1, x_adv.at[index].set(adv), logits.at[index].set(out),
            broken.at[index].set(hit))

  running = lambda c: (c[0] < count) & (c[0] * chunk < num_alive)
  _, x_adv, logits, broken = jax.lax.while_loop(running, body, init)
  return x_adv[:batch], logits[:batch], broken[:batch]


def autoattack(logits_fn, x, y, key, *, norm='linf', epsilon, version='standard',
               attacks_to_run=(), num_steps=100, num_queries=5000, randomized=False,
               chunk_size=None):
  """AutoAttack of `x` (B, H, W, C) in [0, 1] with labels `y` inside the `norm` ball of radius
  `epsilon` (traced) and the box.

  Args:
    logits_fn: images -> logits, a pure closure over the model (static: reuse one function); with
      `randomized`, `logits_fn(images, key)` draws the randomness of a randomized model from key.
    key: fixes every random choice (a key per stage and chunk is folded from it).
    norm: 'linf', 'l2' or 'l1'.
    version: 'standard', 'plus', 'rand' (see the module docstring) or 'custom': the stages
      `attacks_to_run` (names of STAGES) with the standard settings (one restart, 9 targets).
    num_steps: iterations of APGD and FAB (100 in every version).
    num_queries: Square's queries (5000).
    randomized: `logits_fn` takes a key (needs version 'rand'); every classifier call draws
      anew, APGD averages over 20 draws per step. Without it, 'rand' runs APGD-CE and APGD-DLR
      once per step (20 draws of a deterministic model are the same).
    chunk_size: points per stage call: None is pgd.CPU_CHUNK_SIZE on CPU and ACCELERATOR_CHUNK
      elsewhere, 0 the whole batch; the stage's engine sees at most this many points at once.

  Returns:
    AutoAttackResult: x_adv is the image of the stage that broke a point (inside ball and box,
    its norm checked), else x; success is misclassification at x_adv (the clean misclassified
    included); distance the `norm` of x_adv - x.
  """
  if randomized and version != 'rand':
    raise UserError("a randomized logits_fn(images, key) goes with version='rand'")
  check(norm, version, attacks_to_run)
  radius = _concrete(epsilon)
  if radius is not None and not (radius.ndim == 0 and np.isfinite(radius) and radius >= 0):
    raise UserError(f'AutoAttack needs one finite epsilon >= 0 for the batch, got {epsilon!r}')
  if num_steps < 1 or num_queries < 1:
    raise UserError(f'AutoAttack needs num_steps and num_queries >= 1, got {num_steps} and '
                    f'{num_queries}')
  return _cascade(logits_fn, x, y, key, norm=norm, epsilon=epsilon, version=version,
                  attacks_to_run=tuple(attacks_to_run), num_steps=num_steps,
                  num_queries=num_queries, randomized=randomized, chunk_size=chunk_size)


@functools.partial(jax.jit, static_argnames=('logits_fn', 'norm', 'version', 'attacks_to_run',
                                             'num_steps', 'num_queries', 'randomized',
                                             'chunk_size'))
def _cascade(logits_fn, x, y, key, *, norm, epsilon, version, attacks_to_run, num_steps,
             num_queries, randomized, chunk_size):
  """The jit-compiled cascade of `autoattack` (its arguments checked)."""
  model = _keyed(logits_fn, randomized)
  chunk = chunk_size if chunk_size is not None else (
      CPU_CHUNK_SIZE if jax.default_backend() == 'cpu' else ACCELERATOR_CHUNK)
  chunk = min(chunk or x.shape[0], x.shape[0])
  clean_key, key = jax.random.split(key)
  clean = model(x, clean_key)
  stages, _ = plan(norm, version, clean.shape[-1], attacks_to_run)
  size = NORMS[norm]
  inside = lambda a: jnp.all((a >= 0) & (a <= 1), axis=tuple(range(1, a.ndim)))
  within = lambda adv, xs: (size(adv - xs) <= epsilon + _SLACK) & inside(adv)
  robust = ~losses.success(clean, y, False)
  x_adv, logits = x, clean
  stage = jnp.where(robust, ROBUST, MISCLASSIFIED).astype(jnp.int32)
  robust_after = []
  for index, (name, settings) in enumerate(stages):
    run = functools.partial(_stage, name, settings, logits_fn, norm=norm, epsilon=epsilon,
                            num_steps=num_steps, num_queries=num_queries, randomized=randomized,
                            chunk_size=0)
    adv, out, broken = _robust_first(run, model, x, y, robust, jax.random.fold_in(key, index),
                                     chunk, within)
    x_adv = jnp.where(norms.expand(broken, x), adv, x_adv)
    logits = jnp.where(broken[:, None], out, logits)
    stage = jnp.where(broken, index, stage)
    robust &= ~broken
    robust_after.append(robust)
  base = result.build(x_adv=x_adv, v=x_adv, reference=x, distance=size(x_adv - x),
                      success=~robust, logits=logits, loss=-losses.margin(logits, y))
  return AutoAttackResult(**vars(base), stage=stage,
                          robust_after=jnp.stack(robust_after, axis=-1) if stages
                          else jnp.ones(y.shape + (0,), bool),
                          names=tuple(name for name, _ in stages))


def _keyed(logits_fn, randomized):
  """`(images, key) -> logits`: a randomized model as it is, a deterministic one ignoring key."""
  return logits_fn if randomized else lambda images, _: logits_fn(images)


def _concrete(value):
  """`value` as a float64 array, or None where it is traced (checked by whoever traces it)."""
  try:
    return np.asarray(value, np.float64)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def stage_accuracy(res):
  """{'clean_accuracy', 'robust_accuracy_<stage>' per stage, 'robust_accuracy'} of one model's
  AutoAttackResult (arrays of B points): the fraction still correct after each stage."""
  stage = np.asarray(res.stage)
  out = {'clean_accuracy': float(np.mean(stage != MISCLASSIFIED))}
  after = np.asarray(res.robust_after)
  for index, name in enumerate(res.names):
    out[f'robust_accuracy_{name}'] = float(np.mean(after[:, index]))
  out['robust_accuracy'] = float(np.mean(stage == ROBUST))
  return out


def checks(logits_fn, x, y, key, *, norm='linf', version='standard', attacks_to_run=(),
           randomized=False):
  """The reference's sanity checks on the first 250 points, on the host, before attacking: each
  warning is logged on one line and returned (a list of strings, empty when all is well).

  Logits that look like probabilities (in [0, 1], rows summing to 1); logits that change between
  two calls on the same input (a randomized model: version 'rand'); points whose loss gradient is
  exactly zero at the clean input (gradient masking: gradient attacks cannot move them; the
  reference checks at APGD's random start); stages left out or targets capped for the model's
  number of classes (`plan`).
  """
  model = _keyed(logits_fn, randomized)
  xs, ys = jnp.asarray(x[:_PROBE]), jnp.asarray(y[:_PROBE])
  first_key, second_key, grad_key = jax.random.split(key, 3)
  first = np.asarray(model(xs, first_key))
  warnings = []
  if (first.max() < 1 + _PROBABILITY_TOLERANCE and first.min() > -_PROBABILITY_TOLERANCE
      and np.all(np.abs(first.sum(-1) - 1) < _PROBABILITY_TOLERANCE)):
    warnings.append('the outputs look like probabilities (in [0, 1], summing to 1): attack the '
                    'logits, not the softmax')
  if version != 'rand':
    second = np.asarray(model(xs, second_key))
    unit = lambda a: a / (np.linalg.norm(a, axis=-1, keepdims=True) + 1e-10)
    changed = np.max(np.linalg.norm(unit(first) - unit(second), axis=-1)) > _RANDOM_TOLERANCE
    if changed or np.any(first.argmax(-1) != second.argmax(-1)):
      warnings.append("the logits change between two calls on the same input: a randomized "
                      "model? evaluate it with version='rand' (expectation over draws)")
  ce = lambda images: jnp.sum(optax.softmax_cross_entropy_with_integer_labels(
      model(images, grad_key), ys))
  grad = np.asarray(jax.grad(ce)(xs)).reshape(len(ys), -1)
  zero = int(np.sum(np.all(grad == 0, axis=-1)))
  if zero:
    warnings.append(f'{zero} of {len(ys)} points have an exactly zero loss gradient: gradient '
                    'masking? gradient-based stages cannot move them')
  warnings += plan(norm, version, first.shape[-1], attacks_to_run)[1]
  for warning in warnings:
    logging.warning('AutoAttack check: %s', warning)
  return warnings
