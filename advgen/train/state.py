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

  @property
  def eval_params(self):
    """The params to evaluate and use after training."""
    return self.params


@flax.struct.dataclass
class AveragedTrainState(TrainState):
  """A state that also keeps a moving average of its params (`average_params`), which is
  what evaluation uses. A subclass, so that checkpoints of plain states keep their layout."""
  ema_params: Any

  @property
  def eval_params(self):
    return self.ema_params


@flax.struct.dataclass
class PerturbedTrainState(TrainState):
  """A state that also carries an input perturbation from step to step, as free adversarial
  training does (Shafahi et al., 2019). A subclass, so that plain checkpoints keep their layout."""
  delta: Any


def optimizer(config, steps_per_epoch):
  """(optax transform, learning-rate schedule) from config.optimizer.

  Weight decay is added to the gradient before the update rule (an L2 penalty, as in Stutz et
  al.); the learning rate decays by `lr_decay` once per epoch. Adam's first-moment decay `b1`
  defaults to 0.9; GANs train better with 0.5 (Radford et al.).
  """
  if config.learning_rate <= 0:
    raise UserError(f'config.optimizer.learning_rate must be positive, got {config.learning_rate}')
  if not 0 < config.lr_decay <= 1:
    raise UserError(f'config.optimizer.lr_decay must be in (0, 1], got {config.lr_decay}')
  b1 = config.get('b1', 0.9)
  if not 0 <= b1 < 1:
    raise UserError(f'config.optimizer.b1 must be in [0, 1), got {b1}')
  schedule = optax.exponential_decay(config.learning_rate, steps_per_epoch, config.lr_decay,
                                     staircase=True)
  rules = {
      'adam': lambda: optax.scale_by_adam(b1=b1),
      'sgd': lambda: optax.trace(decay=config.get('momentum', 0.9), nesterov=True),
  }
  if config.name not in rules:
    raise UserError(f'unknown optimizer {config.name!r}; choose one of {", ".join(rules)}')
  tx = optax.chain(optax.add_decayed_weights(config.weight_decay), rules[config.name](),
                   optax.scale_by_learning_rate(schedule))
  return tx, schedule


def create(module, tx, key, input_shape, average=False, delta_shape=None):
  """Initial state; with `average`, one that also keeps a moving average of its params; with
  `delta_shape`, one that carries a zero perturbation of that shape."""
  variables = models.init(module, key, input_shape)
  params = variables['params']
  if average:
    return AveragedTrainState(params, variables.get('batch_stats'), tx.init(params), params)
  if delta_shape is not None:
    return PerturbedTrainState(params, variables.get('batch_stats'), tx.init(params),
                               jax.numpy.zeros(delta_shape, jax.numpy.float32))
  return TrainState(params, variables.get('batch_stats'), tx.init(params))


def average_params(state, step, decay):
  """Updates the moving average of params after update number `step` (counted from 0).

  The average is the bias-corrected exponential moving average (as in Adam) of the params after
  each update, sum_i decay^(t-i) p_i / sum_i decay^(t-i) over the t = step + 1 updates so far,
  so the initial params carry no weight. Averaging the iterates of GAN training gives better
  samples than the last iterate (Yazici et al., 2019).
  """
  kept = decay * (1 - decay ** step) / (1 - decay ** (step + 1))
  return state.replace(ema_params=jax.tree.map(lambda a, p: kept * a + (1 - kept) * p,
                                               state.ema_params, state.params))
