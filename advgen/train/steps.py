"""The classifier's step functions: one update on a (possibly transformed) batch dict, and free
adversarial training's replays.

Training variants differ only in their `Variant` (`variants.py`): a batch transformation applied
to each batch with its own key before the update, and the loss of the transformed batch, so one
step and one loop serve them all; free adversarial training alone replaces the step.
"""

import jax
import jax.numpy as jnp
import optax

from advgen import models


def train_step(state, batch, key, *, module, tx, variant):
  """One optimizer update on `batch` (image, label, ...); returns the new state and scalar
  metrics."""
  transform_key, dropout_key = jax.random.split(key)
  attacker_view = models.logits_fn(module, state.variables)
  batch = jax.lax.stop_gradient(variant.transform(attacker_view, batch, transform_key))

  def loss_fn(params):
    logits, batch_stats = models.apply_train(module, {**state.variables, 'params': params},
                                             batch['image'], dropout_key)
    return variant.loss(logits, batch), (logits, batch_stats)

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(params=optax.apply_updates(state.params, updates),
                            batch_stats=batch_stats, opt_state=opt_state)
  metrics = {'loss': loss, 'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['label']),
             'grad_norm': optax.tree.norm(grads)}
  return new_state, metrics


def free_train_step(state, batch, key, *, module, tx, epsilon, replays):
  """Free adversarial training (Shafahi et al., 2019): `replays` updates on the same batch, each
  one backward pass giving the gradient of the weights (applied) and of the input perturbation
  (a signed step of `epsilon`, clipped to the L-inf ball), which carries over to the next replay
  and the next batch. The images seen are clip(x + delta, 0, 1). Metrics average the replays."""
  x, y = batch['image'], batch['label']
  dropout_keys = jax.random.split(key, replays)

  def replay(state, dropout_key):
    def loss_fn(params, delta):
      inputs = jnp.clip(x + delta, 0.0, 1.0)
      logits, batch_stats = models.apply_train(module, {**state.variables, 'params': params},
                                               inputs, dropout_key)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      return loss, (logits, batch_stats)

    (loss, (logits, batch_stats)), (grads, delta_grad) = jax.value_and_grad(
        loss_fn, argnums=(0, 1), has_aux=True)(state.params, state.delta)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    delta = jnp.clip(state.delta + epsilon * jnp.sign(delta_grad), -epsilon, epsilon)
    state = state.replace(params=optax.apply_updates(state.params, updates),
                          batch_stats=batch_stats, opt_state=opt_state, delta=delta)
    metrics = {'loss': loss, 'accuracy': jnp.mean(jnp.argmax(logits, -1) == y),
               'grad_norm': optax.tree.norm(grads)}
    return state, metrics

  state, metrics = jax.lax.scan(replay, state, dropout_keys)
  return state, jax.tree.map(jnp.mean, metrics)
