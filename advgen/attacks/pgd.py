"""Projected gradient ascent over any threat model: the one engine behind regular, on-manifold
and transformation attacks (Madry et al.; Stutz et al.'s Adam variant through an optax step rule).

Two things keep it at the speed of the hardware. With early stopping the step loop is a
`while_loop` that exits once every example of every restart has succeeded (a finished example's
kept iterate never changes again, so the result is the one of running every step). And the
classifier sees the (restarts x batch) images in cache-sized chunks on CPU, where XLA's
convolution gradients slow down by half at large batches (see `chunk_size`).
"""

import functools

import jax
import jax.numpy as jnp
import optax

from advgen.attacks import canonical, losses, norms, result, steps
from advgen.attacks.pytree import Pytree
from advgen.errors import UserError

# Images per classifier call on CPU: measured fastest for Stutz's conv net on 2 cores (a
# 40-step gradient loop at batch 1000 runs 23k image-steps/s in chunks of 100, 11k unchunked).
CPU_CHUNK_SIZE = 100


class _Iterate(Pytree):
  """The iterate an attack keeps per example, with what was computed there."""
  v: jax.Array
  loss: jax.Array
  success: jax.Array
  logits: jax.Array


def resolve_chunk_size(chunk_size):
  """The chunk size to use: `None` picks CPU_CHUNK_SIZE on CPU and no chunking elsewhere (an
  accelerator wants the whole batch); 0 never chunks."""
  if chunk_size is None:
    return CPU_CHUNK_SIZE if jax.default_backend() == 'cpu' else 0
  if chunk_size < 0:
    raise UserError(f'chunk_size must be >= 0 (0: no chunking), got {chunk_size}')
  return chunk_size


def chunked(fn, chunk_size, *arrays):
  """`fn(*arrays)` for functions that treat each index of the leading axis independently, run as
  a `lax.map` over about `len / chunk_size` equal chunks (zero-padded at the end).

  The same numbers as one call up to float rounding; a single call when the arrays hold fewer
  than 1.5 chunks or `chunk_size` is 0.
  """
  n = arrays[0].shape[0]
  count = max(1, round(n / chunk_size)) if chunk_size else 1
  if count == 1:
    return fn(*arrays)
  size = -(-n // count)
  pad = count * size - n
  split = lambda a: jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)).reshape(
      (count, size) + a.shape[1:])
  out = jax.lax.map(lambda parts: fn(*parts), tuple(split(a) for a in arrays))
  return jax.tree.map(lambda o: o.reshape((count * size,) + o.shape[2:])[:n], out)


def _evaluator(logits_fn, threat, y, *, loss, targeted, kappa, chunk_size, gradient=True,
               target=None):
  """`v (R, B, ...) -> (objective (R, B), logits (R, B, K), gradient of -objective wrt v)`.

  The R restarts are flattened into one batch for the classifier, evaluated in chunks, and the
  image gradient is pulled back through `threat.to_input`. Convolutions are canonicalized so
  they stay fast inside the attack's loop on CPU. Without `gradient` the third output is None.
  `target` (B,) is the second class of losses that need one besides `y` (dlr_targeted).
  """
  chunk_size = resolve_chunk_size(chunk_size)

  def objective(images, *labels):
    logits = logits_fn(images)
    value = losses.objective(logits, *labels, loss=loss, targeted=targeted, kappa=kappa)
    return -jnp.sum(value), (value, logits)

  def with_gradient(images, *labels):
    (_, (value, logits)), grad = jax.value_and_grad(objective, has_aux=True)(images, *labels)
    return value, logits, grad

  def forward(images, *labels):
    return objective(images, *labels)[1]

  per_chunk = canonical.canonical_convolutions(with_gradient)

  def evaluate(v):
    images, pullback = jax.vjp(jax.vmap(threat.to_input), v)
    restarts, batch = images.shape[:2]
    flat = images.reshape((restarts * batch,) + images.shape[2:])
    labels = [jnp.tile(c, restarts) for c in ((y,) if target is None else (y, target))]
    unflat = lambda a: a.reshape((restarts, batch) + a.shape[1:])
    if not gradient:
      value, logits = chunked(forward, chunk_size, flat, *labels)
      return unflat(value), unflat(logits), None
    value, logits, grad = chunked(per_chunk, chunk_size, flat, *labels)
    (grad_v,) = pullback(unflat(grad))
    return unflat(value), unflat(logits), grad_v

  return canonical.canonical_convolutions(evaluate) if gradient else evaluate


def loss_and_grad(logits_fn, threat, y, *, loss, targeted, kappa, chunk_size=None):
  """`v -> ((-sum objective, (objective, logits)), gradient)`: one forward and one backward pass.

  The gradient is of the negated objective, the sign optax expects; see `_evaluator`.
  """
  evaluate = _evaluator(logits_fn, threat, y, loss=loss, targeted=targeted, kappa=kappa,
                        chunk_size=chunk_size)

  def fn(v):
    value, logits, grad = evaluate(v[None])
    return (-jnp.sum(value[0]), (value[0], logits[0])), grad[0]

  return fn


def _keep(best, candidate, early_stop):
  """Replaces `best` where `candidate` is better, per example.

  With early stopping the first successful iterate is final; otherwise the highest loss wins, so
  the kept loss never falls below the start's.
  """
  higher = candidate.loss > best.loss
  better = (~best.success & (candidate.success | higher)) if early_stop else higher
  return jax.tree.map(lambda new, old: jnp.where(norms.expand(better, new), new, old), candidate,
                      best)


def _attack(keys, *, logits_fn, threat, y, rule, num_steps, random_start, early_stop, early_exit,
            targeted, objective, chunk_size):
  """All restarts (one per key) stacked on axis 0: `num_steps` projected steps each, every
  iterate (the last included) considered; returns the kept iterates (R, B, ...)."""
  settings = dict(targeted=targeted, chunk_size=chunk_size, **objective)
  evaluate = _evaluator(logits_fn, threat, y, **settings)
  forward = _evaluator(logits_fn, threat, y, gradient=False, **settings)
  per_restart = lambda fn: jax.vmap(fn)
  v0 = per_restart(lambda k: threat.init(k if random_start else None))(keys)
  logits_shape = jax.eval_shape(lambda v: forward(v)[1], v0)
  best = _Iterate(v0, jnp.full(logits_shape.shape[:2], -jnp.inf, v0.dtype),
                  jnp.zeros(logits_shape.shape[:2], bool),
                  jnp.zeros(logits_shape.shape, logits_shape.dtype))

  def visit(best, v, value, logits):
    keep = lambda b, c: _keep(b, c, early_stop)
    return per_restart(keep)(best, _Iterate(v, value, losses.success(logits, y, targeted), logits))

  def step(carry):
    i, v, opt_state, best = carry
    value, logits, grad = evaluate(v)
    best = visit(best, v, value, logits)
    updates, opt_state = per_restart(rule.update)(grad, opt_state, v)
    return i + 1, per_restart(threat.project)(optax.apply_updates(v, updates)), opt_state, best

  def last_visit(v, best):
    value, logits, _ = forward(v)
    return visit(best, v, value, logits)

  carry = (jnp.zeros((), jnp.int32), v0, per_restart(rule.init)(v0), best)
  if early_stop:
    # A successful example's kept iterate is final, so stopping once all have succeeded gives
    # the result of running every step (the remaining iterates would all be ignored). Both
    # variants run the same loop, so that they compile to the same arithmetic, bit for bit.
    if early_exit:
      running = lambda c: (c[0] < num_steps) & ~jnp.all(c[3].success)
    else:
      running = lambda c: c[0] < num_steps
    _, v, _, best = jax.lax.while_loop(running, step, carry)
  else:  # a fixed-length scan, differentiable, e.g. inside a training step
    (_, v, _, best), _ = jax.lax.scan(lambda c, _: (step(c), None), carry, length=num_steps)
  return last_visit(v, best)


def _pick_restart(threat, runs):
  """Per example: the successful restart of smallest distance, else the one of highest loss."""
  distance = jax.vmap(threat.distance)(runs.v)  # (R, B)
  closest = jnp.argmin(jnp.where(runs.success, distance, jnp.inf), axis=0)
  strongest = jnp.argmax(runs.loss, axis=0)
  pick = jnp.where(jnp.any(runs.success, axis=0), closest, strongest)
  take = lambda a: jnp.take_along_axis(a, norms.expand(pick, a[0])[None], axis=0)[0]
  return jax.tree.map(take, runs)


@functools.partial(jax.jit, static_argnames=('logits_fn', 'num_steps', 'step_rule', 'restarts',
                                             'random_start', 'early_stop', 'targeted', 'loss',
                                             'early_exit', 'chunk_size'))
def pgd(logits_fn, threat, y, key, *, num_steps, step_size=None, step_rule=None, restarts=1,
        random_start=True, early_stop=True, targeted=False, loss='ce', kappa=0.0,
        early_exit=True, chunk_size=None):
  """Projected gradient ascent of `loss` inside `threat`, with restarts run in parallel.

  Args:
    logits_fn: images -> logits, a pure closure over the model (static: reuse one function).
      Examples must be independent (no train-mode batch norm) unless `chunk_size=0`.
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
    early_stop: keep each example's first successful iterate. Otherwise keep the iterate of
      highest loss, never worse than the start, and run every step.
    targeted: move towards the classes `y` instead of away from them.
    loss: 'ce', 'margin' (Carlini-Wagner, clamped at `kappa`) or 'dlr' (Croce & Hein,
      untargeted only).
    early_exit: with early_stop, leave the step loop once every example of every restart has
      succeeded (the same result, fewer steps); False runs every step.
    chunk_size: images per classifier call: the R x B images of a step run in chunks of about
      this size inside the program. None: CPU_CHUNK_SIZE on CPU, whole batches elsewhere; 0:
      whole batches. Chunking changes results only by float rounding.

  Returns:
    AttackResult of the best restart per example (successful and closest, else highest loss),
    with restart_success (B, restarts) for per-restart success rates.
  """
  if restarts > 1 and not random_start:
    raise UserError('restarts > 1 repeat the same deterministic run; set random_start=True')
  rule = steps.resolve(step_rule, step_size, threat.step_rule)
  runs = _attack(jax.random.split(key, restarts), logits_fn=logits_fn, threat=threat, y=y,
                 rule=rule, num_steps=num_steps, random_start=random_start,
                 early_stop=early_stop, early_exit=early_exit, targeted=targeted,
                 objective={'loss': loss, 'kappa': kappa}, chunk_size=chunk_size)
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
