"""The classifier's step function: one update on a (possibly transformed) batch dict.

Training variants differ only in their `Variant` (`variants.py`): a batch transformation applied
to each batch with its own key before the update, and the loss of the transformed batch, so one
step and one loop serve them all.
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
