"""Projected gradient ascent over any threat model: the one engine behind regular, on-manifold
and transformation attacks (Madry et al.; Stutz et al.'s Adam variant through an optax step rule).
"""

import functools

import jax
import jax.numpy as jnp
import optax

from advgen.attacks import canonical, losses, norms, result, steps
from advgen.attacks.pytree import Pytree
from advgen.errors import UserError


class _Iterate(Pytree):
  """The iterate an attack keeps per example, with what was computed there."""
  v: jax.Array
  loss: jax.Array
  success: jax.Array
  logits: jax.Array


def loss_and_grad(logits_fn, threat, y, *, loss, targeted, kappa):
  """`v -> ((-sum objective, (objective, logits)), gradient)`: one forward and one backward pass.

  The gradient is of the negated objective, the sign optax expects; its convolutions are
  canonicalized so that they stay fast inside the attack's loop on CPU.
  """

  def negated(v):
    logits = logits_fn(threat.to_input(v))
    value = losses.objective(logits, y, loss=loss, targeted=targeted, kappa=kappa)
    return -jnp.sum(value), (value, logits)

  return canonical.canonical_convolutions(jax.value_and_grad(negated, has_aux=True))


def _keep(best, candidate, early_stop):
  """Replaces `best` where `candidate` is better, per example.

  With early stopping the first successful iterate is final; otherwise the highest loss wins, so
  the kept loss never falls below the start's.
  """
  higher = candidate.loss > best.loss
  better = (~best.success & (candidate.success | higher)) if early_stop else higher
  return jax.tree.map(lambda new, old: jnp.where(norms.expand(better, new), new, old), candidate,
                      best)


def _run(key, *, logits_fn, threat, y, rule, num_steps, random_start, early_stop, targeted,
         objective):
  """One restart: `num_steps` projected steps, every iterate (the last included) considered."""
  grad_fn = loss_and_grad(logits_fn, threat, y, targeted=targeted, **objective)
  v0 = threat.init(key if random_start else None)
  logits_shape = jax.eval_shape(lambda v: logits_fn(threat.to_input(v)), v0)
  batch = y.shape[0]
  best = _Iterate(v0, jnp.full((batch,), -jnp.inf, v0.dtype), jnp.zeros((batch,), bool),
                  jnp.zeros(logits_shape.shape, logits_shape.dtype))

  def visit(best, v, value, logits):
    return _keep(best, _Iterate(v, value, losses.success(logits, y, targeted), logits), early_stop)

  def step(carry, _):
    v, opt_state, best = carry
    (_, (value, logits)), grad = grad_fn(v)
    best = visit(best, v, value, logits)
    updates, opt_state = rule.update(grad, opt_state, v)
    return (threat.project(optax.apply_updates(v, updates)), opt_state, best), None

  (v, _, best), _ = jax.lax.scan(step, (v0, rule.init(v0), best), length=num_steps)
  logits = logits_fn(threat.to_input(v))
  return visit(best, v, losses.objective(logits, y, targeted=targeted, **objective), logits)


def _pick_restart(threat, runs):
  """Per example: the successful restart of smallest distance, else the one of highest loss."""
  distance = jax.vmap(threat.distance)(runs.v)  # (R, B)
  closest = jnp.argmin(jnp.where(runs.success, distance, jnp.inf), axis=0)
  strongest = jnp.argmax(runs.loss, axis=0)
  pick = jnp.where(jnp.any(runs.success, axis=0), closest, strongest)
  take = lambda a: jnp.take_along_axis(a, norms.expand(pick, a[0])[None], axis=0)[0]
  return jax.tree.map(take, runs)


@functools.partial(jax.jit, static_argnames=('logits_fn', 'num_steps', 'step_rule', 'restarts',
                                             'random_start', 'early_stop', 'targeted', 'loss'))
def pgd(logits_fn, threat, y, key, *, num_steps, step_size=None, step_rule=None, restarts=1,
        random_start=True, early_stop=True, targeted=False, loss='ce', kappa=0.0):
  """Projected gradient ascent of `loss` inside `threat`, with restarts run in parallel.

  Args:
    logits_fn: images -> logits, a pure closure over the model (static: reuse one function).
    threat: a threat model from `advgen.attacks.threat` (the feasible set, batch of B).
    y: (B,) int labels, or target classes when `targeted`.
    key: randomness of the random starts (one key per restart is split from it).
    num_steps: gradient steps per restart.
    step_size: the step of a named rule (traced: new values do not recompile).
    step_rule: 'sign' (L-inf steepest ascent), 'l2' (normalized gradient), 'l1' (top-magnitude
      coordinate), an optax.GradientTransformation (e.g. optax.adam(0.005); create it once), or
      None for the threat model's own steepest-ascent rule.
    restarts: independent runs (vmapped); needs random_start when above one.
    random_start: start uniformly inside the set instead of at its centre.
    early_stop: keep each example's first successful iterate (a mask; all steps still run).
      Otherwise keep the iterate of highest loss, never worse than the start.
    targeted: move towards the classes `y` instead of away from them.
    loss: 'ce' or 'margin' (Carlini-Wagner, clamped at `kappa`).

  Returns:
    AttackResult of the best restart per example (successful and closest, else highest loss),
    with restart_success (B, restarts) for per-restart success rates.
  """
  if restarts > 1 and not random_start:
    raise UserError('restarts > 1 repeat the same deterministic run; set random_start=True')
  rule = steps.resolve(step_rule, step_size, threat.step_rule)
  run = functools.partial(_run, logits_fn=logits_fn, threat=threat, y=y, rule=rule,
                          num_steps=num_steps, random_start=random_start, early_stop=early_stop,
                          targeted=targeted, objective={'loss': loss, 'kappa': kappa})
  runs = jax.vmap(run)(jax.random.split(key, restarts))
  best = _pick_restart(threat, runs)
  return result.build(x_adv=threat.to_input(best.v), v=best.v,
                      reference=threat.to_input(threat.init()), distance=threat.distance(best.v),
                      success=best.success, logits=best.logits, loss=best.loss,
                      restart_success=runs.success.T)


@functools.partial(jax.jit, static_argnames=('attack', 'logits_fn', 'settings'))
def _sweep(attack, logits_fn, threat, y, key, epsilons, settings):
  run = lambda epsilon: attack(logits_fn, threat.replace(epsilon=epsilon), y, key, **dict(settings))
  return jax.vmap(run)(epsilons)


def sweep(attack, logits_fn, threat, y, key, epsilons, **settings):
  """`attack` (pgd or fgsm) at every radius in `epsilons` (E,) as one vmapped program.

  Every radius uses the same key (common random numbers). Returns an AttackResult whose fields
  have a leading axis E; `settings` are the attack's keyword arguments.
  """
  return _sweep(attack, logits_fn, threat, y, key, jnp.asarray(epsilons),
                tuple(sorted(settings.items())))
