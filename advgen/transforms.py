"""Differentiable 6-parameter affine warp (a spatial transformer).

One implementation serves the fonts generator, adversarial transformations and augmentation, so
that the "true manifold" used to make the data is exactly the one attacked.

Parameters theta = (tx, ty, shx, shy, s, r): translation, shear, scale (below 1 enlarges),
rotation in radians. The matrix maps output to input coordinates in [-1, 1] (corner aligned):
  A = [[s(cos r - sin r shx), s(-sin r + cos r shx), tx],
       [s(cos r shy + sin r), s(-sin r shy + cos r), ty]]
"""

import jax
import jax.numpy as jnp
import numpy as np

NUM_PARAMS = 6
IDENTITY = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 0.0], np.float32)

# (low, high) per parameter, from Stutz et al. (2019): "hard" is the paper's default.
RANGES = {
    'hard': np.array([[-0.2, -0.2, -0.5, -0.5, 0.75, -np.pi / 2],
                      [0.2, 0.2, 0.5, 0.5, 1.15, np.pi / 2]], np.float32),
    'medium': np.array([[-0.2, -0.2, -0.4, -0.4, 0.85, -np.pi / 3],
                        [0.2, 0.2, 0.4, 0.4, 1.15, np.pi / 3]], np.float32),
    'easy': np.array([[-0.1, -0.1, -0.2, -0.2, 0.9, -np.pi / 6],
                      [0.1, 0.1, 0.2, 0.2, 1.1, np.pi / 6]], np.float32),
}


def affine_matrix(theta):
  """The 2x3 output-to-input matrix of `theta` (..., 6)."""
  tx, ty, shx, shy, s, r = jnp.moveaxis(theta, -1, 0)
  cos, sin = jnp.cos(r), jnp.sin(r)
  row0 = jnp.stack([s * (cos - sin * shx), s * (-sin + cos * shx), tx], -1)
  row1 = jnp.stack([s * (cos * shy + sin), s * (-sin * shy + cos), ty], -1)
  return jnp.stack([row0, row1], -2)


def warp(image, theta):
  """Warps one HWC image by `theta` with bilinear sampling and zero padding.

  Out-of-image samples read zero (black background), matching the fonts glyphs.
  """
  height, width, _ = image.shape
  ys, xs = jnp.meshgrid(jnp.linspace(-1.0, 1.0, height), jnp.linspace(-1.0, 1.0, width),
                        indexing='ij')
  grid = jnp.stack([xs, ys, jnp.ones_like(xs)], -1)  # (H, W, 3)
  src = grid @ affine_matrix(theta.astype(image.dtype)).T  # (H, W, 2): input (x, y)
  px = (src[..., 0] + 1.0) * 0.5 * (width - 1)
  py = (src[..., 1] + 1.0) * 0.5 * (height - 1)
  x0, y0 = jnp.floor(px), jnp.floor(py)
  wx, wy = px - x0, py - y0

  def tap(yi, xi, weight):
    inside = (xi >= 0) & (xi <= width - 1) & (yi >= 0) & (yi <= height - 1)
    yc = jnp.clip(yi, 0, height - 1).astype(jnp.int32)
    xc = jnp.clip(xi, 0, width - 1).astype(jnp.int32)
    return image[yc, xc] * (weight * inside)[..., None]

  return (tap(y0, x0, (1 - wx) * (1 - wy)) + tap(y0, x0 + 1, wx * (1 - wy)) +
          tap(y0 + 1, x0, (1 - wx) * wy) + tap(y0 + 1, x0 + 1, wx * wy))


def transform(image, theta):
  """The warped image clipped to [0, 1]: what the fonts generator and attacks show a classifier."""
  return jnp.clip(warp(image, theta), 0.0, 1.0)


def sample_params(key, shape, ranges):
  """Uniform parameters in `ranges` (2, 6), of shape `shape + (6,)`."""
  ranges = jnp.asarray(ranges)
  return jax.random.uniform(key, tuple(shape) + (NUM_PARAMS,), minval=ranges[0], maxval=ranges[1])


def sample_near_identity(key, shape, radius, ranges):
  """Parameters uniform in an L-inf ball of `radius` around the identity, clipped to `ranges`.

  Augmentation and adversarial transformations start from the identity (Stutz et al.), not from
  the dataset's full range.
  """
  offset = jax.random.uniform(key, tuple(shape) + (NUM_PARAMS,), minval=-radius, maxval=radius)
  ranges = jnp.asarray(ranges)
  return jnp.clip(IDENTITY + offset, ranges[0], ranges[1])
