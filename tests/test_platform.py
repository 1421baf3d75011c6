"""Guards against XLA:CPU builds that compile code our attacks and bounds rely on wrongly."""

import jax
import jax.numpy as jnp
import numpy as np


def test_jit_agrees_with_eager_on_vmapped_matvec_and_reduce():
  # jax-ml/jax#39103: jaxlib 0.10.2 returned a wrong sum here under jit.
  i = jnp.arange(32_769, dtype=jnp.float32)
  x = jnp.stack((i, jnp.zeros_like(i), jnp.zeros_like(i)), axis=1)
  matrix = jnp.eye(3)
  f = lambda x: jax.vmap(lambda row: jnp.sum((matrix @ row) ** 2))(x)
  np.testing.assert_allclose(jax.jit(f)(x)[-1], f(x)[-1], rtol=1e-6)
