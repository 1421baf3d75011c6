"""Auto-PGD (Croce & Hein, ICML 2020): PGD with momentum whose step size adapts itself at
checkpoints, the first attacks of AutoAttack (APGD-CE, APGD-DLR and the targeted APGD-T).

The step rules follow the authors' reference code (fra31/auto-attack, `autopgd_base.py`):

- L-inf and L2: start at x + eps * t / ||t|| (t uniform in [-1, 1]^n for L-inf, Gaussian for
  L2), projected; step eta = 2 eps along sign(g) (L-inf) or g / ||g||_2 (L2); z = P(x_k + eta d),
  x_{k+1} = P(x_k + 0.75 (z - x_k) + 0.25 (x_k - x_{k-1})), without momentum on the first step.
  At each checkpoint (`checkpoints`) the step halves where `halve_step` says so, and those
  examples continue from their highest-loss iterate and its gradient.
- L1 ("Mind the box", Croce & Hein, ICML 2021, as the reference code implements it): start at
  the projection of x + N(0, I); eta = eps; the step moves the signs of the top `density` share
  of gradient magnitudes (20% at first), normalized to unit L1 norm, then projects (no momentum).
  Every 4% of the steps: where the best point's perturbation got >= 5% sparser since the last
  checkpoint, the step resets to eps and the search continues from the best point; elsewhere the
  step shrinks by 1.5 (down to eps / 10). The density becomes the best point's / 1.5.

Projections are the threat model's exact ones onto ball and box (the reference code projects
L2 steps onto the ball, then clips to the box).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from advgen.attacks import losses, norms, result
from advgen.attacks.pgd import (_evaluator, _Iterate, _keep, _pick_restart, chunked,
                                resolve_chunk_size)
from advgen.attacks.pytree import Pytree
from advgen.errors import UserError

LOSSES = ('ce', 'dlr', 'dlr_targeted')
MOMENTUM = 0.75  # the weight of the new step; 1 - MOMENTUM carries the last one over
_INITIAL_STEP = {'sign': 2.0, 'l2': 2.0, 'l1': 1.0}  # eta_0 / epsilon per step rule
_TINY = 1e-12  # the reference code's guard of normalizations
# L1 (reference code): checkpoint period, step shrink factor and smallest step (per epsilon),
# the sparsity gain that resets the step, the first step's density.
_L1_PERIOD, _L1_SHRINK, _L1_MIN_STEP, _L1_SPARSER, _L1_DENSITY = 0.04, 1.5, 0.1, 0.95, 0.2
_EOT_STREAM = 1 << 20  # fold_in of a restart key that gives the draws of a randomized model


def checkpoints(num_steps, step_rule='sign'):
  """Step counts after which the step-size rule runs, as in the authors' code.

  L-inf / L2: Croce & Hein's p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)
  with every length (22%, 3%, 6% of the steps) floored to whole steps, at least one: 22, 41, 57,
  70, 80, 87, 93, 99 for 100 steps. L1: every 4% of the steps.
  """
  if step_rule == 'l1':
    period = max(int(_L1_PERIOD * num_steps), 1)
    return tuple(range(period, num_steps + 1, period))
  period, shortest, decrease = (max(int(f * num_steps), 1) for f in (0.22, 0.06, 0.03))
  out, at = [], period
  while at <= num_steps:
    out.append(at)
    period = max(period - decrease, shortest)
    at += period
  return tuple(out)


def halve_step(increases, period, best_loss, best_loss_at_check, halved_at_check, rho):
  """The L-inf/L2 checkpoint rule per example: halve the step if the loss rose on at most `rho`
  of the `period` steps since the last checkpoint (condition 1; the authors' code compares with
  <=, the paper with <), or if the step was not halved at the last checkpoint and the best loss
  has not risen since (condition 2)."""
  oscillating = increases <= rho * period
  stalled = ~halved_at_check & (best_loss <= best_loss_at_check)
  return oscillating | stalled


class _Halving(Pytree):
  """L-inf/L2 checkpoint state: steps whose loss rose since the last checkpoint, the best loss
  and whether the step halved there."""
  increases: jax.Array
  best_loss_at_check: jax.Array
  halved_at_check: jax.Array


class _Sparsity(Pytree):
  """L1 checkpoint state: the share of coordinates a step moves, and the nonzero coordinates of
  the best perturbation at the last checkpoint."""
  density: jax.Array
  nonzeros: jax.Array


class _State(Pytree):
  """One restart's search over a batch, as the authors' code carries it."""
  v: jax.Array  # the current iterate
  previous: jax.Array  # the iterate before the last step (momentum)
  grad: jax.Array  # gradient of the objective at v
  loss: jax.Array  # the objective at the last evaluated iterate
  scale: jax.Array  # the step size over its initial value
  best_v: jax.Array  # the highest-loss iterate, where a checkpoint restarts
  best_grad: jax.Array
  best_loss: jax.Array
  control: Pytree  # _Halving or _Sparsity
  kept: _Iterate  # the first successful iterate, else the highest-loss one (the result)


def _start(threat, key):
  """The authors' random start of one restart."""
  centre = threat.init()
  if threat.step_rule == 'l1':
    return threat.project(centre + jax.random.normal(key, centre.shape, centre.dtype))
  if threat.step_rule == 'sign':
    t = jax.random.uniform(key, centre.shape, centre.dtype, -1.0, 1.0)
    size = norms.linf(t)
  else:
    t = jax.random.normal(key, centre.shape, centre.dtype)
    size = norms.l2(t)
  return threat.project(centre + threat.radius() * t / norms.expand(size + _TINY, t))


def _sparse_direction(grad, density):
  """The authors' L1 direction: signs of the top `density` share of |grad|, unit L1 norm."""
  magnitude = jnp.abs(grad.reshape(grad.shape[0], -1))
  n = magnitude.shape[1]
  index = jnp.clip(((1.0 - density) * n).astype(jnp.int32), 0, n - 1)
  threshold = jnp.take_along_axis(jnp.sort(magnitude, axis=-1), index[:, None], axis=-1)[:, 0]
  signs = jnp.sign(grad) * (jnp.abs(grad) >= norms.expand(threshold, grad))
  return signs / norms.expand(norms.l1(signs) + 1e-10, signs)


def _propose(threat, state, i):
  """The next iterate of one restart from its current one (step `i`, 0-based)."""
  eta = _INITIAL_STEP[threat.step_rule] * norms.expand(state.scale, state.v) * threat.radius()
  if threat.step_rule == 'l1':
    return threat.project(state.v + eta * _sparse_direction(state.grad, state.control.density))
  z = threat.project(state.v + eta * norms.DIRECTIONS[threat.step_rule](state.grad))
  alpha = jnp.where(i == 0, 1.0, MOMENTUM)
  return threat.project(state.v + alpha * (z - state.v) + (1 - alpha) * (state.v - state.previous))


def _initial(threat, v, loss, logits, grad, y):
  """One restart's state at its start `v`, which counts as its first iterate."""
  if threat.step_rule == 'l1':
    control = _Sparsity(jnp.full_like(loss, _L1_DENSITY), jnp.full_like(loss, v[0].size))
  else:
    control = _Halving(jnp.zeros(loss.shape, jnp.int32), loss, jnp.ones(loss.shape, bool))
  kept = _Iterate(v, loss, losses.success(logits, y, False), logits)
  return _State(v=v, previous=v, grad=grad, loss=loss, scale=jnp.ones_like(loss), best_v=v,
                best_grad=grad, best_loss=loss, control=control, kept=kept)


def _checkpoint(threat, state, control, period, rho):
  """`(control, scale, restart)` after a checkpoint over `period` steps (per example)."""
  if threat.step_rule == 'l1':
    nonzeros = jnp.sum((state.best_v != threat.init()).reshape(state.v.shape[0], -1), axis=-1)
    nonzeros = nonzeros.astype(state.loss.dtype)
    sparser = nonzeros < _L1_SPARSER * control.nonzeros
    scale = jnp.clip(jnp.where(sparser, 1.0, state.scale / _L1_SHRINK), _L1_MIN_STEP, 1.0)
    density = nonzeros / state.v[0].size / _L1_SHRINK
    return _Sparsity(density, nonzeros), scale, sparser
  halve = halve_step(control.increases, period, state.best_loss, control.best_loss_at_check,
                     control.halved_at_check, rho)
  control = _Halving(jnp.zeros_like(control.increases), state.best_loss, halve)
  return control, jnp.where(halve, state.scale / 2, state.scale), halve


def _update(threat, y, schedule, rho, i, state, v, loss, logits, grad):
  """One restart's state after evaluating its new iterate `v` at step `i`."""
  success = losses.success(logits, y, False)
  kept = _keep(state.kept, _Iterate(v, loss, success, logits), early_stop=True)
  better = loss > state.best_loss
  pick = lambda new, old: jnp.where(norms.expand(better, new), new, old)
  control = state.control
  if isinstance(control, _Halving):
    control = control.replace(increases=control.increases + (loss > state.loss))
  state = state.replace(best_v=pick(v, state.best_v), best_grad=pick(grad, state.best_grad),
                        best_loss=pick(loss, state.best_loss), kept=kept)
  is_check, period = schedule[0][i], schedule[1][i]
  checked, scale, restart = _checkpoint(threat, state, control, period, rho)
  control = jax.tree.map(lambda new, old: jnp.where(is_check, new, old), checked, control)
  restart &= is_check
  back = lambda best, new: jnp.where(norms.expand(restart, new), best, new)
  return state.replace(v=back(state.best_v, v), previous=state.v,
                       grad=back(state.best_grad, grad), loss=loss,
                       scale=jnp.where(is_check, scale, state.scale), control=control)


def _schedule(num_steps, step_rule):
  """Per step (0-based): whether a checkpoint follows it, and the steps since the last one."""
  is_check, period = np.zeros(num_steps, bool), np.zeros(num_steps, np.int32)
  last = 0
  for at in checkpoints(num_steps, step_rule):
    is_check[at - 1], period[at - 1], last = True, at - last, at
  return jnp.asarray(is_check), jnp.asarray(period)


def _expectation(logits_fn, eot_iter, key, **settings):
  """`(v, i) -> _evaluator's outputs` at step `i`: for a randomized `logits_fn(images, key)`, the
  objective, logits and gradient averaged over `eot_iter` draws (expectation over
  transformation, Athalye et al. 2018), fresh draws at every step; None: one deterministic call."""
  if eot_iter is None:
    evaluate = _evaluator(logits_fn, **settings)
    return lambda v, i: evaluate(v)

  def evaluate(v, i):
    draw = lambda k: _evaluator(lambda images: logits_fn(images, k), **settings)(v)
    draws = jax.lax.map(draw, jax.random.split(jax.random.fold_in(key, i), eot_iter))
    return jax.tree.map(lambda a: jnp.mean(a, axis=0), draws)

  return evaluate


def _run(keys, target, done, *, logits_fn, threat, y, num_steps, loss, rho, early_exit,
         chunk_size, eot_iter):
  """All restarts (one per key) stacked on axis 0; returns each one's kept iterate (R, B, ...).

  `done` (B,) marks examples whose result is already fixed (an earlier target succeeded): the
  step loop exits once every other example has succeeded in every restart.
  """
  evaluate = _expectation(logits_fn, eot_iter, jax.random.fold_in(keys[0], _EOT_STREAM),
                          threat=threat, y=y, loss=loss, targeted=False, kappa=0.0,
                          chunk_size=chunk_size, target=target)
  v0 = jax.vmap(lambda k: _start(threat, k))(keys)
  value, logits, grad = evaluate(v0, 0)  # the gradient of -objective (optax's sign)
  state = jax.vmap(lambda *a: _initial(threat, *a, y))(v0, value, logits, -grad)
  schedule = _schedule(num_steps, threat.step_rule)

  def step(carry):
    i, state = carry
    v = jax.vmap(lambda s: _propose(threat, s, i))(state)
    value, logits, grad = evaluate(v, i + 1)
    update = functools.partial(_update, threat, y, schedule, rho, i)
    return i + 1, jax.vmap(update)(state, v, value, logits, -grad)

  # A successful example's kept iterate is final and examples are independent, so leaving the
  # loop once all have succeeded gives the result of running every step; both variants run the
  # same loop, so they compile to the same arithmetic.
  if early_exit:
    running = lambda c: (c[0] < num_steps) & ~jnp.all(done | c[1].kept.success)
  else:
    running = lambda c: c[0] < num_steps
  _, state = jax.lax.while_loop(running, step, (jnp.zeros((), jnp.int32), state))
  return state.kept


@functools.partial(jax.jit, static_argnames=('logits_fn', 'num_steps', 'restarts', 'loss',
                                             'num_targets', 'early_exit', 'chunk_size',
                                             'eot_iter'))
def apgd(logits_fn, threat, y, key, *, num_steps=100, restarts=1, loss='ce', num_targets=9,
         rho=0.75, early_exit=True, chunk_size=None, eot_iter=None):
  """Auto-PGD of `loss` inside `threat` (see the module docstring for the step rules).

  Args:
    logits_fn: images -> logits, a pure closure over the model (static: reuse one function).
    threat: a threat model of `advgen.attacks.threat` (batch of B); its step_rule ('sign', 'l2',
      'l1') picks the version: LinfBall, L2Ball, L1Ball (latent and transformation balls run
      the L-inf version).
    y: (B,) int labels. Success is always misclassification, also for 'dlr_targeted'.
    key: fixes every random choice (one key per target and restart is split from it).
    num_steps: iterations per run (100 in AutoAttack).
    restarts: independent runs per target, vmapped; the successful one of smallest distance is
      kept, else the one of highest loss.
    loss: 'ce' (APGD-CE), 'dlr' (APGD-DLR) or 'dlr_targeted' (APGD-T): one run per target,
      the targets being the 2nd to (num_targets + 1)-th largest clean logits, in that order;
      an example keeps its first target's success.
    num_targets: targets of 'dlr_targeted' (9 in AutoAttack; at most classes - 1); other losses
      ignore it.
    rho: the share of loss increases between checkpoints below which the step halves (L-inf, L2).
    early_exit: leave the step loop once every example of every restart has succeeded (the
      same result, fewer steps); False runs every step.
    chunk_size: images per classifier call, as in `pgd` (None: CPU_CHUNK_SIZE on CPU).
    eot_iter: None: `logits_fn(images)` is deterministic. A number: `logits_fn(images, key)` is a
      randomized model (a fresh draw per key), and every evaluation averages the objective, its
      gradient and the logits over eot_iter draws (AutoAttack's `rand` version: 20).

  Returns:
    AttackResult: per example its first successful iterate (the start counts), else its
    highest-loss one; restart_success (B, restarts) says which restarts succeeded (for any
    target).
  """
  if loss not in LOSSES:
    raise UserError(f'unknown APGD loss {loss!r}; choose one of {", ".join(LOSSES)}')
  if num_steps < 1 or restarts < 1 or (eot_iter is not None and eot_iter < 1):
    raise UserError(f'apgd needs num_steps, restarts and eot_iter >= 1, got {num_steps}, '
                    f'{restarts} and {eot_iter}')
  run = functools.partial(_run, logits_fn=logits_fn, threat=threat, y=y, num_steps=num_steps,
                          loss=loss, rho=rho, early_exit=early_exit, chunk_size=chunk_size,
                          eot_iter=eot_iter)
  if loss != 'dlr_targeted':
    runs = run(jax.random.split(key, restarts), None, jnp.zeros(y.shape, bool))
    best, restart_success = _pick_restart(threat, runs), runs.success.T
  else:
    model = logits_fn if eot_iter is None else lambda images: logits_fn(images, key)
    clean = chunked(model, resolve_chunk_size(chunk_size), threat.to_input(threat.init()))
    losses.check_classes('dlr_targeted', clean.shape[-1])  # before the targets' range
    if not 1 <= num_targets <= clean.shape[-1] - 1:
      raise UserError(f'num_targets must be in [1, classes - 1 = {clean.shape[-1] - 1}], got '
                      f'{num_targets}')
    targets = jax.lax.top_k(clean, num_targets + 1)[1][:, 1:]

    def per_target(carry, inputs):
      chosen, succeeded = carry
      target, keys = inputs
      runs = run(keys, target, chosen.success)
      chosen = _keep(chosen, _pick_restart(threat, runs), early_stop=True)
      return (chosen, succeeded | runs.success), None

    v = threat.init()
    none = _Iterate(v, jnp.full(y.shape, -jnp.inf, clean.dtype), jnp.zeros(y.shape, bool),
                        jnp.zeros_like(clean))
    (best, succeeded), _ = jax.lax.scan(
        per_target, (none, jnp.zeros((restarts,) + y.shape, bool)),
        (targets.T, jax.random.split(key, (num_targets, restarts))))
    restart_success = succeeded.T
  return result.build(x_adv=threat.to_input(best.v), v=best.v,
                      reference=threat.to_input(threat.init()), distance=threat.distance(best.v),
                      success=best.success, logits=best.logits, loss=best.loss,
                      restart_success=restart_success)
