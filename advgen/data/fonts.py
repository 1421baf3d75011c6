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


def manifold(difficulty='hard', font_dirs=(), num_fonts=None):
  """The fonts generator of `difficulty`'s theta ranges, over the fonts of `font_dirs`
  (default: matplotlib's bundled fonts), at most `num_fonts` of them (Stutz et al.: the first
  1000 Google Fonts that render)."""
  if difficulty not in transforms.RANGES:
    raise UserError(f'unknown fonts difficulty {difficulty!r}; choose one of '
                    f'{", ".join(transforms.RANGES)}')
  if num_fonts is not None and (not isinstance(num_fonts, int) or num_fonts < 2):
    raise UserError(f'config.dataset.num_fonts must be an integer of at least 2 (or None: all), '
                    f'got {num_fonts!r}')
  names, protos = _load_prototypes(tuple(font_dirs) or (bundled_font_dir(),), num_fonts)
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


_COORDS = np.stack(np.meshgrid(np.linspace(-1.0, 1.0, IMAGE_SIZE), np.linspace(-1.0, 1.0, IMAGE_SIZE),
                                indexing='xy'), -1).reshape(-1, 2).astype(np.float32)  # (x, y)


_MOMENT_THRESHOLD = 0.2  # intensities below count as background: weak noise moves no moment


def _moments(image):
  """Centroid and covariance of an image's bright pixels, in the warp's [-1, 1] coordinates."""
  weight = jnp.maximum(image.reshape(-1) - _MOMENT_THRESHOLD, 0.0)
  mass = jnp.sum(weight) + 1e-8
  mean = weight @ _COORDS / mass
  centred = _COORDS - mean
  return mean, (centred * weight[:, None]).T @ centred / mass


def _matrix_power(covariance, power):
  values, vectors = jnp.linalg.eigh(covariance)
  return (vectors * jnp.maximum(values, 1e-6) ** power) @ vectors.T


def _thetas_of_matrix(matrix, translation, low, high, num_roots):
  """The `num_roots` parameter vectors whose affine matrix is `matrix`, nearest the ranges first.

  With rows a0 = s (u + shx v), a1 = s (w + shy u) of the matrix (u = (c, -s'), v = (-s', c),
  w = (s', c) for c, s' = cos r, sin r), a1.w = s, a1.u = s shy, a0.v = s (shx - sin 2r), and
  the rotation solves g(r) = a0.(c, s') - cos 2r a1.w = 0, which has several roots: Newton from
  six starts finds them.
  """
  a0, a1 = matrix[0], matrix[1]
  g = lambda r: (a0[0] * jnp.cos(r) + a0[1] * jnp.sin(r) -
                 jnp.cos(2 * r) * (a1[0] * jnp.sin(r) + a1[1] * jnp.cos(r)))

  def newton(r):
    for _ in range(8):
      slope = jax.grad(g)(r)
      r = r - g(r) / jnp.where(jnp.abs(slope) > 1e-6, slope, 1e-6)
    return jnp.arctan2(jnp.sin(r), jnp.cos(r))

  def theta(r):
    c, sin = jnp.cos(r), jnp.sin(r)
    scale = a1[0] * sin + a1[1] * c
    safe = jnp.where(jnp.abs(scale) > 1e-6, scale, 1e-6)
    shy = (a1[0] * c - a1[1] * sin) / safe
    shx = (a0[1] * c - a0[0] * sin) / safe + jnp.sin(2 * r)
    return jnp.stack([translation[0], translation[1], shx, shy, scale, r])

  roots = jax.vmap(newton)(jnp.linspace(-jnp.pi, jnp.pi, 6, endpoint=False))
  thetas = jax.vmap(theta)(roots)
  outside = jnp.sum(jnp.maximum(low - thetas, 0) + jnp.maximum(thetas - high, 0), -1)
  outside = outside + jnp.where(jnp.abs(jax.vmap(g)(roots)) < 1e-3, 0.0, 1e3)  # not a root
  return thetas[jnp.argsort(outside)[:num_roots]]


def _blur(image, sigma):
  """Gaussian blur of an HWC image (zero background beyond the border); sigma 0: the image."""
  if not sigma:
    return image
  size = image.shape[0]
  offsets = np.arange(size)[:, None] - np.arange(size)[None]
  kernel = jnp.asarray(np.exp(-0.5 * (offsets / sigma)**2) / (np.sqrt(2 * np.pi) * sigma),
                       image.dtype)
  return jnp.einsum('ij,jkc,lk->ilc', kernel, image, kernel)


def _solve_spd(a, b):
  """Solves a small symmetric positive definite system by an unrolled Cholesky factorization:
  elementwise operations only, which batch well under vmap."""
  n = a.shape[0]
  lower = [[None] * n for _ in range(n)]
  for j in range(n):
    lower[j][j] = jnp.sqrt(jnp.maximum(a[j, j] - sum(lower[j][k]**2 for k in range(j)), 1e-20))
    for i in range(j + 1, n):
      lower[i][j] = (a[i, j] - sum(lower[i][k] * lower[j][k] for k in range(j))) / lower[j][j]
  z = []
  for i in range(n):
    z.append((b[i] - sum(lower[i][k] * z[k] for k in range(i))) / lower[i][i])
  x = [None] * n
  for i in reversed(range(n)):
    x[i] = (z[i] - sum(lower[k][i] * x[k] for k in range(i + 1, n))) / lower[i][i]
  return jnp.stack(x)


def _levenberg_marquardt(residual, u, num_steps):
  """Box-constrained Levenberg-Marquardt on u in [0, 1]^6: only steps that lower the cost are
  taken, so the result is never worse than the start. Returns (u, cost)."""

  def step(_, carry):
    u, damping, cost = carry
    r, jac = residual(u), jax.jacfwd(residual)(u)
    jtj = jac.T @ jac
    system = jtj + damping * (jnp.diag(jnp.diag(jtj)) + 1e-6 * jnp.eye(u.shape[0]))
    trial = jnp.clip(u + _solve_spd(system, -(jac.T @ r)), 0.0, 1.0)
    trial_cost = jnp.sum(residual(trial)**2)
    better = trial_cost < cost
    return (jnp.where(better, trial, u), jnp.where(better, damping / 3, damping * 4),
            jnp.where(better, trial_cost, cost))

  u, _, cost = jax.lax.fori_loop(0, num_steps, step,
                                 (u, jnp.asarray(1e-2, u.dtype), jnp.sum(residual(u)**2)))
  return u, cost


@functools.partial(jax.jit, static_argnames=('num_candidates', 'num_restarts', 'num_steps',
                                             'num_random', 'schedule'))
def _project(images, labels, key, prototypes, ranges, candidate_font, candidate_theta, *,
             num_candidates, num_restarts, num_steps, num_random, schedule):
  low, high = ranges[0], ranges[1]
  span = high - low
  num_fonts = prototypes.shape[0]
  angles = jnp.arange(num_candidates) * (2 * jnp.pi / max(num_candidates, 1))

  def one(image, label, key, font0, theta0):
    protos = prototypes[:, label]  # (F, H, W, C)
    render = lambda f, u: transforms.transform(protos[f], low + span * u)
    cost = lambda f, u: jnp.sum((render(f, u) - image)**2)
    image_mean, image_cov = _moments(image)
    whiten = _matrix_power(image_cov, -0.5)

    def font_starts(proto):
      # Moments fix the warp up to a rotation phi of the whitened frame: Sigma_proto = A Sigma A^T
      # and mean_proto = A mean + t give A = Sigma_proto^1/2 R(phi) Sigma^-1/2 (det A > 0).
      proto_mean, proto_cov = _moments(proto)
      colour = _matrix_power(proto_cov, 0.5)

      def at(phi):
        rotation = jnp.array([[jnp.cos(phi), -jnp.sin(phi)], [jnp.sin(phi), jnp.cos(phi)]])
        matrix = colour @ rotation @ whiten
        return _thetas_of_matrix(matrix, proto_mean - matrix @ image_mean, low, high, 1)

      return jnp.clip((jax.vmap(at)(angles).reshape(-1, 6) - low) / span, 0.0, 1.0)

    starts = jax.vmap(font_starts)(protos)  # (F, roots * num_candidates, 6)
    if num_random:
      starts = jnp.concatenate([starts, jax.random.uniform(key, (num_fonts, num_random, 6))], 1)
    # Blurred images first: their least-squares landscape has wide basins, so a start a few
    # pixels off converges; the sharp images then make the fit exact.
    sigmas = sorted({stage[2] for stage in schedule} | {0.0})
    blurred = {sigma: (_blur(image, sigma), jax.vmap(lambda p, s=sigma: _blur(p, s))(protos))
               for sigma in sigmas}

    def residual_of(f, sigma):
      target, sources = blurred[sigma]
      return lambda v: (transforms.transform(sources[f], low + span * v) - target).ravel()

    first_sigma = schedule[0][2] if schedule else 0.0
    coarse = jax.vmap(lambda f, us: jax.vmap(lambda v: jnp.sum(residual_of(f, first_sigma)(v)**2))(
        us))(jnp.arange(num_fonts), starts)
    best = jnp.argsort(coarse, axis=1)[:, :num_restarts]
    u = jnp.take_along_axis(starts, best[..., None], axis=1).reshape(-1, 6)
    font = jnp.repeat(jnp.arange(num_fonts), num_restarts)
    # Successive halving: a few Levenberg-Marquardt steps for every start, more for the best.
    for keep, steps, sigma in (*schedule, (None, num_steps, 0.0)):
      u, costs = jax.vmap(lambda f, v, s=steps, b=sigma: _levenberg_marquardt(
          residual_of(f, b), v, s))(font, u)
      if keep:  # 0 keeps every start
        order = jnp.argsort(costs)[:min(keep, costs.shape[0])]
        font, u = font[order], u[order]
    if candidate_font is not None:  # a known point of the manifold competes as it is
      font = jnp.append(font, font0)
      u = jnp.concatenate([u, ((theta0 - low) / span)[None]])
      costs = jnp.append(costs, cost(font0, (theta0 - low) / span))
    index = jnp.argmin(costs)
    return font[index], low + span * u[index], jnp.sqrt(costs[index])

  keys = jax.random.split(key, images.shape[0])
  if candidate_font is None:
    return jax.vmap(lambda *a: one(*a, None, None))(images, labels, keys)
  return jax.vmap(one)(images, labels, keys, candidate_font, candidate_theta)


# Successive halving: (starts kept (0: all), Levenberg-Marquardt steps before keeping them, blur
# sigma in pixels of the images they fit). Measured by benchmarks/projection.py.
SCHEDULE = ((0, 6, 1.5), (8, 4, 0.0), (2, 8, 0.0))


def project(fonts, images, labels, key=None, num_candidates=32, num_restarts=3, num_steps=20,
            learning_rate=None, *, candidate=None, num_random=0, schedule=SCHEDULE):
  """Nearest point of each image on its class manifold: (font, theta, L2 residual).

  The residual is the distance to the true manifold of the given class (Stutz et al., Sec. 3).
  Each (image, font) is a 6-parameter least-squares problem. Image moments give the warp up to
  one rotation (`num_candidates` angles per font); the `num_restarts` best starts per font run
  box-constrained Levenberg-Marquardt, first on blurred images (wide basins), then on the sharp
  ones, keeping fewer starts for more steps (`schedule`); the last two get `num_steps` more.
  On clean samples the residual is 0 (to float precision) for about 97% of hard fonts images
  (benchmarks/projection.py); the rest end in a nearby font's or a local minimum.

  Args:
    candidate: optional (font, theta) of a known point on each image's class manifold (e.g. the
      clean image an adversarial example was made from); the result is never farther than it.
    num_random: extra uniformly random starts per font (from `key`).
    learning_rate: ignored (the Adam projection it tuned is gone); kept for old configs.
  """
  del learning_rate
  if candidate is None:
    font0 = theta0 = None
  else:
    font0 = jnp.asarray(candidate[0], jnp.int32)
    theta0 = jnp.asarray(candidate[1], jnp.float32)
  key = jax.random.key(0) if key is None else key
  return _project(jnp.asarray(images), jnp.asarray(labels), key, jnp.asarray(fonts.prototypes),
                  jnp.asarray(fonts.ranges), font0, theta0, num_candidates=num_candidates,
                  num_restarts=num_restarts, num_steps=num_steps, num_random=num_random,
                  schedule=tuple(tuple(stage) for stage in schedule))
