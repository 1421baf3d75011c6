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


# Stutz et al.'s pick of fonts (a seeded permutation), the record of which fonts were used, and
# the prototype cache.

@pytest.fixture
def spread(tmp_path):
  """The bundled fonts copied into two folders (one with a subfolder), as a font package tree."""
  names = sorted(f for f in os.listdir(BUNDLED) if f.endswith('.ttf'))
  first, second = tmp_path / 'truetype', tmp_path / 'opentype'
  (first / 'sub').mkdir(parents=True)
  second.mkdir()
  for i, name in enumerate(names):
    shutil.copy(os.path.join(BUNDLED, name), (first, first / 'sub', second)[i % 3] / name)
  return str(first), str(second)


def permuted(font_dirs, num_fonts=8, seed=0, cache_dir=''):
  return fonts.manifold('hard', font_dirs, num_fonts, selection='permuted', seed=seed,
                        cache_dir=cache_dir)


def test_permuted_selection_is_seeded_and_independent_of_the_discovery_order(spread, monkeypatch):
  first, second = spread
  chosen = permuted((first, second))
  assert chosen.num_fonts == 8 and len(chosen.fonts_hash) == 64
  again = permuted((first, second))
  assert again.font_names == chosen.font_names and again.fonts_hash == chosen.fonts_hash
  np.testing.assert_array_equal(again.prototypes, chosen.prototypes)
  # The first 8 of the seeded order of all usable fonts, not the first folders' fonts.
  everything = permuted((first, second), num_fonts=None)
  assert everything.font_names[:8] == chosen.font_names
  in_path_order = fonts.manifold('hard', (first, second), cache_dir='')
  assert set(everything.font_names) == set(in_path_order.font_names)
  assert everything.font_names != in_path_order.font_names
  assert everything.fonts_hash == in_path_order.fonts_hash  # the same set of files
  other_seed = permuted((first, second), seed=1)
  assert other_seed.font_names != chosen.font_names
  assert other_seed.fonts_hash != chosen.fonts_hash
  # Folders in the other order, files found in the other order: the same fonts.
  assert permuted((second, first)).font_names == chosen.font_names
  walk = os.walk
  monkeypatch.setattr(os, 'walk', lambda top: [(root, dirs[::-1], files[::-1])
                                               for root, dirs, files in list(walk(top))[::-1]])
  assert permuted((first, second)).font_names == chosen.font_names
  assert permuted((first, second)).fonts_hash == chosen.fonts_hash


def test_the_fonts_hash_names_the_set_of_files(spread, tmp_path):
  first, second = spread
  chosen = permuted((first, second))
  # The same files elsewhere (another machine's folder): the same hash.
  copy = tmp_path / 'elsewhere'
  shutil.copytree(os.path.dirname(first), copy)
  assert permuted((str(copy / 'truetype'), str(copy / 'opentype'))).fonts_hash == \
      chosen.fonts_hash
  assert permuted((first, second), num_fonts=9).fonts_hash != chosen.fonts_hash
  # One more font file in the folders: another set, another hash (under any seed, the same).
  before = permuted((first, second), num_fonts=None)
  shutil.copy(os.path.join(BUNDLED, 'DejaVuSans.ttf'), os.path.join(second, 'Extra.ttf'))
  grown = permuted((first, second), num_fonts=None)
  assert grown.num_fonts == before.num_fonts + 1 and grown.fonts_hash != before.fonts_hash
  assert grown.fonts_hash == permuted((first, second), num_fonts=None, seed=1).fonts_hash
  # A font file of another size under the same name: another hash.
  with open(os.path.join(second, 'Extra.ttf'), 'ab') as f:
    f.write(b'\0' * 4)
  assert permuted((first, second), num_fonts=None).fonts_hash != grown.fonts_hash


def test_asking_for_more_fonts_than_usable_is_refused(spread):
  available = permuted(spread, num_fonts=None).num_fonts
  with pytest.raises(UserError, match=f'num_fonts={available + 1} but only {available} fonts'):
    permuted(spread, num_fonts=available + 1)
  for selection, seed, message in (('shuffled', 0, 'font_selection must be one of'),
                                   ('permuted', -1, 'font_seed must be a non-negative integer')):
    with pytest.raises(UserError, match=message):
      fonts.manifold('hard', spread, selection=selection, seed=seed)


def test_the_dataset_and_the_training_results_record_the_fonts(spread, trained_tiny):
  first, second = spread
  config = ml_collections.ConfigDict(dict(name='fonts', difficulty='hard', num_train=40,
                                          num_test=10, seed=0, font_dirs=(first, second),
                                          num_fonts=5, font_selection='permuted', font_seed=3))
  dataset = data.load(config)
  assert dataset.info == {'num_fonts': 5, 'fonts_hash': permuted(spread, 5, seed=3).fonts_hash}
  assert dataset.manifold.font_names == permuted(spread, 5, seed=3).font_names
  _, results = trained_tiny
  bundled = fonts.manifold('hard')
  assert results['dataset'] == {'num_fonts': bundled.num_fonts, 'fonts_hash': bundled.fonts_hash}


@pytest.fixture
def builds(monkeypatch):
  """The prototype builds from now on (a list that fills as they run), with nothing held in
  memory: every load reads the cache folder or builds."""
  ran, build = [], fonts._build_prototypes
  monkeypatch.setattr(fonts, '_build_prototypes',
                      lambda *args: (ran.append(args), build(*args))[1])
  monkeypatch.setattr(fonts, '_LOADED', {})
  return ran


def test_the_prototype_cache_is_read_again_and_rebuilt_when_a_font_changes(spread, tmp_path,
                                                                           builds):
  cache = str(tmp_path / 'cache')
  first = permuted(spread, cache_dir=cache)
  assert len(builds) == 1 and len(os.listdir(cache)) == 1
  fonts._LOADED.clear()
  second = permuted(spread, cache_dir=cache)
  assert len(builds) == 1  # read from the cache folder
  assert second.font_names == first.font_names and second.fonts_hash == first.fonts_hash
  np.testing.assert_array_equal(second.prototypes, first.prototypes)
  assert second.prototypes.dtype == first.prototypes.dtype
  permuted(spread, cache_dir=cache)
  assert len(builds) == 1  # held in memory
  # A touched font file (a new modification time) rebuilds, in this process too; the old file
  # of the same set is replaced.
  touched = os.path.join(spread[1], sorted(os.listdir(spread[1]))[0])
  stat = os.stat(touched)
  os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
  assert permuted(spread, cache_dir=cache).font_names == first.font_names
  assert len(builds) == 2 and len(os.listdir(cache)) == 1
  # Another count, seed or folder list is another set: built once, cached beside.
  permuted(spread, num_fonts=4, cache_dir=cache)
  assert len(builds) == 3 and len(os.listdir(cache)) == 2


def test_a_corrupt_cache_file_is_rebuilt(spread, tmp_path, builds):
  cache = str(tmp_path / 'cache')
  built = permuted(spread, cache_dir=cache)
  (stored,) = os.listdir(cache)
  path = os.path.join(cache, stored)
  for damage in (b'', b'not an npz file', open(path, 'rb').read()[:1000]):
    with open(path, 'wb') as f:
      f.write(damage)
    fonts._LOADED.clear()
    rebuilt = permuted(spread, cache_dir=cache)
    assert rebuilt.font_names == built.font_names
    np.testing.assert_array_equal(rebuilt.prototypes, built.prototypes)
  assert len(builds) == 4
  fonts._LOADED.clear()
  permuted(spread, cache_dir=cache)
  assert len(builds) == 4 and os.listdir(cache) == [stored]  # rewritten whole, no temp files


def test_reloading_a_run_whose_fonts_changed_is_refused(trained_tiny, tmp_path):
  from advgen.studies import runs
  from advgen.train import workdir as workdir_lib
  workdir, results = trained_tiny
  copy = tmp_path / 'run'
  copy.mkdir()
  shutil.copy(os.path.join(workdir, 'config.json'), copy / 'config.json')
  runs._rebuild('classifier', str(copy))  # no results.json yet: nothing to compare
  workdir_lib.write_json(str(copy / 'results.json'), results)
  runs._rebuild('classifier', str(copy))  # the same fonts
  workdir_lib.write_json(str(copy / 'results.json'),
                         {**results, 'dataset': {**results['dataset'], 'fonts_hash': '0' * 64}})
  with pytest.raises(UserError, match='fonts of hash 000000000000, but its config.dataset now'):
    runs._rebuild('classifier', str(copy))
