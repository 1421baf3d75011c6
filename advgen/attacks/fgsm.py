"""Fast gradient sign method (Goodfellow et al.) and its random-start variant (Wong et al.)."""

import functools

import jax

from advgen.attacks import losses, norms, result
from advgen.attacks.pgd import loss_and_grad
from advgen.errors import UserError


@functools.partial(jax.jit, static_argnames=('logits_fn', 'random_start', 'targeted', 'loss'))
def fgsm(logits_fn, threat, y, key=None, *, step_size=None, random_start=False, targeted=False,
         loss='ce', kappa=0.0):
  """One steepest-ascent step in the threat model's norm, then projection.

  On an L-inf ball (and latent/transformation balls) this is FGSM: `x + epsilon * sign(grad)`; on
  L2/L1 balls the normalized-gradient and top-coordinate analogues. `step_size` defaults to the
  radius; "fast" adversarial training uses `random_start=True, step_size=1.25 * epsilon`.
  """
  if random_start and key is None:
    raise UserError('fgsm with random_start needs a key')
  v0 = threat.init(key if random_start else None)
  _, grad = loss_and_grad(logits_fn, threat, y, loss=loss, targeted=targeted, kappa=kappa)(v0)
  size = threat.radius() if step_size is None else step_size
  v = threat.project(v0 - size * norms.DIRECTIONS[threat.step_rule](grad))
  x_adv = threat.to_input(v)
  logits = logits_fn(x_adv)
  return result.build(x_adv=x_adv, v=v, reference=threat.to_input(threat.init()),
                      distance=threat.distance(v), success=losses.success(logits, y, targeted),
                      logits=logits,
                      loss=losses.objective(logits, y, loss=loss, targeted=targeted, kappa=kappa))
