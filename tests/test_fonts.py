import jax
import numpy as np

from advgen.data import fonts


def test_fonts_are_latin_text_fonts(fonts_manifold):
  names = fonts_manifold.font_names
  assert 15 <= len(names) <= 30
  for dropped in ('cmex10', 'cmsy10', 'LastResortHE-Regular', 'DejaVuSansDisplay',
                  'STIXSizOneSymReg'):
    assert dropped not in names
  protos = fonts_manifold.prototypes
  assert protos.shape == (len(names), 10, 28, 28, 1)
  assert protos.min() >= 0 and protos.max() <= 1
  # Every prototype draws something and letters of one font differ.
  flat = protos.reshape(len(names), 10, -1)
  assert np.all(flat.sum(-1) > 10)
  for f in range(len(names)):
    distances = np.linalg.norm(flat[f, :, None] - flat[f, None], axis=-1)
    assert np.all(distances[~np.eye(10, dtype=bool)] > 1.0)


def test_sampling_is_deterministic_balanced_and_exact(fonts_manifold):
  x, y, lat = fonts.sample(fonts_manifold, jax.random.key(3), 253)
  x2, y2, _ = fonts.sample(fonts_manifold, jax.random.key(3), 253)
  np.testing.assert_array_equal(x, x2)
  np.testing.assert_array_equal(y, y2)
  counts = np.bincount(y, minlength=10)
  assert counts.max() - counts.min() <= 1 and counts.sum() == 253
  assert x.shape == (253, 28, 28, 1) and x.dtype == np.float32
  low, high = fonts_manifold.ranges
  assert np.all(lat['theta'] >= low) and np.all(lat['theta'] <= high)
  rendered = fonts_manifold.render(lat['font'][:5], y[:5], lat['theta'][:5])
  np.testing.assert_allclose(rendered, x[:5], atol=1e-5)
  x3, _, _ = fonts.sample(fonts_manifold, jax.random.key(4), 253)
  assert not np.allclose(x, x3)


def test_projection_is_exact_on_clean_samples_and_far_from_noisy_ones(fonts_manifold):
  x, y, _ = fonts.sample(fonts_manifold, jax.random.key(0), 8)
  font, theta, residual = fonts.project(fonts_manifold, x, y)
  assert np.all(np.asarray(residual) <= 0.01)  # on the manifold: found exactly
  rendered = fonts_manifold.render(np.asarray(font), y, np.asarray(theta))
  np.testing.assert_allclose(np.linalg.norm((rendered - x).reshape(8, -1), axis=1), residual,
                             atol=1e-4)
  low, high = fonts_manifold.ranges
  assert np.all(np.asarray(theta) >= low - 1e-6) and np.all(np.asarray(theta) <= high + 1e-6)
  noise = np.random.default_rng(0).normal(0, 0.15, x.shape).astype(np.float32)
  noisy = np.clip(x + noise, 0, 1)
  _, _, noisy_residual = fonts.project(fonts_manifold, noisy, y)
  clean_distance = np.linalg.norm((noisy - x).reshape(8, -1), axis=1)
  assert np.all(np.asarray(noisy_residual) > 0.5 * clean_distance)


def test_projection_finds_clean_samples_the_moment_grid_alone_misses(fonts_manifold):
  """Clean samples where the 32 grid rotations alone end in a local minimum or a near-identical
  font (an oblique twin): the rotations matched on polar rings find them exactly."""
  x, y, _ = fonts.sample(fonts_manifold, jax.random.key(0), 1000)
  hard = np.array([62, 149, 166, 183, 285, 509, 525, 570])
  _, _, residual = fonts.project(fonts_manifold, x[hard], y[hard])
  assert np.all(np.asarray(residual) <= 0.01)


def test_projection_finds_clean_samples_whose_glyph_the_border_cuts(fonts_manifold):
  """Glyphs shifted and enlarged near the range edges lose part of themselves at the border, so
  their moments mislead every moment start (each ends in another font): the random starts, a
  kind of their own, find them exactly."""
  x, y, _ = fonts.sample(fonts_manifold, jax.random.key(0), 1000)
  cut = np.array([115, 612, 768, 783, 994])
  _, _, residual = fonts.project(fonts_manifold, x[cut], y[cut])
  assert np.all(np.asarray(residual) <= 0.01)


def test_projection_is_never_farther_than_a_given_point_of_the_manifold(fonts_manifold):
  """Perturbed images: the clean image (font, theta) is a point of the manifold; a projection
  farther than it would be wrong. With a search that cannot find it (no starts, no steps) the
  candidate itself is returned."""
  x, y, latents = fonts.sample(fonts_manifold, jax.random.key(1), 8)
  noise = np.random.default_rng(1).choice([-0.3, 0.3], x.shape).astype(np.float32)
  perturbed = np.clip(x + noise, 0, 1)
  clean_distance = np.linalg.norm((perturbed - x).reshape(8, -1), axis=1)
  candidate = (latents['font'], latents['theta'])
  _, _, residual = fonts.project(fonts_manifold, perturbed, y, candidate=candidate)
  assert np.all(np.asarray(residual) <= clean_distance * (1 + 1e-5))
  weak = dict(num_candidates=1, num_random=0, num_restarts=1, num_steps=0, schedule=())
  font, theta, residual = fonts.project(fonts_manifold, perturbed, y, candidate=candidate, **weak)
  _, _, alone = fonts.project(fonts_manifold, perturbed, y, **weak)
  assert np.all(np.asarray(alone) > clean_distance)  # the weak search alone ends farther away
  np.testing.assert_allclose(residual, clean_distance, rtol=1e-5)
  np.testing.assert_array_equal(font, latents['font'])
  np.testing.assert_allclose(theta, latents['theta'], atol=1e-6)
