"""Every registered classifier builds, runs forward and learns: one step lowers the loss."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from advgen import models
from advgen.errors import UserError

NUM_CLASSES = 5
# Small inputs and widths keep each model to a few seconds on a CPU; the layer structure (stages,
# blocks, strides, batch norm, dropout) is the registered one.
CASES = {
    'stutz_convnet': ((28, 28, 1), {}),
    'stutz_convnet_bn_relu': ((28, 28, 1), {}),
    'mlp': ((6, 6, 1), {'features': (32, 32)}),
    'lenet5': ((28, 28, 1), {}),
    'vgg': ((8, 8, 3), {'stages': ((8, 8), (16,)), 'hidden': 32}),
    'resnet_small': ((8, 8, 3), {'blocks_per_stage': (1, 1, 1), 'widths': (8, 16, 16)}),
    'resnet18': ((8, 8, 3), {'widths': (8, 8, 16, 16)}),
    'wide_resnet': ((8, 8, 3), {'depth': 10, 'width': 1, 'dropout': 0.1}),
}


def test_every_registered_classifier_is_covered():
  assert set(CASES) == set(models.CLASSIFIERS)


def _batch(shape, key=0, size=8):
  keys = jax.random.split(jax.random.key(key))
  x = jax.random.uniform(keys[0], (size,) + shape)
  y = jax.random.randint(keys[1], (size,), 0, NUM_CLASSES)
  return x, y


@pytest.mark.parametrize('name', sorted(CASES))
def test_forward_pass_and_one_step_lower_the_loss(name):
  shape, kwargs = CASES[name]
  module = models.classifier(name, NUM_CLASSES, **kwargs)
  variables = models.init(module, jax.random.key(1), shape)
  x, y = _batch(shape)

  params = variables['params']
  rest = {k: v for k, v in variables.items() if k != 'params'}
  optimizer = optax.sgd(0.05)

  def loss_fn(params, key):
    out, stats = models.apply_train(module, {'params': params, **rest}, x, key)
    return optax.softmax_cross_entropy_with_integer_labels(out, y).mean(), stats

  @jax.jit
  def run(params):
    """Everything in one compiled program: inference logits, one SGD step, the loss after."""
    logits = models.logits_fn(module, {'params': params, **rest})(x)
    few = models.logits_fn(module, {'params': params, **rest})(x[:3])
    (before, stats), grad = jax.value_and_grad(loss_fn, has_aux=True)(params, jax.random.key(2))
    updates, _ = optimizer.update(grad, optimizer.init(params), params)
    after, _ = loss_fn(optax.apply_updates(params, updates), jax.random.key(2))
    return logits, few, before, after, grad, stats

  logits, few, before, after, grad, stats = run(params)
  assert logits.shape == (8, NUM_CLASSES) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  assert np.std(np.asarray(logits)) > 0  # not a constant function of the input
  # Inference mode is per-example: no batch statistics leak across examples.
  np.testing.assert_allclose(few, logits[:3], rtol=1e-4, atol=1e-5)
  assert np.isfinite(before)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grad))
  assert sum(float(jnp.sum(jnp.abs(g))) for g in jax.tree.leaves(grad)) > 0
  assert float(after) < float(before)
  if 'batch_stats' in variables:
    changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), stats,
                           variables['batch_stats'])
    assert any(jax.tree.leaves(changed))  # training mode updates the running statistics


def test_model_errors_are_user_errors():
  with pytest.raises(UserError, match='unknown model'):
    models.classifier('alexnet', 10)
  with pytest.raises(UserError, match='bad settings'):
    models.classifier('mlp', 10, depth=3)
  with pytest.raises(UserError, match='6n\\+4'):
    models.classifier('wide_resnet', 10, depth=12)


def test_wide_resnet_and_resnet18_have_the_registered_structure():
  """WRN-16-4 is 3 stages of 2 blocks at widths 64/128/256; ResNet-18 4 stages of 2 blocks."""
  wrn = models.classifier('wide_resnet', 10)
  assert wrn.blocks_per_stage == (2, 2, 2) and wrn.widths == (64, 128, 256)
  r18 = models.classifier('resnet18', 10)
  assert r18.blocks_per_stage == (2, 2, 2, 2) and r18.widths == (64, 128, 256, 512)
  deep = models.classifier('wide_resnet', 10, depth=28, width=10)
  assert deep.blocks_per_stage == (4, 4, 4) and deep.widths == (160, 320, 640)
  # Lists from a JSON config become tuples (modules are static, hashable jit arguments).
  hash(models.classifier('mlp', 10, features=[16, 16]))


@pytest.mark.parametrize('name,linear', [('stutz_convnet', True), ('stutz_convnet_bn_relu', False)])
def test_stutz_convnet_dense_layers_follow_each_other_directly_as_in_the_authors_code(name, linear):
  """Default: logits = W2 (W1 f + b1) + b2 of the conv features f, no batch norm or ReLU between."""
  module = models.classifier(name, 10)
  variables = models.init(module, jax.random.key(3), (28, 28, 1))
  norms = [k for k in variables['batch_stats'] if k.startswith('BatchNorm')]
  assert len(norms) == (3 if linear else 4)  # one per conv layer (+ the hidden one)
  x, _ = _batch((28, 28, 1), size=16)
  logits, state = module.apply(variables, x, capture_intermediates=True, mutable=['intermediates'])
  hidden = state['intermediates']['Dense_0']['__call__'][0]
  dense = variables['params']['Dense_1']
  if linear:
    assert bool(jnp.any(hidden < 0))  # a ReLU after Dense_0 would zero these
    np.testing.assert_allclose(logits, hidden @ dense['kernel'] + dense['bias'], rtol=1e-5,
                               atol=1e-5)
  else:
    assert 'bias' not in variables['params']['Dense_0']  # batch norm follows it
