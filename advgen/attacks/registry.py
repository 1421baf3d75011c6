"""Attacks by name, so that a config string selects one.

`get(name)(**settings)` returns `attack(logits_fn, x, y, key, ...) -> AttackResult`; `settings`
are the underlying attack's keyword arguments plus the radius `epsilon` where there is one.
"""

import numpy as np

from advgen import transforms
from advgen.attacks import threat as threats
from advgen.attacks.cw import carlini_wagner_l2
from advgen.attacks.deepfool import deepfool
from advgen.attacks.fgsm import fgsm
from advgen.attacks.pgd import pgd
from advgen.errors import UserError


def _image_ball(ball, engine):

  def builder(epsilon, **settings):

    def attack(logits_fn, x, y, key):
      return engine(logits_fn, ball(x, epsilon), y, key, **settings)

    return attack

  return builder


def on_manifold(epsilon, **settings):
  """PGD on a latent code: `attack(logits_fn, x, y, key, *, decode_fn, z, box, context=None)`.

  The classifier sees decode_fn(z') only; `x` is accepted for a uniform call and unused.
  """

  def attack(logits_fn, x, y, key, *, decode_fn, z, box, context=None):
    del x
    return pgd(logits_fn, threats.LatentBall(decode_fn, z, epsilon, box, context), y, key,
               **settings)

  return attack


def transform(epsilon, ranges='hard', **settings):
  """PGD on affine parameters around the identity; `ranges` a transforms.RANGES name or (2, 6)."""
  if isinstance(ranges, str):
    if ranges not in transforms.RANGES:
      raise UserError(f'unknown transformation ranges {ranges!r}; choose one of '
                      f'{", ".join(transforms.RANGES)}')
    ranges = transforms.RANGES[ranges]
  ranges = np.asarray(ranges, np.float32)

  def attack(logits_fn, x, y, key):
    return pgd(logits_fn, threats.TransformBall(x, epsilon, ranges), y, key, **settings)

  return attack


def _minimal(engine):

  def builder(**settings):

    def attack(logits_fn, x, y, key):
      del key
      return engine(logits_fn, x, y, **settings)

    return attack

  return builder


ATTACKS = {
    'pgd_linf': _image_ball(threats.LinfBall, pgd),
    'pgd_l2': _image_ball(threats.L2Ball, pgd),
    'pgd_l1': _image_ball(threats.L1Ball, pgd),
    'fgsm': _image_ball(threats.LinfBall, fgsm),
    'deepfool': _minimal(deepfool),
    'cw_l2': _minimal(carlini_wagner_l2),
    'on_manifold': on_manifold,
    'transform': transform,
}


def get(name):
  """The builder registered as `name`."""
  if name not in ATTACKS:
    raise UserError(f'unknown attack {name!r}; choose one of {", ".join(ATTACKS)}')
  return ATTACKS[name]
