"""The training state pytree and the optimizer built from a config."""

from typing import Any

import flax.struct
import jax
import optax

from advgen import models
from advgen.errors import UserError


@flax.struct.dataclass
class TrainState:
  params: Any
  batch_stats: Any
  opt_state: Any

  @property
  def variables(self):
    if self.batch_stats is None:
      return {'params': self.params}
    return {'params': self.params, 'batch_stats': self.batch_stats}


def optimizer(config, steps_per_epoch):
  """(optax transform, learning-rate schedule) from config.optimizer.

  Weight decay is added to the gradient before the update rule (an L2 penalty, as in Stutz et
  al.); the learning rate decays by `lr_decay` once per epoch.
  """
  if config.learning_rate <= 0:
    raise UserError(f'config.optimizer.learning_rate must be positive, got {config.learning_rate}')
  if not 0 < config.lr_decay <= 1:
    raise UserError(f'config.optimizer.lr_decay must be in (0, 1], got {config.lr_decay}')
  schedule = optax.exponential_decay(config.learning_rate, steps_per_epoch, config.lr_decay,
                                     staircase=True)
  rules = {
      'adam': optax.scale_by_adam,
      'sgd': lambda: optax.trace(decay=config.get('momentum', 0.9), nesterov=True),
  }
  if config.name not in rules:
    raise UserError(f'unknown optimizer {config.name!r}; choose one of {", ".join(rules)}')
  tx = optax.chain(optax.add_decayed_weights(config.weight_decay), rules[config.name](),
                   optax.scale_by_learning_rate(schedule))
  return tx, schedule


def create(module, tx, key, input_shape):
  variables = models.init(module, key, input_shape)
  params = variables['params']
  return TrainState(params, variables.get('batch_stats'), tx.init(params))


def stack(states):
  """K states into one pytree with a leading model axis, for vmapped training."""
  return jax.tree.map(lambda *leaves: jax.numpy.stack(leaves), *states)
