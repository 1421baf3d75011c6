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


def test_projection_finds_clean_samples_and_not_noisy_ones(fonts_manifold):
  x, y, lat = fonts.sample(fonts_manifold, jax.random.key(0), 6)
  project = lambda images: fonts.project(fonts_manifold, images, y, jax.random.key(1),
                                         num_candidates=32, num_restarts=2, num_steps=60)
  _, theta, residual = project(x)
  image_norms = np.linalg.norm(x.reshape(6, -1), axis=1)
  assert np.median(np.asarray(residual) / image_norms) < 0.05
  noise = np.random.default_rng(0).normal(0, 0.15, x.shape).astype(np.float32)
  noisy = np.clip(x + noise, 0, 1)
  _, _, noisy_residual = project(noisy)
  assert np.all(np.asarray(noisy_residual) > 4 * np.asarray(residual).clip(min=0.05))
