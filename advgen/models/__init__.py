"""Models by name, and the plain functions through which the rest of advgen sees them.

`model.apply` appears only here: downstream code gets closures such as `logits_fn(x)`.
"""

import functools

import jax.numpy as jnp

from advgen.errors import UserError
from advgen.models import classifiers
from advgen.models import generators  # noqa: F401  (VAE, VAE-GAN, DCGAN)


def _wide_resnet(num_classes, depth=16, width=4, dropout=0.0):
  if (depth - 4) % 6:
    raise UserError(f'wide_resnet depth must be 6n+4 (e.g. 16, 22, 28), got {depth}')
  n = (depth - 4) // 6
  return classifiers.ResNet(num_classes, (n, n, n), (16 * width, 32 * width, 64 * width),
                            dropout)


CLASSIFIERS = {
    'stutz_convnet': classifiers.StutzConvNet,
    'stutz_convnet_bn_relu': functools.partial(classifiers.StutzConvNet, hidden_bn_relu=True),
    'mlp': classifiers.MLP,
    'lenet5': classifiers.LeNet5,
    'vgg': classifiers.VGG,
    'resnet_small': classifiers.ResNet,
    'resnet18': functools.partial(classifiers.ResNet, blocks_per_stage=(2, 2, 2, 2),
                                  widths=(64, 128, 256, 512)),
    'wide_resnet': _wide_resnet,
}


def _tuples(value):
  """Lists (as a config read back from JSON gives) as tuples: modules are static jit arguments."""
  return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def check_classifier_name(name):
  if name not in CLASSIFIERS:
    raise UserError(f'unknown model {name!r}; choose one of {", ".join(CLASSIFIERS)}')


def classifier(name, num_classes, **kwargs):
  """The Flax module registered as `name`."""
  check_classifier_name(name)
  try:
    return CLASSIFIERS[name](num_classes=num_classes,
                             **{k: _tuples(v) for k, v in kwargs.items()})
  except TypeError as e:
    raise UserError(f'bad settings for model {name!r}: {e}') from None


def init(module, key, input_shape):
  """Variables ({'params', maybe 'batch_stats'}) for inputs of shape `input_shape` (no batch)."""
  return module.init(key, jnp.zeros((1,) + tuple(input_shape), jnp.float32), train=False)


def apply_train(module, variables, x, key=None):
  """Logits with batch statistics; returns (logits, new batch_stats or None)."""
  mutable = ['batch_stats'] if 'batch_stats' in variables else []
  rngs = {'dropout': key} if key is not None else {}
  logits, updates = module.apply(variables, x, train=True, mutable=mutable, rngs=rngs)
  return logits, updates.get('batch_stats')


def logits_fn(module, variables):
  """`x -> logits` in inference mode: the closure attacks and evaluation work with."""
  return lambda x: module.apply(variables, x, train=False)
