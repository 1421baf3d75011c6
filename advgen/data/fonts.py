"""Synthetic fonts dataset with a known, differentiable generator (Stutz et al., 2019).

An image is the prototype glyph of a (font, letter) warped by six affine parameters theta. The
generator is exact, so on-true-manifold attacks perturb theta and the distance of any image to a
class manifold is a small optimization over theta and the font.
"""

import dataclasses
import hashlib
import json
import os
import tempfile

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import PIL
import PIL.features
from matplotlib import ft2font
from PIL import Image, ImageDraw, ImageFont

from advgen import transforms
from advgen.data.fonts_projection import SCHEDULE, project  # noqa: F401 (the entry point)
from advgen.errors import UserError

LETTERS = 'ABCDEFGHIJ'
IMAGE_SIZE = 28
GLYPH_SIZE = 18  # the longer side of a prototype glyph, in pixels of the 28x28 frame
_RENDER_SIZE = 128
_REFERENCE_FONTS = ('DejaVuSans.ttf', 'DejaVuSerif.ttf')


def bundled_font_dir():
  return os.path.join(os.path.dirname(matplotlib.__file__), 'mpl-data', 'fonts', 'ttf')


def _draw(path, letter):
  """A high-resolution rendering of one letter, white on black, in [0, 1]."""
  font = ImageFont.truetype(path, int(_RENDER_SIZE * 0.6))
  canvas = Image.new('L', (_RENDER_SIZE, _RENDER_SIZE), 0)
  ImageDraw.Draw(canvas).text((_RENDER_SIZE / 2, _RENDER_SIZE / 2), letter, fill=255, font=font,
                              anchor='mm')
  return np.asarray(canvas, np.float32) / 255.0


def _crop(glyph):
  ys, xs = np.nonzero(glyph > 0.1)
  if ys.size == 0:
    return None
  return glyph[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def _resize(array, width, height):
  image = Image.fromarray(np.uint8(np.round(array * 255)))
  return np.asarray(image.resize((width, height), Image.LANCZOS), np.float32) / 255.0


def _shape_signature(glyph):
  """The glyph's crop at a fixed size, centred and unit-norm: compares shapes across fonts."""
  crop = _crop(glyph)
  if crop is None:
    return np.zeros(400, np.float32)
  v = _resize(crop, 20, 20).ravel()
  v = v - v.mean()
  return v / (np.linalg.norm(v) + 1e-8)


def _prototype(glyph):
  """The glyph scaled so its longer side is GLYPH_SIZE and centred in the 28x28 frame."""
  crop = _crop(glyph)
  h, w = crop.shape
  scale = GLYPH_SIZE / max(h, w)
  h2, w2 = max(1, round(h * scale)), max(1, round(w * scale))
  frame = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
  top, left = (IMAGE_SIZE - h2) // 2, (IMAGE_SIZE - w2) // 2
  frame[top:top + h2, left:left + w2] = np.clip(_resize(crop, w2, h2), 0.0, 1.0)
  return frame


def _draws_latin_capitals(path, references):
  """Symbol, size-variant and fallback fonts fail one of: A-J mapped, distinct, recognisable."""
  charmap = ft2font.FT2Font(path).get_charmap()
  if not all(charmap.get(ord(c), 0) for c in LETTERS):
    return False
  signatures = np.stack([_shape_signature(_draw(path, c)) for c in LETTERS])
  similarity = signatures @ signatures.T
  np.fill_diagonal(similarity, 0.0)
  if similarity.max() > 0.95:  # several letters share one glyph (a fallback box)
    return False
  nearest = np.argmax(signatures @ references.T, axis=1) % len(LETTERS)
  return int((nearest == np.arange(len(LETTERS))).sum()) >= 7


FONT_SUFFIXES = ('.ttf', '.otf')


def font_files(font_dirs):
  """The TTF/OTF files of `font_dirs`, folder by folder in the given order, each sorted by path
  (subfolders included), so a font set is the same on every machine that has the files."""
  paths = []
  for font_dir in font_dirs:
    if not os.path.isdir(font_dir):
      raise UserError(f'font folder {font_dir} does not exist; pass folders of TTF/OTF files in '
                      'config.dataset.font_dirs')
    found = [os.path.join(root, f) for root, _, files in os.walk(font_dir) for f in files
             if f.lower().endswith(FONT_SUFFIXES)]
    paths += sorted(found)
  return paths


SELECTIONS = ('path_order', 'permuted')
_CACHE_FORMAT = 1  # bump when the cache file's layout changes


def _candidates(font_dirs, selection, seed):
  """[(path, relative path)] of the font files of `font_dirs` in the order they are tried.

  path_order: folder by folder, each in sorted path order. permuted (Stutz et al.'s pick of 1000
  fonts): every file of all folders sorted by its relative path, then a fixed permutation drawn
  from `seed`, so the order depends on neither where the fonts are installed, the folders' order
  nor the order the files are found in. The relative path (to the most specific folder holding
  the file) is what the fonts hash records."""
  found = {}
  for font_dir in font_dirs:
    for path in font_files((font_dir,)):
      relative = os.path.relpath(path, font_dir)
      if path not in found or len(relative) < len(found[path]):
        found[path] = relative
  if selection == 'path_order':
    order, seen = [], set()
    for font_dir in font_dirs:
      for path in font_files((font_dir,)):
        if path not in seen:
          seen.add(path)
          order.append(path)
  else:
    paths = sorted(found, key=lambda path: (found[path], path))  # where installed: irrelevant
    order = [paths[i] for i in np.random.default_rng(seed).permutation(len(paths))]
  return [(path, found[path]) for path in order]


def fonts_hash(files):
  """sha256 of the sorted (relative path, size) list of font files [(path, relative path)]: two
  runs with the same hash saw the same fonts."""
  lines = sorted(f'{relative}\t{os.path.getsize(path)}\n' for path, relative in files)
  return hashlib.sha256(''.join(lines).encode()).hexdigest()


def _references():
  return np.concatenate([
      np.stack([_shape_signature(_draw(os.path.join(bundled_font_dir(), ref), c))
                for c in LETTERS])
      for ref in _REFERENCE_FONTS
  ])


def _build_prototypes(candidates, num_fonts):
  """(names, prototypes, used candidates) of the first `num_fonts` candidates (all if None) that
  draw distinct, recognisable Latin capitals A-J, one font per file name."""
  references = _references()
  names, protos, used, seen = [], [], [], set()
  for path, relative in candidates:
    if num_fonts is not None and len(names) >= num_fonts:
      break
    name = os.path.splitext(os.path.basename(path))[0]
    try:
      usable = name not in seen and _draws_latin_capitals(path, references)
    except (OSError, RuntimeError, ValueError):  # a file FreeType cannot read
      usable = False
    if usable:
      seen.add(name)
      names.append(name)
      used.append((path, relative))
      protos.append(np.stack([_prototype(_draw(path, c)) for c in LETTERS]))
  protos = np.stack(protos)[..., None] if protos else np.zeros((0, len(LETTERS), IMAGE_SIZE,
                                                                 IMAGE_SIZE, 1), np.float32)
  return tuple(names), protos, used


def default_cache_dir():
  """$ADVGEN_CACHE/fonts, else $XDG_CACHE_HOME/advgen/fonts (~/.cache/advgen/fonts); None (no
  cache) where ADVGEN_CACHE is 'off'."""
  root = os.environ.get('ADVGEN_CACHE')
  if root is None:
    root = os.path.join(os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'),
                        'advgen')
  if root.strip().lower() in ('', 'off', 'none', '0'):
    return None
  return os.path.join(root, 'fonts')


def _digest(value):
  return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _cache_keys(candidates, font_dirs, num_fonts, selection, seed):
  """(set key, content key): the first names what is asked for (folders, count, selection), the
  second also every file's path, size and modification time, the rendering settings, this
  module's code and the renderers' versions, so any change to them rebuilds."""
  asked = [_CACHE_FORMAT, [os.path.abspath(d) for d in font_dirs], num_fonts, selection, seed]
  with open(__file__, 'rb') as f:
    code = hashlib.sha256(f.read()).hexdigest()
  stats = []
  for path in [p for p, _ in candidates] + [os.path.join(bundled_font_dir(), ref)
                                            for ref in _REFERENCE_FONTS]:
    st = os.stat(path)
    stats.append([path, st.st_size, st.st_mtime_ns])
  versions = [PIL.__version__, PIL.features.version('freetype2'), matplotlib.__version__,
              np.__version__]
  settings = [LETTERS, IMAGE_SIZE, GLYPH_SIZE, _RENDER_SIZE, list(_REFERENCE_FONTS)]
  return _digest(asked)[:16], _digest([asked, code, versions, settings, stats])


def _read_cache(path, key):
  """(names, prototypes, used relative paths) stored under `key` in `path`, or None where the
  file is missing, of another key, or unreadable (a corrupt file is rebuilt, not a crash)."""
  if not os.path.exists(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as stored:
      if str(stored['key']) != key:
        return None
      names, protos, used = (tuple(str(n) for n in stored['names']), stored['prototypes'],
                             [int(i) for i in stored['used']])
    if protos.shape != (len(names), len(LETTERS), IMAGE_SIZE, IMAGE_SIZE, 1) or \
        len(used) != len(names) or protos.dtype != np.float32:
      return None
    return names, protos, used
  except Exception:  # noqa: BLE001 -- any damage to a cache file means: build again
    return None


def _write_cache(directory, set_key, key, names, protos, used):
  """Writes the cache file atomically (a temporary file in the same folder, then os.replace) and
  removes the older files of the same set; a folder that cannot be written only skips caching."""
  try:
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f'.{set_key}-', suffix='.tmp')
    try:
      os.chmod(tmp, 0o644)
      with os.fdopen(fd, 'wb') as f:
        np.savez(f, key=np.array(key), names=np.array(names, dtype=str), prototypes=protos,
                 used=np.array(used, np.int64))
      os.replace(tmp, os.path.join(directory, f'{set_key}-{key[:16]}.npz'))
    except BaseException:
      if os.path.exists(tmp):
        os.remove(tmp)
      raise
    for stale in os.listdir(directory):
      if stale.startswith(f'{set_key}-') and stale != f'{set_key}-{key[:16]}.npz':
        try:
          os.remove(os.path.join(directory, stale))
        except OSError:
          pass
  except OSError:
    pass


_LOADED = {}  # content key -> (names, prototypes, used): one build or read per process


def _load_prototypes(font_dirs, num_fonts, selection='path_order', seed=0, cache_dir=None):
  """(names, prototypes, fonts hash) of the first `num_fonts` fonts (all if None) of `font_dirs`,
  tried in the `selection` order, that draw distinct, recognisable Latin capitals A-J; read from
  the prototype cache in `cache_dir` (None: no cache) when no font file or setting changed."""
  candidates = _candidates(font_dirs, selection, seed)
  set_key, key = _cache_keys(candidates, font_dirs, num_fonts, selection, seed)
  loaded = _LOADED.get(key)
  path = os.path.join(cache_dir, f'{set_key}-{key[:16]}.npz') if cache_dir else None
  if loaded is None and path:
    loaded = _read_cache(path, key)
  if loaded is None:
    names, protos, used = _build_prototypes(candidates, num_fonts)
    index = {c: i for i, c in enumerate(candidates)}
    loaded = names, protos, [index[u] for u in used]
    if path:
      _write_cache(cache_dir, set_key, key, *loaded)
  _LOADED[key] = loaded
  names, protos, used = loaded
  if len(names) < 2:
    raise UserError(f'only {len(names)} fonts in {", ".join(font_dirs)} draw Latin capitals A-J; '
                    'add font folders to config.dataset.font_dirs')
  return names, protos, fonts_hash([candidates[i] for i in used])


@dataclasses.dataclass(frozen=True)
class FontsManifold:
  """The exact generator: prototypes (fonts, classes, 28, 28, 1) and the theta ranges (2, 6);
  `fonts_hash` tells which font files they were drawn from (`fonts_hash()`)."""
  prototypes: np.ndarray
  ranges: np.ndarray
  font_names: tuple
  fonts_hash: str = ''

  @property
  def info(self):
    """What a run records of its fonts: their count and the hash of their file list."""
    return {'num_fonts': self.num_fonts, 'fonts_hash': self.fonts_hash}

  @property
  def num_fonts(self):
    return self.prototypes.shape[0]

  def render(self, font, label, theta):
    """Images for integer arrays `font`, `label` and parameters `theta` (..., 6)."""
    protos = jnp.asarray(self.prototypes)[font, label]
    flat = jax.vmap(transforms.transform)(protos.reshape((-1,) + protos.shape[-3:]),
                                          theta.reshape(-1, transforms.NUM_PARAMS))
    return flat.reshape(protos.shape)

  def decoder(self, font, label):
    """`decode_fn(theta)` for fixed fonts and labels: the on-true-manifold generator."""
    return lambda theta: self.render(font, label, theta)


def manifold(difficulty='hard', font_dirs=(), num_fonts=None, where='config.dataset',
             selection='path_order', seed=0, cache_dir=None):
  """The fonts generator of `difficulty`'s theta ranges, over the fonts of `font_dirs`
  (default: matplotlib's bundled fonts), exactly `num_fonts` of them: the first that render in
  path order, or with selection='permuted' in a fixed permutation (drawn from `seed`) of all the
  folders' files sorted by path (Stutz et al.: 1000 Google Fonts picked that way). Prototypes are
  cached in `cache_dir` (None: `default_cache_dir()`; '' : no cache). Errors name the fields
  under `where`."""
  if difficulty not in transforms.RANGES:
    raise UserError(f'unknown fonts difficulty {difficulty!r}; choose one of '
                    f'{", ".join(transforms.RANGES)}')
  if num_fonts is not None and (isinstance(num_fonts, bool) or not isinstance(num_fonts, int) or
                                num_fonts < 2):
    raise UserError(f'{where}.num_fonts must be an integer of at least 2 (or None: all), '
                    f'got {num_fonts!r}')
  if selection not in SELECTIONS:
    raise UserError(f'{where}.font_selection must be one of {", ".join(SELECTIONS)}, got '
                    f'{selection!r}')
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
    raise UserError(f'{where}.font_seed must be a non-negative integer, got {seed!r}')
  font_dirs = tuple(font_dirs) or (bundled_font_dir(),)
  if cache_dir is None:
    cache_dir = default_cache_dir()
  names, protos, digest = _load_prototypes(font_dirs, num_fonts, selection,
                                           seed if selection == 'permuted' else 0, cache_dir)
  if num_fonts is not None and len(names) < num_fonts:  # a researcher must not publish fewer
    raise UserError(f'{where}.num_fonts={num_fonts} but only {len(names)} fonts in '
                    f'{", ".join(font_dirs)} draw Latin capitals A-J; add folders of TTF/OTF fonts '
                    f'to {where}.font_dirs, or set {where}.num_fonts={len(names)}')
  return FontsManifold(protos, transforms.RANGES[difficulty], names, digest)


def stratified_labels(num, num_classes, num_fonts):
  """Classes balanced (counts differ by at most one), fonts cycled within each class."""
  index = np.arange(num)
  return (index % num_classes).astype(np.int32), ((index // num_classes) % num_fonts).astype(np.int32)


def sample(fonts, key, num):
  """`num` images with labels and true latents, deterministic in `key`."""
  label, font = stratified_labels(num, len(LETTERS), fonts.num_fonts)
  perm_key, theta_key = jax.random.split(key)
  perm = np.asarray(jax.random.permutation(perm_key, num))
  label, font = label[perm], font[perm]
  theta = transforms.sample_params(theta_key, (num,), fonts.ranges)
  images = _render_batched(fonts, font, label, theta)
  return images, label, {'font': font, 'theta': np.asarray(theta)}


def _render_batched(fonts, font, label, theta, chunk=8192):
  render = jax.jit(fonts.render)
  parts = [np.asarray(render(font[i:i + chunk], label[i:i + chunk], theta[i:i + chunk]))
           for i in range(0, len(label), chunk)]
  return np.concatenate(parts)
