"""The pytree every attack returns."""

import jax

from advgen.attacks import norms
from advgen.attacks.pytree import Pytree


class AttackResult(Pytree):
  """Per-example outcome of an attack; axis 0 is the batch.

  x_adv: the input shown to the classifier. v: the optimized variable (image, latent code or
  transformation parameters). success: prediction != label (or == target when targeted).
  distance: the threat model's own norm of the perturbation. linf, l2: image-space norms of
  x_adv minus the image at the threat model's centre. logits, loss: the classifier's logits and
  the attack objective at the result. restart_success: (B, R) success of each restart.
  """
  x_adv: jax.Array
  v: jax.Array
  success: jax.Array
  distance: jax.Array
  linf: jax.Array
  l2: jax.Array
  logits: jax.Array
  loss: jax.Array
  restart_success: jax.Array


def build(*, x_adv, v, reference, distance, success, logits, loss, restart_success=None):
  """An AttackResult with image distances measured from `reference`; one restart by default."""
  if restart_success is None:
    restart_success = success[:, None]
  delta = x_adv - reference
  return AttackResult(x_adv=x_adv, v=v, success=success, distance=distance, linf=norms.linf(delta),
                      l2=norms.l2(delta), logits=logits, loss=loss, restart_success=restart_success)
