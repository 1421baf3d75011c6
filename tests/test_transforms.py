import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advgen import transforms


def _image(key=0, size=9):
  return np.asarray(jax.random.uniform(jax.random.key(key), (size, size, 2)))


def test_identity_returns_the_image():
  image = _image()
  np.testing.assert_allclose(transforms.warp(image, transforms.IDENTITY), image, atol=1e-6)


def test_quarter_turn_is_an_exact_rotation():
  # The corner-aligned grid maps onto itself under a rotation by pi/2 about the centre.
  image = _image()
  theta = jnp.array([0, 0, 0, 0, 1, np.pi / 2], jnp.float32)
  out = np.asarray(transforms.warp(image, theta))
  matches = [np.allclose(out, np.rot90(image, k, axes=(0, 1)), atol=1e-5) for k in (1, 3)]
  assert any(matches)


def test_translation_by_one_pixel_shifts_and_pads_with_zeros():
  image = _image(size=9)
  step = 2.0 / (9 - 1)  # one pixel in normalized coordinates
  out = np.asarray(transforms.warp(image, jnp.array([step, 0, 0, 0, 1, 0], jnp.float32)))
  np.testing.assert_allclose(out[:, :-1], image[:, 1:], atol=1e-5)
  np.testing.assert_allclose(out[:, -1], 0.0, atol=1e-6)


def test_scale_below_one_enlarges():
  image = np.zeros((21, 21, 1), np.float32)
  image[8:13, 8:13] = 1.0
  small = transforms.transform(image, jnp.array([0, 0, 0, 0, 0.5, 0], jnp.float32))
  assert float(small.sum()) > 3 * float(image.sum())


def test_warp_is_differentiable_in_theta():
  image = _image()
  target = transforms.warp(image, jnp.array([0.1, -0.05, 0.1, 0.0, 0.9, 0.2]))
  loss = lambda t: jnp.sum((transforms.warp(image, t) - target) ** 2)
  grad = jax.grad(loss)(jnp.asarray(transforms.IDENTITY))
  assert np.all(np.isfinite(grad)) and np.linalg.norm(grad) > 0


def test_sample_near_identity_respects_radius_and_ranges():
  ranges = transforms.RANGES['easy']
  theta = np.asarray(transforms.sample_near_identity(jax.random.key(1), (500,), 0.3, ranges))
  assert np.all(np.abs(theta - transforms.IDENTITY) <= 0.3 + 1e-6)
  assert np.all(theta >= ranges[0] - 1e-6) and np.all(theta <= ranges[1] + 1e-6)


# The warp against the closed-form matrix of DESIGN.md and an independent numpy sampler.

def _design_matrix(theta):
  """DESIGN.md: A = [[s(cos r - sin r shx), s(-sin r + cos r shx), tx],
                     [s(cos r shy + sin r), s(-sin r shy + cos r), ty]]."""
  tx, ty, shx, shy, s, r = np.asarray(theta, np.float64)
  c, n = np.cos(r), np.sin(r)
  return np.array([[s * (c - n * shx), s * (-n + c * shx), tx],
                   [s * (c * shy + n), s * (-n * shy + c), ty]])


def _numpy_warp(image, theta):
  """Bilinear sampling at A @ (x, y, 1) on the corner-aligned grid, zero outside the image."""
  height, width, _ = image.shape
  a = _design_matrix(theta)
  out = np.zeros(image.shape, np.float64)
  for i, y in enumerate(np.linspace(-1, 1, height)):
    for j, x in enumerate(np.linspace(-1, 1, width)):
      sx, sy = a @ np.array([x, y, 1.0])
      px, py = (sx + 1) / 2 * (width - 1), (sy + 1) / 2 * (height - 1)
      x0, y0 = int(np.floor(px)), int(np.floor(py))
      for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
          if 0 <= yy < height and 0 <= xx < width:
            out[i, j] += wx * wy * image[yy, xx]
  return out


# One parameter moved at a time: a swap of any two parameters (or of sin and cos) changes one row.
_SINGLE = [(0, 0.3), (1, -0.25), (2, 0.4), (3, -0.35), (4, 0.8), (5, 0.6), (5, -1.1)]


@pytest.mark.parametrize('index, value', _SINGLE)
def test_each_parameter_enters_the_matrix_where_the_design_says(index, value):
  theta = np.array(transforms.IDENTITY, np.float32)
  theta[index] = value
  np.testing.assert_allclose(transforms.affine_matrix(jnp.asarray(theta)), _design_matrix(theta),
                             atol=1e-6)


def test_matrix_of_all_parameters_together_and_batched():
  thetas = np.array([[0.1, -0.2, 0.3, -0.4, 0.9, 0.7], [-0.15, 0.05, -0.25, 0.45, 1.1, -1.3],
                     [0.0, 0.0, 0.5, 0.5, 0.75, np.pi / 2]], np.float32)
  matrices = np.asarray(transforms.affine_matrix(jnp.asarray(thetas)))
  assert matrices.shape == (3, 2, 3)
  for theta, matrix in zip(thetas, matrices):
    np.testing.assert_allclose(matrix, _design_matrix(theta), atol=1e-6)


@pytest.mark.parametrize('theta', [[0.3, 0, 0, 0, 1, 0], [0, -0.3, 0, 0, 1, 0],
                                   [0, 0, 0.4, 0, 1, 0], [0, 0, 0, -0.4, 1, 0],
                                   [0, 0, 0, 0, 0.7, 0], [0, 0, 0, 0, 1, 0.5],
                                   [0.1, -0.15, 0.2, -0.3, 1.1, -0.4]])
def test_warp_matches_a_numpy_bilinear_sampler_on_a_non_square_image(theta):
  """Height != width, so swapping the axes of the grid or of the sampling is visible."""
  image = np.asarray(jax.random.uniform(jax.random.key(5), (7, 10, 2)))
  theta = np.asarray(theta, np.float32)
  np.testing.assert_allclose(transforms.warp(image, jnp.asarray(theta)), _numpy_warp(image, theta),
                             atol=1e-5)


def test_vertical_translation_moves_rows_and_pads_with_zeros():
  image = _image(size=9)[:7]  # 7 x 9
  step = 2.0 / (7 - 1)
  out = np.asarray(transforms.warp(image, jnp.array([0, step, 0, 0, 1, 0], jnp.float32)))
  np.testing.assert_allclose(out[:-1], image[1:], atol=1e-5)
  np.testing.assert_allclose(out[-1], 0.0, atol=1e-6)
  back = np.asarray(transforms.warp(image, jnp.array([0, -step, 0, 0, 1, 0], jnp.float32)))
  np.testing.assert_allclose(back[1:], image[:-1], atol=1e-5)
  np.testing.assert_allclose(back[0], 0.0, atol=1e-6)


def test_transform_clips_to_the_unit_box_and_keeps_dtype():
  image = 3.0 * _image() - 1.0  # values in [-1, 2]
  out = transforms.transform(image, jnp.asarray(transforms.IDENTITY))
  np.testing.assert_allclose(out, np.clip(image, 0.0, 1.0), atol=1e-6)
  assert out.dtype == jnp.float32


def test_ranges_are_the_papers():
  """Stutz et al. (DESIGN.md): translation, shear, scale, rotation per difficulty."""
  expected = {'hard': (0.2, 0.5, (0.75, 1.15), np.pi / 2),
              'medium': (0.2, 0.4, (0.85, 1.15), np.pi / 3),
              'easy': (0.1, 0.2, (0.9, 1.1), np.pi / 6)}
  assert set(transforms.RANGES) == set(expected)
  for name, (shift, shear, (low, high), angle) in expected.items():
    ranges = np.asarray(transforms.RANGES[name])
    np.testing.assert_allclose(ranges, [[-shift, -shift, -shear, -shear, low, -angle],
                                        [shift, shift, shear, shear, high, angle]], rtol=1e-6)
  np.testing.assert_array_equal(transforms.IDENTITY, [0, 0, 0, 0, 1, 0])
  assert transforms.NUM_PARAMS == 6


def test_sample_params_fills_each_parameters_own_range():
  ranges = transforms.RANGES['hard']
  theta = np.asarray(transforms.sample_params(jax.random.key(2), (50, 40), ranges))
  assert theta.shape == (50, 40, 6)
  flat = theta.reshape(-1, 6)
  assert np.all(flat >= ranges[0]) and np.all(flat <= ranges[1])
  span = ranges[1] - ranges[0]
  np.testing.assert_allclose(flat.min(0), ranges[0], atol=0.01 * span.max())
  np.testing.assert_allclose(flat.max(0), ranges[1], atol=0.01 * span.max())
  assert np.all(np.abs(flat.mean(0) - ranges.mean(0)) <= 0.03 * span)
  again = transforms.sample_params(jax.random.key(2), (50, 40), ranges)
  other = transforms.sample_params(jax.random.key(3), (50, 40), ranges)
  np.testing.assert_array_equal(again, theta)
  assert np.mean(np.asarray(other) == theta) < 0.01


def test_sample_near_identity_is_uniform_around_the_identity():
  wide = np.array([[-1, -1, -1, -1, 0, -2], [1, 1, 1, 1, 2, 2]], np.float32)  # never binding
  radius = 0.3
  theta = np.asarray(transforms.sample_near_identity(jax.random.key(4), (4000,), radius, wide))
  offset = theta - transforms.IDENTITY
  assert np.all(np.abs(offset) <= radius + 1e-6)
  np.testing.assert_allclose(np.abs(offset).max(0), radius, atol=0.01)  # fills the ball
  np.testing.assert_allclose(offset.mean(0), 0.0, atol=0.02)  # centred on the identity
  np.testing.assert_allclose(np.mean(offset > 0, axis=0), 0.5, atol=0.05)
  np.testing.assert_allclose(offset.std(0), radius / np.sqrt(3), rtol=0.05)  # uniform
  other = np.asarray(transforms.sample_near_identity(jax.random.key(5), (4000,), radius, wide))
  assert np.mean(other == theta) < 0.01
  # Where the ranges bind, the clip puts parameters on their edge.
  tight = np.asarray(transforms.sample_near_identity(jax.random.key(4), (4000,), radius,
                                                     transforms.RANGES['easy']))
  np.testing.assert_allclose(tight, np.clip(theta, *transforms.RANGES['easy']), atol=1e-6)
