"""Where training arrays live: committed to the one device, or on a 1-D `data` mesh."""

import jax
from jax.sharding import NamedSharding, PartitionSpec as P

from advgen.errors import UserError


def data_mesh():
  return jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicate(tree):
  """Copies on every device of the data mesh; on one device, arrays committed to it.

  XLA:CPU runs programs over mesh-sharded inputs several times slower even on a one-device mesh,
  and committed arrays match what orbax restores, so a resumed run reuses the compiled step.
  """
  if jax.device_count() == 1:
    return jax.device_put(tree, jax.devices()[0])
  return jax.device_put(tree, NamedSharding(data_mesh(), P()))


def batch_sharding():
  """Batch axis 1 (after the model axis) split over the data mesh; None on one device, where the
  constraint only slows XLA:CPU down (about 10x)."""
  return NamedSharding(data_mesh(), P(None, 'data')) if jax.device_count() > 1 else None


def check_batch_size(batch_size):
  if batch_size % jax.device_count():
    raise UserError(f'config.batch_size={batch_size} must be divisible by the '
                    f'{jax.device_count()} devices')
