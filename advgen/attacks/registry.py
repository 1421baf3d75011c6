"""The one way to make an attack: from a config entry `{'attack': NAME, **settings}`.

`build(spec, manifolds)` returns `attack(logits_fn, batch, key) -> AttackResult`, where `batch` is
a dict of per-example arrays: `image` and `label`, plus the latent codes on-manifold attacks
perturb (fonts' `font` and `theta`, a generator's `code`). Training variants, the attack
pipeline and studies all build attacks this way. Settings are the attack function's keyword
arguments plus the radius `epsilon` where there is one; `step_rule: 'adam'` with `step_size`
is Stutz et al.'s Adam on the perturbation; `start: 'uniform' | 'gaussian_linf'` picks the random
start of L-inf attacks (`threat.STARTS`; 'gaussian_linf' is Stutz et al.'s); `norm: 'linf' |
'l2' | 'l1'` picks the ball of the APGD entries (`apgd_ce`, `apgd_dlr`, `apgd_t`) and the norm
FAB minimizes (`fab`, `fab_t`: without `epsilon` a minimal attack) and the ball of `autoattack`
(with its `version`). `validate(spec)` checks an
entry without running it; `settings(spec)` is the entry with the defaults a result should record
(the start used).
"""

import dataclasses
import difflib
import inspect
import math
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np
import optax

from advgen import transforms
from advgen.models import class_models
from advgen.attacks import threat as threats
from advgen.attacks.apgd import apgd
from advgen.attacks.autoattack import autoattack, check as check_autoattack
from advgen.attacks.cw import carlini_wagner_l2
from advgen.attacks.deepfool import deepfool
from advgen.attacks.fab import fab
from advgen.attacks.fgsm import fgsm
from advgen.attacks.hopskipjump import hopskipjump
from advgen.attacks.pgd import pgd
from advgen.attacks.square import square
from advgen.errors import UserError


@dataclasses.dataclass(frozen=True)
class LatentSpace:
  """A generator an on-manifold attack moves along: `decode(z, batch) -> images` of the codes in
  `batch[field]`, inside the box (low, high). Make one per model and reuse it (it is static)."""
  decode: Callable
  field: str
  box: Any


def true_manifold(manifold):
  """The fonts generator over theta, with each example's font and class fixed (Stutz et al.):
  every image it shows the classifier is an exact rendering of its (font, class)."""

  def decode(theta, batch):
    return manifold.render(batch['font'], batch['label'], theta)

  return LatentSpace(decode, 'theta', np.asarray(manifold.ranges, np.float32))


def learned_manifold(module, variables, box):
  """Class-specific generators over their latent codes `code`, each example decoded by the
  generator of its true class `label` (Stutz et al., eq. 3), inside `box` = (low, high), e.g. the
  [min, max] of the test codes; `module, variables` are stacked class models
  (`studies.runs.load_generators`)."""
  decode_y = class_models.decode_fn(module, variables)

  def decode(code, batch):
    return decode_y(code, batch['label'])

  return LatentSpace(decode, 'code', jnp.asarray(box, jnp.float32))  # may be traced (training)


NORMS = tuple(threats.BALLS)


@dataclasses.dataclass(frozen=True)
class _Entry:
  engine: Callable
  threat: Callable = None  # (batch, epsilon, settings, manifolds) -> threat model; None: minimal
  manifold: str = None  # the entry of `manifolds` the attack needs
  extra: tuple = ()  # settings the entry consumes itself
  needs_key: bool = False  # a minimal attack that draws random numbers (HopSkipJump)
  fixed: tuple = ()  # (setting, value) pairs of the engine the entry sets itself
  omit: tuple = ()  # settings of the engine the entry does not offer


def _image(kind):

  def make(batch, epsilon, settings, manifolds):
    if 'start' in settings:  # only the L-inf entries accept it
      return threats.BALLS[kind](batch['image'], epsilon, start=settings.pop('start'))
    return threats.BALLS[kind](batch['image'], epsilon)

  return make


def _normed_image(batch, epsilon, settings, manifolds):
  """The image ball of the `norm` setting ('linf' unless set)."""
  return threats.BALLS[settings.pop('norm', 'linf')](batch['image'], epsilon)


def _transform(batch, epsilon, settings, manifolds):
  ranges = settings.pop('ranges', 'hard')
  if isinstance(ranges, str):
    ranges = transforms.RANGES[ranges]
  return threats.TransformBall(batch['image'], epsilon, np.asarray(ranges, np.float32))


def _latent(name):

  def make(batch, epsilon, settings, manifolds):
    space = manifolds[name]
    return threats.LatentBall(space.decode, batch[space.field], epsilon, space.box, batch,
                              start=settings.pop('start', 'uniform'))

  return make


ATTACKS = {
    'pgd_linf': _Entry(pgd, _image('linf'), extra=('start',)),
    'pgd_l2': _Entry(pgd, _image('l2')),
    'pgd_l1': _Entry(pgd, _image('l1')),
    'fgsm': _Entry(fgsm, _image('linf'), extra=('start',)),
    'transform': _Entry(pgd, _transform, extra=('ranges',)),
    'on_true_manifold': _Entry(pgd, _latent('true'), manifold='true', extra=('start',)),
    'on_learned_manifold': _Entry(pgd, _latent('learned'), manifold='learned', extra=('start',)),
    'deepfool': _Entry(deepfool),
    'cw_l2': _Entry(carlini_wagner_l2),
    'hopskipjump': _Entry(hopskipjump, needs_key=True),
    'square': _Entry(square, needs_key=True),
    'apgd_ce': _Entry(apgd, _normed_image, extra=('norm',), fixed=(('loss', 'ce'),),
                      omit=('num_targets', 'eot_iter')),
    'apgd_dlr': _Entry(apgd, _normed_image, extra=('norm',), fixed=(('loss', 'dlr'),),
                       omit=('num_targets', 'eot_iter')),
    'apgd_t': _Entry(apgd, _normed_image, extra=('norm',), fixed=(('loss', 'dlr_targeted'),),
                     omit=('eot_iter',)),
    'fab': _Entry(fab, needs_key=True, fixed=(('targeted', False),), omit=('num_targets',)),
    'fab_t': _Entry(fab, needs_key=True, fixed=(('targeted', True),)),
    'autoattack': _Entry(autoattack, needs_key=True, omit=('randomized',)),
}

# Settings of the engines that the pipeline supplies itself.
_SUPPLIED = {'logits_fn', 'threat', 'y', 'key', 'x'}


def _allowed(entry):
  hidden = _SUPPLIED | {name for name, _ in entry.fixed} | set(entry.omit)
  names = [p for p in inspect.signature(entry.engine).parameters if p not in hidden]
  if entry.threat is not None:
    names.append('epsilon')
  return names + list(entry.extra)


def _required(entry):
  """The engine's keyword settings without a default (Square's epsilon)."""
  parameters = inspect.signature(entry.engine).parameters.values()
  return {p.name for p in parameters if p.kind == p.KEYWORD_ONLY and p.default is p.empty}


def _closest(name, choices):
  match = difflib.get_close_matches(name, choices, n=1)
  return f' (did you mean {match[0]!r}?)' if match else ''


def validate(spec, where='attack'):
  """Checks a config entry (name, setting names, values) before any work; returns the name."""
  settings = dict(spec)
  name = settings.pop('attack', None)
  if name not in ATTACKS:
    raise UserError(f'unknown {where} {name!r}{_closest(str(name), list(ATTACKS))}; choose one '
                    f'of {", ".join(ATTACKS)}')
  allowed = _allowed(ATTACKS[name])
  for key in settings:
    if key not in allowed:
      raise UserError(f'{where} {name!r} has no setting {key!r}{_closest(key, allowed)}; its '
                      f'settings are {", ".join(sorted(allowed))}')
  entry = ATTACKS[name]
  if (entry.threat is not None or 'epsilon' in _required(entry)) and 'epsilon' not in settings:
    raise UserError(f'{where} {name!r} needs a radius: set its epsilon')
  for key, value in settings.items():
    if isinstance(value, float) and not math.isfinite(value):
      raise UserError(f'{where} {name!r}: {key} must be finite, got {value!r}')
  for key in ('epsilon', 'step_size', 'lr', 'c_init', 'overshoot'):
    if key in settings and not (isinstance(settings[key], (int, float)) and settings[key] > 0):
      raise UserError(f'{where} {name!r}: {key} must be a positive number, got {settings[key]!r}')
  for key in ('num_steps', 'restarts', 'max_iter', 'binary_search_steps', 'num_iterations',
              'max_num_evals', 'init_num_evals', 'num_targets', 'num_queries'):
    if key in settings and not (isinstance(settings[key], int) and settings[key] >= 1):
      raise UserError(f'{where} {name!r}: {key} must be a positive integer, got '
                      f'{settings[key]!r}')
  if 'rho' in settings and not (isinstance(settings['rho'], (int, float))
                                and 0 <= settings['rho'] <= 1):
    raise UserError(f'{where} {name!r}: rho must be a number in [0, 1], got {settings["rho"]!r}')
  if 'norm' in settings and settings['norm'] not in NORMS:
    raise UserError(f'{where} {name!r}: unknown norm {settings["norm"]!r}'
                    f'{_closest(str(settings["norm"]), NORMS)}; choose one of {", ".join(NORMS)}')
  if name == 'autoattack':
    try:
      check_autoattack(settings.get('norm', 'linf'), settings.get('version', 'standard'),
                       settings.get('attacks_to_run', ()))
    except UserError as error:
      raise UserError(f'{where} {name!r}: {error}') from None
  if name == 'square' and settings.get('norm', 'linf') not in ('linf', 'l2'):
    raise UserError(f'{where} {name!r}: Square runs in the linf and l2 balls, got norm '
                    f'{settings["norm"]!r}; choose linf or l2')
  if settings.get('step_rule') == 'adam' and 'step_size' not in settings:
    raise UserError(f'{where} {name!r}: step_rule adam needs a step_size (its learning rate)')
  if 'start' in settings and settings['start'] not in threats.STARTS:
    raise UserError(f'{where} {name!r}: unknown start {settings["start"]!r}'
                    f'{_closest(str(settings["start"]), threats.STARTS)}; choose one of '
                    f'{", ".join(threats.STARTS)}')
  ranges = settings.get('ranges')
  if isinstance(ranges, str) and ranges not in transforms.RANGES:
    raise UserError(f'unknown transformation ranges {ranges!r}; choose one of '
                    f'{", ".join(transforms.RANGES)}')
  return name


def settings(spec):
  """The config entry as a plain dict with the defaults a result should record: the random
  start of L-inf attacks ('uniform' unless set) and the norm of APGD ('linf' unless set)."""
  out = dict(spec)
  extra = ATTACKS[validate(spec)].extra
  if 'start' in extra:
    out.setdefault('start', 'uniform')
  if 'norm' in extra or out['attack'] == 'autoattack':
    out.setdefault('norm', 'linf')
  if out['attack'] == 'autoattack':
    out.setdefault('version', 'standard')
  return out


def needs_manifold(spec):
  """The name of the latent space ('true', 'learned') the attack of `spec` needs, or None."""
  return ATTACKS[dict(spec)['attack']].manifold


def build(spec, manifolds=None):
  """`attack(logits_fn, batch, key) -> AttackResult` for one config entry.

  `manifolds` maps 'true' / 'learned' to the LatentSpace on-manifold attacks move along.
  """
  name = validate(spec)
  entry = ATTACKS[name]
  settings = dict(spec)
  del settings['attack']
  settings.update(entry.fixed)
  manifolds = manifolds or {}
  if entry.manifold is not None and entry.manifold not in manifolds:
    needed = {'true': 'a dataset with a known generator (fonts)',
              'learned': 'a generator workdir (config.generator_workdir)'}[entry.manifold]
    raise UserError(f'attack {name!r} needs {needed}')
  if settings.get('step_rule') == 'adam':
    settings['step_rule'] = optax.adam(settings.pop('step_size'))
  epsilon = settings.pop('epsilon', None) if entry.threat is not None else None  # else the engine's
  make_threat = entry.threat
  threat_settings = {k: settings.pop(k) for k in entry.extra if k in settings}

  if make_threat is None:

    def attack(logits_fn, batch, key):
      keys = (key,) if entry.needs_key else ()
      return entry.engine(logits_fn, batch['image'], batch['label'], *keys, **settings)

  else:

    def attack(logits_fn, batch, key):
      threat = make_threat(batch, epsilon, dict(threat_settings), manifolds)
      return entry.engine(logits_fn, threat, batch['label'], key, **settings)

  return attack
