"""Input gradients whose convolutions XLA:CPU runs on its fast path, also inside loops.

JAX differentiates a convolution with respect to its input as a convolution whose kernel is
labelled output-major ('OI'). XLA:CPU rewrites such convolutions into the layout its Eigen kernels
need only in a program's top-level computation, so inside the `lax.scan`/`while_loop` of an attack
they fall back to a naive loop, 3-4x slower than the same gradient outside a loop.
`canonical_convolutions` re-emits them with an explicitly transposed (spatial, in, out) kernel: the
same numbers, and a negligible transpose of the weights on other backends.
"""

import jax
from jax import lax
from jax.extend import core

_INLINED_CALLS = ('pjit', 'jit', 'closed_call')


def _convolution(lhs, rhs, *, dimension_numbers, **params):
  out_dim, in_dim, *spatial = dimension_numbers.rhs_spec
  order = (*spatial, in_dim, out_dim)
  grouped = params['feature_group_count'] != 1 or params['batch_group_count'] != 1
  if grouped or order == tuple(range(rhs.ndim)):
    return lax.conv_general_dilated_p.bind(lhs, rhs, dimension_numbers=dimension_numbers,
                                           **params)
  canonical = dimension_numbers._replace(rhs_spec=(rhs.ndim - 1, rhs.ndim - 2,
                                                   *range(rhs.ndim - 2)))
  return lax.conv_general_dilated_p.bind(lhs, rhs.transpose(order), dimension_numbers=canonical,
                                         **params)


def _evaluate(jaxpr, consts, *args):
  """Evaluates `jaxpr`, inlining nested jit calls and re-emitting convolutions."""
  env = dict(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  read = lambda var: var.val if isinstance(var, core.Literal) else env[var]
  for eqn in jaxpr.eqns:
    inputs = [read(var) for var in eqn.invars]
    if eqn.primitive is lax.conv_general_dilated_p:
      outputs = [_convolution(*inputs, **eqn.params)]
    elif eqn.primitive.name in _INLINED_CALLS:
      inner = eqn.params.get('jaxpr') or eqn.params['call_jaxpr']
      outputs = _evaluate(inner.jaxpr, inner.consts, *inputs)
    else:
      with eqn.ctx.manager:
        outputs = eqn.primitive.bind(*inputs, **eqn.primitive.get_bind_params(eqn.params))
      if not eqn.primitive.multiple_results:
        outputs = [outputs]
    env.update(zip(eqn.outvars, outputs))
  return [read(var) for var in jaxpr.outvars]


def canonical_convolutions(fn):
  """`fn` with every ungrouped convolution given a (spatial..., in, out) kernel."""

  def wrapped(*args):
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    outputs = _evaluate(closed.jaxpr, closed.consts, *jax.tree.leaves(args))
    return jax.tree.unflatten(jax.tree.structure(out_shape), outputs)

  return wrapped
