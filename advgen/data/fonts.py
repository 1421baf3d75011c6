"""Synthetic fonts dataset with a known, differentiable generator (Stutz et al., 2019).

An image is the prototype glyph of a (font, letter) warped by six affine parameters theta. The
generator is exact, so on-true-manifold attacks perturb theta and the distance of any image to a
class manifold is a small optimization over theta and the font.
"""

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
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


@functools.lru_cache(maxsize=None)
def _load_prototypes(font_dirs, num_fonts):
  """(names, prototypes) of the first `num_fonts` fonts (all if None) of `font_dirs` that draw
  distinct, recognisable Latin capitals A-J."""
  references = np.concatenate([
      np.stack([_shape_signature(_draw(os.path.join(bundled_font_dir(), ref), c))
                for c in LETTERS])
      for ref in _REFERENCE_FONTS
  ])
  names, protos, seen = [], [], set()
  for path in font_files(font_dirs):
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
      protos.append(np.stack([_prototype(_draw(path, c)) for c in LETTERS]))
  if len(names) < 2:
    raise UserError(f'only {len(names)} fonts in {", ".join(font_dirs)} draw Latin capitals A-J; '
                    'add font folders to config.dataset.font_dirs')
  return tuple(names), np.stack(protos)[..., None]


@dataclasses.dataclass(frozen=True)
class FontsManifold:
  """The exact generator: prototypes (fonts, classes, 28, 28, 1) and the theta ranges (2, 6)."""
  prototypes: np.ndarray
  ranges: np.ndarray
  font_names: tuple

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


def manifold(difficulty='hard', font_dirs=(), num_fonts=None, where='config.dataset'):
  """The fonts generator of `difficulty`'s theta ranges, over the fonts of `font_dirs`
  (default: matplotlib's bundled fonts), exactly `num_fonts` of them (Stutz et al.: the first
  1000 Google Fonts that render); errors name the fields under `where`."""
  if difficulty not in transforms.RANGES:
    raise UserError(f'unknown fonts difficulty {difficulty!r}; choose one of '
                    f'{", ".join(transforms.RANGES)}')
  if num_fonts is not None and (isinstance(num_fonts, bool) or not isinstance(num_fonts, int) or
                                num_fonts < 2):
    raise UserError(f'{where}.num_fonts must be an integer of at least 2 (or None: all), '
                    f'got {num_fonts!r}')
  font_dirs = tuple(font_dirs) or (bundled_font_dir(),)
  names, protos = _load_prototypes(font_dirs, num_fonts)
  if num_fonts is not None and len(names) < num_fonts:  # a researcher must not publish fewer
    raise UserError(f'{where}.num_fonts={num_fonts} but only {len(names)} fonts in '
                    f'{", ".join(font_dirs)} draw Latin capitals A-J; add folders of TTF/OTF fonts '
                    f'to {where}.font_dirs, or set {where}.num_fonts={len(names)}')
  return FontsManifold(protos, transforms.RANGES[difficulty], names)


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
