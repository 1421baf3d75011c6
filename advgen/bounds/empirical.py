"""Empirical robustness of a classifier f of generated data x = g(z), z ~ N(0, I) (Fawzi et al.).

Labels are the classifier's own predictions y = f(g(z)): robustness is the smallest change that
changes the prediction, so no ground truth is needed. Three notions, each estimated from above by
the distance of an adversarial point actually found (the bounds constrain the true minima, which
are no larger):

- r_Z, latent: the smallest ||r||_2 with f(g(z + r)) != y. DeepFool on `z -> f(g(z))` with no box,
  then a bisection along the segment from z to DeepFool's point for the first label change
  (DeepFool's overshoot would otherwise inflate the distance by 2%).
- r_in, in-distribution: the smallest ||g(z') - g(z)||_2 with f(g(z')) != y. Two candidates, the
  smaller kept: the image distance of the latent DeepFool point (`r_in_deepfool`), and a latent
  search (`r_in_search`) in the style of Carlini-Wagner: Adam on r minimizing
  ||g(z + r) - g(z)||^2 + c max(margin_y(f(g(z + r))), 0), started from the DeepFool point, with a
  per-example binary search over c; every iterate that changes the label is a candidate.
- r_unc, unconstrained: the smallest ||delta||_2 with f(x + delta) != y, x + delta in [0, 1].
  DeepFool in image space (refined along its segment), confirmed by a per-example bisection over
  epsilon with L2 PGD (`r_unc_pgd`, the distance of the closest success), and FAB's minimal L2
  perturbation (`r_unc_fab`, Croce & Hein 2020: it does not trust one linearization as DeepFool
  does); the smallest is kept.

A failed estimate is inf (its true value is unknown, and larger than what was searched). Every
function is jit-compiled and batched over examples; `logits_fn` and `decode_fn` are static (keep
one closure per model). In theory r_unc <= r_in, and r_in <= omega(r_Z) for a modulus omega of g.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from advgen import attacks
from advgen.attacks import canonical, losses, norms
from advgen.attacks.pytree import Pytree

_NO_BOUND = 1e10
_FAB_SETTINGS = {'num_steps': 'fab_steps', 'restarts': 'fab_restarts'}  # estimate's names


class Robustness(Pytree):
  """Per-example robustness estimates (B,) at x = g(z); inf where no adversarial point was found.

  y: the prediction at g(z) (the label robustness is measured against). r_z: latent. r_in:
  in-distribution, the smaller of r_in_deepfool and r_in_search. r_unc: unconstrained, the smallest
  of r_unc_deepfool, r_unc_pgd and r_unc_fab. z_adv: the latent point of r_z; x_in: the generated image of
  r_in; x_unc: the image of r_unc. image_norm: ||g(z)||_2.
  """
  y: jax.Array
  r_z: jax.Array
  r_in: jax.Array
  r_in_deepfool: jax.Array
  r_in_search: jax.Array
  r_unc: jax.Array
  r_unc_deepfool: jax.Array
  r_unc_pgd: jax.Array
  r_unc_fab: jax.Array
  image_norm: jax.Array
  z_adv: jax.Array
  x_in: jax.Array
  x_unc: jax.Array


def sample_latents(key, num, latent_dim):
  """z ~ N(0, I_d), (num, d), drawn flat (fast to compile on CPU)."""
  return jax.random.normal(key, (num * latent_dim,)).reshape(num, latent_dim)


def _changed(logits_fn, y):
  return lambda inputs: jnp.argmax(logits_fn(inputs), axis=-1) != y


def first_change(changed, start, end, found, steps):
  """Fraction s in (0, 1] of the segment start -> end at which the label has changed, per example.

  Bisection keeping `start + s (end - start)` adversarial (`changed` True), for examples with
  `found` (their `end` is adversarial); s = 1 elsewhere. The label need not be monotone along the
  segment: the result is some change point, never farther than `end`.
  """
  delta = end - start

  def halve(_, bracket):
    low, high = bracket
    mid = (low + high) / 2
    hit = changed(start + norms.expand(mid, delta) * delta) & found
    return jnp.where(hit, low, mid), jnp.where(hit, mid, high)

  ones = jnp.ones(start.shape[:1], start.dtype)
  _, high = jax.lax.fori_loop(0, steps, halve, (jnp.zeros_like(ones), ones))
  return high


@functools.partial(jax.jit, static_argnames=('logits_fn', 'decode_fn', 'max_iter', 'num_classes',
                                             'refine_steps'))
def latent_robustness(logits_fn, decode_fn, z, *, overshoot=0.02, max_iter=50, num_classes=None,
                      refine_steps=20):
  """(y, r_Z (B,), latent adversarial points (B, d)): DeepFool on f o g, refined on its segment."""
  composed = lambda v: logits_fn(decode_fn(v))
  y = jnp.argmax(composed(z), axis=-1)
  res = attacks.deepfool(composed, z, y, norm='l2', overshoot=overshoot, max_iter=max_iter,
                         num_classes=num_classes, box=None)
  s = first_change(_changed(composed, y), z, res.x_adv, res.success, refine_steps)
  z_adv = z + norms.expand(s, z) * (res.x_adv - z)
  r_z = jnp.where(res.success, norms.l2(z_adv - z), jnp.inf)
  return y, r_z, z_adv


@functools.partial(jax.jit, static_argnames=('logits_fn', 'decode_fn', 'binary_search_steps',
                                             'num_steps'))
def in_distribution_search(logits_fn, decode_fn, z, y, start, *, c_init=1.0,
                           binary_search_steps=5, num_steps=50, learning_rate=0.05):
  """min ||g(z') - g(z)||_2 over z' with f(g(z')) != y: a Carlini-Wagner-style latent search.

  Adam on r = z' - z minimizes ||g(z + r) - g(z)||^2 + c max(margin_y, 0) from `start` (B, d) (a
  latent point, e.g. DeepFool's), restarting at each of the binary-search steps over c (halve the
  bracket after a success, else raise c ten-fold until one succeeds). Returns (image distance of the
  closest adversarial generated image, inf if none; its latent point).
  """
  x = decode_fn(z)
  optimizer = optax.adam(learning_rate)
  r0 = start - z

  def penalized(r, c):
    image = decode_fn(z + r)
    logits = logits_fn(image)
    squared = jnp.sum(jnp.square(image - x), axis=tuple(range(1, x.ndim)))
    hinge = jnp.maximum(losses.margin(logits, y), 0.0)
    return jnp.sum(squared + c * hinge), (squared, logits)

  grad_fn = canonical.canonical_convolutions(jax.value_and_grad(penalized, has_aux=True))

  def record(best, r, squared, logits):
    best_sq, best_r, found = best
    hit = jnp.argmax(logits, axis=-1) != y
    better = hit & (squared < best_sq)
    return (jnp.where(better, squared, best_sq), jnp.where(better[:, None], r, best_r),
            found | hit)

  def search_step(carry, _):
    c, lower, upper, best_sq, best_r = carry

    def step(inner, _):
      r, opt_state, best = inner
      (_, (squared, logits)), grad = grad_fn(r, c)
      best = record(best, r, squared, logits)
      updates, opt_state = optimizer.update(grad, opt_state, r)
      return (optax.apply_updates(r, updates), opt_state, best), None

    best = (best_sq, best_r, jnp.zeros(y.shape, bool))
    (r, _, best), _ = jax.lax.scan(step, (r0, optimizer.init(r0), best), length=num_steps)
    _, (squared, logits) = penalized(r, c)
    best_sq, best_r, found = record(best, r, squared, logits)
    upper = jnp.where(found, jnp.minimum(upper, c), upper)
    lower = jnp.where(found, lower, jnp.maximum(lower, c))
    c = jnp.where(upper < _NO_BOUND, (lower + upper) / 2, c * 10)
    return (c, lower, upper, best_sq, best_r), None

  batch = z.shape[0]
  carry = (jnp.full((batch,), c_init, z.dtype), jnp.zeros((batch,), z.dtype),
           jnp.full((batch,), _NO_BOUND, z.dtype), jnp.full((batch,), jnp.inf, z.dtype), r0)
  (_, _, _, best_sq, best_r), _ = jax.lax.scan(search_step, carry, length=binary_search_steps)
  return jnp.sqrt(best_sq), z + best_r


@functools.partial(jax.jit, static_argnames=('logits_fn', 'max_iter', 'num_classes',
                                             'refine_steps', 'pgd_steps', 'bisection_steps',
                                             'restarts', 'fab_steps', 'fab_restarts'))
def unconstrained_robustness(logits_fn, x, y, key, *, overshoot=0.02, max_iter=50,
                             num_classes=None, refine_steps=20, pgd_steps=20, bisection_steps=8,
                             step_scale=2.5, restarts=1, bracket=2.0, max_radius=None,
                             fab_steps=100, fab_restarts=1):
  """(r_unc, r_unc_deepfool, r_unc_pgd, r_unc_fab, adversarial images) for images x (B, H, W, C)
  in [0, 1].

  DeepFool (box [0, 1]) refined along its segment gives r_unc_deepfool. Then a per-example
  bisection over epsilon runs L2 PGD (margin loss, step step_scale * eps / pgd_steps, early stop;
  from the centre, or `restarts` random starts drawn from `key`) in the ball (and box) of radius
  (low + high) / 2, all examples at their own radius: a success lowers `high` to the
  distance found, a failure raises `low`. It starts from [0, bracket * r_unc_deepfool] (its first
  radius is DeepFool's, so PGD confirms it or not), or [0, max_radius] (default the box diagonal)
  where DeepFool failed. r_unc_pgd is the closest PGD success (inf if none). r_unc_fab is the
  smallest L2 perturbation of untargeted FAB (`fab_steps` iterations, `fab_restarts` runs; 0 steps:
  no FAB, inf). r_unc is the smallest of the three; all of it is one program.
  """
  changed = _changed(logits_fn, y)
  res = attacks.deepfool(logits_fn, x, y, norm='l2', overshoot=overshoot, max_iter=max_iter,
                         num_classes=num_classes)
  s = first_change(changed, x, res.x_adv, res.success, refine_steps)
  x_df = x + norms.expand(s, x) * (res.x_adv - x)
  r_df = jnp.where(res.success, norms.l2(x_df - x), jnp.inf)
  if max_radius is None:
    max_radius = float(np.sqrt(np.prod(x.shape[1:])))

  def bisect(i, carry):
    low, high, r_pgd, x_pgd = carry
    epsilon = (low + high) / 2
    step_size = norms.expand(step_scale * epsilon / pgd_steps, x)
    attack = attacks.pgd(logits_fn, attacks.L2Ball(x, epsilon), y, jax.random.fold_in(key, i),
                         num_steps=pgd_steps, step_size=step_size, step_rule='l2',
                         restarts=restarts, random_start=restarts > 1, loss='margin')
    hit = attack.success
    distance = jnp.minimum(attack.distance, epsilon)
    closer = hit & (distance < r_pgd)
    return (jnp.where(hit, low, epsilon), jnp.where(hit, distance, high),
            jnp.where(closer, distance, r_pgd), jnp.where(norms.expand(closer, x), attack.x_adv,
                                                          x_pgd))

  high = jnp.where(res.success, bracket * r_df, max_radius)
  init = (jnp.zeros_like(high), high, jnp.full_like(high, jnp.inf), x)
  _, _, r_pgd, x_pgd = jax.lax.fori_loop(0, bisection_steps, bisect, init)
  use_pgd = r_pgd < r_df
  x_unc = jnp.where(norms.expand(use_pgd, x), x_pgd, x_df)
  r_fab = jnp.full_like(r_df, jnp.inf)
  if fab_steps:
    found = attacks.fab(logits_fn, x, y, jax.random.fold_in(key, bisection_steps), norm='l2',
                        num_steps=fab_steps, restarts=fab_restarts)
    r_fab = jnp.where(found.success, found.distance, jnp.inf)
    use_fab = r_fab < jnp.minimum(r_df, r_pgd)
    x_unc = jnp.where(norms.expand(use_fab, x), found.x_adv, x_unc)
  return jnp.minimum(jnp.minimum(r_df, r_pgd), r_fab), r_df, r_pgd, r_fab, x_unc


def estimate(logits_fn, decode_fn, z, key, *, deepfool=None, search=None, pgd=None, fab=None,
             refine_steps=20):
  """All three robustness estimates at x = g(z) for latents z (B, d); returns a `Robustness`.

  `deepfool`: overshoot, max_iter, num_classes (used in latent and image space). `search`: the
  latent search's c_init, binary_search_steps, num_steps, learning_rate. `pgd`: pgd_steps,
  bisection_steps, step_scale, restarts, bracket, max_radius of the unconstrained bisection. `fab`:
  num_steps (0: none) and restarts of its FAB-L2. Each
  part is one jit-compiled program, reused for every batch of the same shape.
  """
  deepfool, search, pgd = dict(deepfool or {}), dict(search or {}), dict(pgd or {})
  fab = {_FAB_SETTINGS.get(name, name): value for name, value in (fab or {}).items()}
  x = decode_fn(z)
  y, r_z, z_adv = latent_robustness(logits_fn, decode_fn, z, refine_steps=refine_steps, **deepfool)
  x_df = decode_fn(z_adv)
  r_in_df = jnp.where(jnp.isfinite(r_z), norms.l2(x_df - x), jnp.inf)
  start = jnp.where(jnp.isfinite(r_z)[:, None], z_adv, z)
  r_in_search, z_in = in_distribution_search(logits_fn, decode_fn, z, y, start, **search)
  x_in = jnp.where(norms.expand(r_in_search < r_in_df, x), decode_fn(z_in), x_df)
  r_unc, r_unc_df, r_unc_pgd, r_unc_fab, x_unc = unconstrained_robustness(
      logits_fn, x, y, key, refine_steps=refine_steps, **deepfool, **pgd, **fab)
  return Robustness(y=y, r_z=r_z, r_in=jnp.minimum(r_in_df, r_in_search), r_in_deepfool=r_in_df,
                    r_in_search=r_in_search, r_unc=r_unc, r_unc_deepfool=r_unc_df,
                    r_unc_pgd=r_unc_pgd, r_unc_fab=r_unc_fab, image_norm=norms.l2(x), z_adv=z_adv, x_in=x_in,
                    x_unc=x_unc)


@functools.partial(jax.jit, static_argnames=('logits_fn', 'decode_fn', 'num_classes'))
def predicted_classes(logits_fn, decode_fn, z, num_classes):
  """(predictions of f(g(z)) for z (N, B, d) in N batches, counts per class (C,), sum ||g(z)||).

  One lax.map over the batches: the measure of the classifier's regions in latent space and the
  mean image norm, from as many samples as wanted at one batch's memory.
  """
  def one(batch):
    images = decode_fn(batch)
    return jnp.argmax(logits_fn(images), axis=-1), norms.l2(images)

  labels, image_norms = jax.lax.map(one, z)
  counts = jnp.zeros((num_classes,), jnp.int32).at[labels.reshape(-1)].add(1)
  return labels, counts, jnp.sum(image_norms)


def class_probabilities(logits_fn, decode_fn, key, latent_dim, num_classes, num_samples,
                        batch_size=1000):
  """(P_i, E||g(z)||): the fraction of z ~ N(0, I) classified as i, and the mean image norm.

  P_i is the measure of the classifier's region i in latent space, the input of Theorem 1.
  num_samples is rounded up to a multiple of batch_size. Float64 numpy.
  """
  num_batches = -(-num_samples // batch_size)
  z = sample_latents(key, num_batches * batch_size, latent_dim)
  _, counts, norm_sum = predicted_classes(logits_fn, decode_fn,
                                          z.reshape(num_batches, batch_size, latent_dim),
                                          num_classes)
  total = num_batches * batch_size
  return np.asarray(counts, np.float64) / total, float(norm_sum) / total


def quantile(values, p):
  """The p-quantile of `values` counting inf (failed estimates) as larger than everything.

  numpy's 'inverted_cdf' (the smallest v with empirical CDF >= p), so that the fraction of values
  <= the result is at least p: the statistic the bound P(r <= eta*) >= p is about. inf when more
  than 1 - p of the estimates failed.
  """
  values = np.sort(np.asarray(values, np.float64))
  if values.size == 0:
    return float('nan')
  index = max(int(np.ceil(p * values.size)) - 1, 0)
  return float(values[index])


def empirical_cdf(values, radii):
  """Fraction of `values` <= each radius (inf never counts)."""
  values = np.sort(np.asarray(values, np.float64))
  return np.searchsorted(values, np.asarray(radii, np.float64), side='right') / values.size
