"""Toy manifolds with exact generators, placed inside the [0, 1] box like images.

Concentric spheres (two classes, radii r0 < r1 around the box centre) and the circle
g(z) = c + r (cos 2 pi z, sin 2 pi z) with z ~ N(0, 1), labelled by the half of the turn.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

CENTRE = 0.5


@dataclasses.dataclass(frozen=True)
class Spheres:
  dim: int = 10
  radii: tuple = (0.3, 0.45)
  num_classes: int = 2

  def generate(self, z, label):
    """Point on sphere `label` in the direction of the Gaussian latent z (..., dim)."""
    radius = jnp.asarray(self.radii)[label]
    return CENTRE + radius[..., None] * z / jnp.linalg.norm(z, axis=-1, keepdims=True)

  def sample(self, key, num):
    label = (np.arange(num) % 2).astype(np.int32)
    z = jax.random.normal(key, (num, self.dim))
    return np.asarray(self.generate(z, label), np.float32), label, {'z': np.asarray(z)}


@dataclasses.dataclass(frozen=True)
class Circle:
  radius: float = 0.4
  num_classes: int = 2

  def generate(self, z):
    angle = 2.0 * jnp.pi * z[..., 0]
    return CENTRE + self.radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)], -1)

  def label(self, z):
    return (jnp.mod(z[..., 0], 1.0) >= 0.5).astype(jnp.int32)

  def sample(self, key, num):
    z = jax.random.normal(key, (num, 1))
    return (np.asarray(self.generate(z), np.float32), np.asarray(self.label(z)),
            {'z': np.asarray(z)})
