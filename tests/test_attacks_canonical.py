"""The convolution rewrite that keeps attack loops fast on CPU changes no number."""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from advgen.attacks.canonical import canonical_convolutions

_KEYS = jax.random.split(jax.random.key(0), 4)
_K1 = jax.random.normal(_KEYS[0], (3, 3, 2, 4))
_K2 = jax.random.normal(_KEYS[1], (3, 3, 2, 4))  # grouped: 2 groups of 2 -> 2 features each


@jax.jit  # a nested jit: its jaxpr is inlined by the rewrite
def conv_net(x):
  h = jnp.tanh(lax.conv_general_dilated(x, _K1, (2, 2), 'SAME',
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
  h = lax.conv_general_dilated(h, _K2, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                               feature_group_count=2)
  return jnp.sum(h**2, axis=(1, 2, 3))


def _rhs_specs(fn, x):
  """Kernel dimension specs of every convolution in `fn`'s jaxpr, nested jits included."""
  specs = []

  def visit(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive is lax.conv_general_dilated_p:
        specs.append((eqn.params['dimension_numbers'].rhs_spec, eqn.params['feature_group_count']))
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        visit(sub)

  visit(jax.make_jaxpr(fn)(x).jaxpr)
  return specs


def test_input_gradients_match_and_every_ungrouped_kernel_is_canonical():
  x = jax.random.uniform(_KEYS[2], (3, 8, 8, 2))
  grad = jax.grad(lambda v: conv_net(v).sum())
  rewritten = canonical_convolutions(grad)
  # Gradients reach ~30: another convolution layout reorders float sums by ~1e-6 of that.
  np.testing.assert_allclose(rewritten(x), grad(x), rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(jax.vmap(rewritten)(x[:, None]), jax.vmap(grad)(x[:, None]),
                             rtol=1e-5, atol=1e-4)
  before, after = _rhs_specs(grad, x), _rhs_specs(rewritten, x)
  assert any(spec != (3, 2, 0, 1) for spec, groups in before if groups == 1)  # JAX's 'OI' form
  assert all(spec == (3, 2, 0, 1) for spec, groups in after if groups == 1)
  assert any(groups == 2 for _, groups in after)


def test_values_pytrees_and_auxiliary_outputs_pass_through():
  x = jax.random.uniform(_KEYS[3], (2, 8, 8, 2))
  fn = jax.value_and_grad(lambda v: (conv_net(v).sum(), {'per_example': conv_net(v)}),
                          has_aux=True)
  (value, aux), grad = canonical_convolutions(fn)(x)
  (value0, aux0), grad0 = fn(x)
  np.testing.assert_allclose(value, value0, rtol=1e-6)
  np.testing.assert_allclose(aux['per_example'], aux0['per_example'], rtol=1e-6)
  np.testing.assert_allclose(grad, grad0, rtol=1e-5, atol=1e-5)
