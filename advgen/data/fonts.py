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
import optax
from matplotlib import ft2font
from PIL import Image, ImageDraw, ImageFont

from advgen import transforms
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


@functools.lru_cache(maxsize=None)
def _load_prototypes(font_dir):
  paths = sorted(os.path.join(font_dir, f) for f in os.listdir(font_dir) if f.endswith('.ttf'))
  references = np.concatenate([
      np.stack([_shape_signature(_draw(os.path.join(font_dir, ref), c)) for c in LETTERS])
      for ref in _REFERENCE_FONTS
  ])
  names, protos = [], []
  for path in paths:
    if _draws_latin_capitals(path, references):
      names.append(os.path.basename(path)[:-4])
      protos.append(np.stack([_prototype(_draw(path, c)) for c in LETTERS]))
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


def manifold(difficulty='hard', font_dir=None):
  if difficulty not in transforms.RANGES:
    raise UserError(f'unknown fonts difficulty {difficulty!r}; choose one of '
                    f'{", ".join(transforms.RANGES)}')
  font_dir = font_dir or bundled_font_dir()
  names, protos = _load_prototypes(font_dir)
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


@functools.partial(jax.jit, static_argnames=('fonts_static', 'num_candidates', 'num_restarts',
                                             'num_steps'))
def _project(images, labels, key, prototypes, ranges, fonts_static, num_candidates, num_restarts,
             num_steps, learning_rate):
  del fonts_static
  low, span = ranges[0], ranges[1] - ranges[0]
  num_fonts = prototypes.shape[0]

  def residual(proto, u, image):
    return jnp.sum((transforms.transform(proto, low + span * u) - image) ** 2)

  def one(image, label, key):
    protos = prototypes[:, label]  # (F, H, W, C)
    # Coarse search: random candidates per font, keep the best few as starting points.
    cand = jax.random.uniform(key, (num_fonts, num_candidates, transforms.NUM_PARAMS))
    cand = cand.at[:, 0].set((transforms.IDENTITY - low) / span)
    errs = jax.vmap(lambda p, us: jax.vmap(lambda u: residual(p, u, image))(us))(protos, cand)
    best = jnp.argsort(errs, axis=1)[:, :num_restarts]
    u0 = jnp.take_along_axis(cand, best[..., None], axis=1)  # (F, R, 6)
    opt = optax.adam(learning_rate)
    loss_grad = jax.vmap(jax.vmap(jax.value_and_grad(residual, argnums=1), (None, 0, None)),
                         (0, 0, None))

    def step(carry, _):
      u, opt_state = carry
      _, g = loss_grad(protos, u, image)
      updates, opt_state = opt.update(g, opt_state)
      return (jnp.clip(u + updates, 0.0, 1.0), opt_state), None

    (u, _), _ = jax.lax.scan(step, (u0, opt.init(u0)), None, length=num_steps)
    final = jax.vmap(jax.vmap(residual, (None, 0, None)), (0, 0, None))(protos, u, image)
    flat = jnp.argmin(final)
    f, r = flat // num_restarts, flat % num_restarts
    return f, low + span * u[f, r], jnp.sqrt(final[f, r])

  keys = jax.random.split(key, images.shape[0])
  return jax.vmap(one)(images, labels, keys)


def project(fonts, images, labels, key, num_candidates=64, num_restarts=4, num_steps=100,
            learning_rate=0.02):
  """Nearest point of each image on its class manifold: (font, theta, L2 residual).

  The residual is the distance to the true manifold of the given class (Stutz et al., Sec. 3).
  """
  return _project(jnp.asarray(images), jnp.asarray(labels), key, jnp.asarray(fonts.prototypes),
                  jnp.asarray(fonts.ranges), fonts.font_names, num_candidates, num_restarts,
                  num_steps, learning_rate)
