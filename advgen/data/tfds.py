"""Real image datasets read through tensorflow-datasets' data sources (no TensorFlow needed).

Datasets must be prepared once, on a machine with internet, into a `data_dir`; reading them back
uses `tfds.data_source`, which needs no TensorFlow for the array_record format.
"""

import os

import numpy as np
from PIL import Image

from advgen.errors import UserError

# name -> (tfds name, label of an example, post-processing of a uint8 image)
_CELEBA_SHAPE = (56, 48)


def _celeba_image(image):
  return np.asarray(Image.fromarray(image).resize(_CELEBA_SHAPE[::-1], Image.BILINEAR))


DATASETS = {
    'mnist': ('mnist', lambda ex: ex['label'], None),
    'fashion_mnist': ('fashion_mnist', lambda ex: ex['label'], None),
    # EMNIST images are stored transposed in the original files; tfds keeps that.
    'emnist': ('emnist/digits', lambda ex: ex['label'], lambda im: np.swapaxes(im, 0, 1)),
    'svhn_cropped': ('svhn_cropped', lambda ex: ex['label'], None),
    'cifar10': ('cifar10', lambda ex: ex['label'], None),
    'celeb_a': ('celeb_a', lambda ex: ex['attributes']['Male'], _celeba_image),
}
NUM_CLASSES = {'mnist': 10, 'fashion_mnist': 10, 'emnist': 10, 'svhn_cropped': 10, 'cifar10': 10,
               'celeb_a': 2}


def _prepare_hint(tfds_name, data_dir):
  return (f'prepare it on a machine with internet: pip install tensorflow && tfds build '
          f'{tfds_name} --file_format=array_record --data_dir={data_dir or "~/tensorflow_datasets"},'
          ' then copy that folder here and pass its path as config.dataset.data_dir')


def _source(tfds_name, split, data_dir):
  import tensorflow_datasets as tfds  # imported here: fonts and toy data need no tfds at all
  if data_dir is not None and not os.path.isdir(data_dir):
    raise UserError(f'config.dataset.data_dir={data_dir} is not a directory; '
                    + _prepare_hint(tfds_name, data_dir))
  try:
    return tfds.data_source(tfds_name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # tfds raises several types for a dataset that is not there
    reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
    raise UserError(f'dataset {tfds_name!r} ({split}) cannot be read from '
                    f'{data_dir or "the default data_dir"} ({reason}); '
                    + _prepare_hint(tfds_name, data_dir)) from None


def check(name, split, data_dir=None, num=None, field=None):
  """The data source of a split that holds at least `num` examples (the config's `field`)."""
  if name not in DATASETS:
    raise UserError(f'unknown tfds dataset {name!r}; choose one of {", ".join(DATASETS)}')
  source = _source(DATASETS[name][0], split, data_dir)
  if num is not None and num > len(source):
    raise UserError(f'{name} {split} has {len(source)} examples but {num} were asked for; set '
                    f'{field or "config.dataset.num_" + split}={len(source)} or less')
  return source


def load(name, split, data_dir=None, num=None, seed=0):
  """Images (N, H, W, C) float32 in [0, 1] and int32 labels; `num` picks a seeded random subset."""
  source = check(name, split, data_dir, num)
  _, label_of, post = DATASETS[name]
  total = len(source)
  index = np.arange(total)
  if num is not None:
    index = np.sort(np.random.default_rng(seed).permutation(total)[:num])
  examples = [source[int(i)] for i in index]
  images = [np.asarray(ex['image']) for ex in examples]
  if post is not None:
    images = [post(im) for im in images]
  images = np.stack(images).astype(np.float32) / 255.0
  if images.ndim == 3:
    images = images[..., None]
  labels = np.asarray([label_of(ex) for ex in examples], np.int32)
  return images, labels
