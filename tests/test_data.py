import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds_lib

from advgen import data
from advgen.data import tfds, toy
from advgen.errors import UserError

EXPECTED = {
    'mnist': ((28, 28, 1), 10), 'fashion_mnist': ((28, 28, 1), 10), 'emnist': ((28, 28, 1), 10),
    'svhn_cropped': ((32, 32, 3), 10), 'cifar10': ((32, 32, 3), 10), 'celeb_a': ((56, 48, 3), 2),
}


def _config(**kwargs):
  return ml_collections.ConfigDict({'seed': 0, 'num_train': None, 'num_test': None, **kwargs})


@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_tfds_loaders_return_contract_arrays(name):
  shape, num_classes = EXPECTED[name]
  with tfds_lib.testing.mock_data(num_examples=12):
    dataset = data.load(_config(name=name, num_train=8, num_test=5))
  assert dataset.x_train.shape == (8,) + shape and dataset.x_test.shape == (5,) + shape
  assert dataset.x_train.dtype == np.float32 and dataset.y_train.dtype == np.int32
  assert 0.0 <= dataset.x_train.min() and dataset.x_train.max() <= 1.0
  assert dataset.num_classes == num_classes
  assert np.all((0 <= dataset.y_train) & (dataset.y_train < num_classes))


def test_tfds_subset_is_seeded_and_checked():
  with tfds_lib.testing.mock_data(num_examples=20):
    a, _ = tfds.load('mnist', 'train', num=6, seed=1)
    b, _ = tfds.load('mnist', 'train', num=6, seed=1)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(UserError, match='has 20 examples but 50'):
      tfds.load('mnist', 'train', num=50)


def test_emnist_images_are_transposed_back():
  with tfds_lib.testing.mock_data(num_examples=3):
    raw = tfds_lib.data_source('emnist/digits', split='train')[0]['image']
    ours, _ = tfds.load('emnist', 'train', num=None)
  np.testing.assert_allclose(ours[0, ..., 0], raw[..., 0].T / 255.0)


def test_missing_dataset_says_how_to_prepare_it(tmp_path):
  with pytest.raises(UserError) as error:
    data.load(_config(name='mnist', num_train=10, data_dir=str(tmp_path)))
  message = str(error.value)
  assert '\n' not in message and 'tfds build mnist' in message and str(tmp_path) in message


def test_missing_data_dir_is_named(tmp_path):
  with pytest.raises(UserError, match='is not a directory') as error:
    data.load(_config(name='cifar10', data_dir=str(tmp_path / 'nowhere')))
  assert 'tfds build cifar10' in str(error.value)


def test_unknown_dataset_and_bad_sizes():
  with pytest.raises(UserError, match='unknown dataset'):
    data.load(_config(name='imagenet'))
  with pytest.raises(UserError, match='num_train must be positive'):
    data.load(_config(name='fonts', num_train=-5, num_test=10))


def test_toy_manifolds_are_exact_and_in_the_box():
  spheres = data.load(_config(name='spheres', num_train=200, num_test=10, dim=5))
  radii = np.linalg.norm(spheres.x_train - toy.CENTRE, axis=1)
  np.testing.assert_allclose(radii, np.asarray(toy.Spheres().radii)[spheres.y_train], rtol=1e-5)
  assert spheres.x_train.shape == (200, 5) and np.bincount(spheres.y_train).tolist() == [100, 100]
  circle = data.load(_config(name='circle', num_train=300, num_test=10))
  np.testing.assert_allclose(np.linalg.norm(circle.x_train - toy.CENTRE, axis=1), 0.4, rtol=1e-5)
  z = circle.latents['train']['z'][:, 0]
  np.testing.assert_array_equal(circle.y_train, (np.mod(z, 1.0) >= 0.5).astype(np.int32))
  for dataset in (spheres, circle):
    assert dataset.x_train.min() >= 0 and dataset.x_train.max() <= 1


# Generated splits: test drawn with its own key, both from the config's seed.

def _rows(a):
  return {row.tobytes() for row in np.asarray(a).reshape(len(a), -1)}


@pytest.mark.parametrize('name, extra', [('spheres', {'dim': 3}), ('circle', {}),
                                         ('fonts', {'difficulty': 'easy'})])
def test_generated_test_split_is_disjoint_from_train_and_follows_the_seed(name, extra):
  """A test split drawn with the training key repeats training points (train/test leakage)."""
  config = _config(name=name, num_train=40, num_test=30, **extra)
  dataset = data.load(config)
  assert dataset.x_test.shape[0] == 30 and dataset.x_train.shape[0] == 40
  latent = 'theta' if name == 'fonts' else 'z'
  train_latents, test_latents = dataset.latents['train'][latent], dataset.latents['test'][latent]
  assert not _rows(train_latents) & _rows(test_latents)
  assert not _rows(dataset.x_train) & _rows(dataset.x_test)
  # The rendered test images are the generator at the test latents.
  if name == 'fonts':
    rendered = dataset.manifold.render(dataset.latents['test']['font'], dataset.y_test,
                                       test_latents)
    np.testing.assert_allclose(rendered, dataset.x_test, atol=1e-5)
  again = data.load(config)
  np.testing.assert_array_equal(again.x_train, dataset.x_train)
  np.testing.assert_array_equal(again.x_test, dataset.x_test)
  config.seed = 1
  other = data.load(config)
  assert not _rows(other.x_train) & _rows(dataset.x_train)
  assert not _rows(other.x_test) & _rows(dataset.x_test)


def test_circle_and_sphere_latents_are_standard_normal():
  circle = data.load(_config(name='circle', num_train=4000, num_test=10))
  z = circle.latents['train']['z']
  assert abs(z.mean()) < 0.06 and abs(z.std() - 1) < 0.05
  np.testing.assert_allclose(circle.x_train, toy.Circle().generate(z), atol=1e-6)
  spheres = data.load(_config(name='spheres', num_train=4000, num_test=10, dim=4))
  directions = (spheres.x_train - toy.CENTRE) / np.linalg.norm(
      spheres.x_train - toy.CENTRE, axis=1, keepdims=True)
  np.testing.assert_allclose(directions.mean(0), 0.0, atol=0.05)  # all orientations


# tfds subsets.

def test_tfds_seed_changes_the_subset_and_subsets_have_no_repeats():
  with tfds_lib.testing.mock_data(num_examples=40):
    full, full_labels = tfds.load('mnist', 'train')
    subsets = {seed: tfds.load('mnist', 'train', num=10, seed=seed) for seed in (0, 1, 2)}
  assert full.shape[0] == 40 and len(_rows(full)) == 40  # mock images are distinct
  index = {row.tobytes(): i for i, row in enumerate(full.reshape(40, -1))}
  picked = {}
  for seed, (images, labels) in subsets.items():
    rows = [index[r.tobytes()] for r in images.reshape(10, -1)]
    assert len(set(rows)) == 10  # without replacement
    assert rows == sorted(rows)  # in source order
    np.testing.assert_array_equal(labels, full_labels[rows])  # labels stay with their images
    picked[seed] = rows
  assert picked[0] != picked[1] and picked[1] != picked[2] and picked[0] != picked[2]


def test_tfds_config_seed_changes_both_splits():
  with tfds_lib.testing.mock_data(num_examples=30):
    a = data.load(_config(name='mnist', num_train=8, num_test=8, seed=0))
    b = data.load(_config(name='mnist', num_train=8, num_test=8, seed=5))
  assert _rows(a.x_train) != _rows(b.x_train)
  assert _rows(a.x_test) != _rows(b.x_test)
