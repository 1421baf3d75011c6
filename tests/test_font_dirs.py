"""Fonts from any font folders: scanned in a fixed order, filtered, capped, and used by the
dataset and the on-true-manifold variant alike."""

import os
import shutil

import ml_collections
import numpy as np
import pytest

from advgen import data
from advgen.data import fonts
from advgen.errors import UserError

BUNDLED = fonts.bundled_font_dir()


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
  """Two folders: one with three text fonts, a symbol font and a stray file (in a subfolder
  too); one with a fourth text font."""
  first, second = tmp_path_factory.mktemp('fonts_a'), tmp_path_factory.mktemp('fonts_b')
  (first / 'more').mkdir()
  for name, target in (('DejaVuSerif.ttf', first), ('cmex10.ttf', first),
                       ('DejaVuSans.ttf', first / 'more'), ('STIXGeneral.ttf', first),
                       ('DejaVuSansMono.ttf', second)):
    shutil.copy(os.path.join(BUNDLED, name), target / name)
  (first / 'README.txt').write_text('not a font')
  return str(first), str(second)


def test_folders_are_scanned_in_order_and_symbol_fonts_dropped(folders):
  first, second = folders
  manifold = fonts.manifold('hard', (first, second))
  # Sorted by path within each folder (subfolders included), folders in the given order; the
  # symbol font cmex10 is dropped.
  assert manifold.font_names == ('STIXGeneral', 'DejaVuSerif', 'DejaVuSans', 'DejaVuSansMono') \
      or manifold.font_names == ('DejaVuSerif', 'STIXGeneral', 'DejaVuSans', 'DejaVuSansMono')
  paths = fonts.font_files((first, second))
  assert paths == sorted(paths[:-1]) + [os.path.join(second, 'DejaVuSansMono.ttf')]
  assert 'cmex10' not in manifold.font_names
  capped = fonts.manifold('hard', (first, second), num_fonts=2)
  assert capped.font_names == manifold.font_names[:2]
  np.testing.assert_array_equal(capped.prototypes, manifold.prototypes[:2])
  reversed_order = fonts.manifold('hard', (second, first))
  assert reversed_order.font_names[0] == 'DejaVuSansMono'


def test_the_dataset_renders_the_configured_fonts(folders):
  first, second = folders
  config = ml_collections.ConfigDict(dict(name='fonts', difficulty='hard', num_train=40,
                                          num_test=10, seed=0, font_dirs=(first, second),
                                          num_fonts=3))
  dataset = data.load(config)
  assert dataset.manifold.num_fonts == 3
  assert set(dataset.latents['train']['font'].tolist()) == {0, 1, 2}
  x = dataset.manifold.render(dataset.latents['train']['font'], dataset.y_train,
                              dataset.latents['train']['theta'])
  np.testing.assert_allclose(dataset.x_train, x, atol=1e-5)  # jit vs eager float order
  assert data.fonts_manifold(config).font_names == dataset.manifold.font_names


@pytest.mark.parametrize('font_dirs, num_fonts, message', [
    (('/nonexistent/fonts',), None, 'does not exist'),
    ((), 1, 'num_fonts must be an integer of at least 2'),
])
def test_bad_font_settings_are_user_errors(font_dirs, num_fonts, message):
  with pytest.raises(UserError, match=message):
    fonts.manifold('hard', font_dirs, num_fonts)


def test_a_folder_without_usable_fonts_is_refused(tmp_path):
  shutil.copy(os.path.join(BUNDLED, 'cmex10.ttf'), tmp_path / 'cmex10.ttf')
  with pytest.raises(UserError, match='only 0 fonts'):
    fonts.manifold('hard', (str(tmp_path),))
