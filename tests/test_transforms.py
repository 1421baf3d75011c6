import jax
import jax.numpy as jnp
import numpy as np

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
