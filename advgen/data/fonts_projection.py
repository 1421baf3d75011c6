"""The true projection of fonts images: the nearest point of their class manifold.

Each (image, font) is a 6-parameter least-squares problem over theta. Image moments fix the warp
up to one rotation, which is searched (a grid and a polar matching), and box-constrained
Levenberg-Marquardt from the best starts, on blurred and then sharp images, makes the fit exact.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import ndimage

from advgen import transforms
from advgen.progress import Progress


def _coords(height, width):
  """The warp's [-1, 1] (x, y) coordinates of each pixel, row by row."""
  return np.stack(np.meshgrid(np.linspace(-1.0, 1.0, width), np.linspace(-1.0, 1.0, height),
                              indexing='xy'), -1).reshape(-1, 2).astype(np.float32)


_POLAR_ANGLES = 128  # rotations of the whitened frame compared at once
_MOMENT_THRESHOLD = 0.2  # intensities below count as background: weak noise moves no moment


def _moments(image):
  """Centroid and covariance of an image's bright pixels, in the warp's [-1, 1] coordinates."""
  coords = _coords(*image.shape[:2])
  weight = jnp.maximum(image.reshape(-1) - _MOMENT_THRESHOLD, 0.0)
  mass = jnp.sum(weight) + 1e-8
  mean = weight @ coords / mass
  centred = coords - mean
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


def _polar(image, mean, root, radii, num_angles):
  """An HWC image sampled (bilinearly, channels summed) at mean + root @ z for z on polar rings
  (radii, num_angles): in the whitened frame of its moments a warp is a rotation of the rings."""
  alpha = jnp.arange(num_angles) * (2 * jnp.pi / num_angles)
  z = radii[:, None, None] * jnp.stack([jnp.cos(alpha), jnp.sin(alpha)], -1)  # (R, A, 2)
  xy = mean + z @ root.T
  pixels = (xy + 1.0) * 0.5 * (jnp.asarray(image.shape[1::-1], xy.dtype) - 1)  # (col, row)
  sample = lambda channel: ndimage.map_coordinates(
      channel, [pixels[..., 1], pixels[..., 0]], order=1, mode='constant', cval=0.0)
  return sum(sample(image[..., c]) for c in range(image.shape[-1]))


def _best_rotations(image_rings, proto_rings, radii, num):
  """The `num` rotations phi of the whitened frame with the smallest squared error between the
  image and the rotated prototype rings (all angles at once by FFT), local minima first, each
  refined between grid angles by a parabola."""
  num_angles = image_rings.shape[-1]
  correlation = jnp.fft.irfft(jnp.conj(jnp.fft.rfft(image_rings)) * jnp.fft.rfft(proto_rings),
                              n=num_angles)
  error = radii @ (jnp.sum(proto_rings**2, -1, keepdims=True) - 2 * correlation)  # (A,)
  before, after = jnp.roll(error, 1), jnp.roll(error, -1)
  minimum = (error <= before) & (error <= after)
  index = jnp.argsort(jnp.where(minimum, error, error + jnp.max(jnp.abs(error)) * 4))[:num]
  curvature = before[index] - 2 * error[index] + after[index]
  offset = jnp.where(curvature > 0, 0.5 * (before[index] - after[index]) /
                     jnp.maximum(curvature, 1e-12), 0.0)
  return (index + jnp.clip(offset, -0.5, 0.5)) * (2 * jnp.pi / num_angles)


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
  def linearize(v):  # (jacobian, residual) in one forward pass
    return jax.jacfwd(lambda w: (residual(w),) * 2, has_aux=True)(v)

  def step(_, carry):
    u, damping, jac, r = carry
    jtj = jac.T @ jac
    system = jtj + damping * (jnp.diag(jnp.diag(jtj)) + 1e-6 * jnp.eye(u.shape[0]))
    trial = jnp.clip(u + _solve_spd(system, -(jac.T @ r)), 0.0, 1.0)
    trial_jac, trial_r = linearize(trial)
    better = jnp.sum(trial_r**2) < jnp.sum(r**2)
    pick = lambda new, old: jnp.where(better, new, old)
    return (pick(trial, u), pick(damping / 3, damping * 4), pick(trial_jac, jac),
            pick(trial_r, r))

  u, _, _, r = jax.lax.fori_loop(0, num_steps, step,
                                 (u, jnp.asarray(1e-2, u.dtype), *linearize(u)))
  return u, jnp.sum(r**2)


@functools.partial(jax.jit, static_argnames=('num_candidates', 'num_rotations', 'num_restarts',
                                             'num_steps', 'num_random', 'schedule'))
def _project(images, labels, keys, prototypes, ranges, candidate_font, candidate_theta, *,
             num_candidates, num_rotations, num_restarts, num_steps, num_random, schedule):
  low, high = ranges[0], ranges[1]
  span = high - low
  num_fonts = prototypes.shape[0]
  radii = jnp.linspace(0.1, 2.6, 14)

  def one(image, label, key, font0, theta0):
    protos = prototypes[:, label]  # (F, H, W, C)
    render = lambda f, u: transforms.transform(protos[f], low + span * u)
    cost = lambda f, u: jnp.sum((render(f, u) - image)**2)
    # Blurred images first: their least-squares landscape has wide basins, so a start a few
    # pixels off converges; the sharp images then make the fit exact.
    sigmas = sorted({stage[2] for stage in schedule} | {0.0})
    blurred = {sigma: (_blur(image, sigma), jax.vmap(lambda p, s=sigma: _blur(p, s))(protos))
               for sigma in sigmas}

    def residual_of(f, sigma):
      target, sources = blurred[sigma]
      return lambda v: (transforms.transform(sources[f], low + span * v) - target).ravel()

    first_sigma = schedule[0][2] if schedule else 0.0
    image_mean, image_cov = _moments(image)
    whiten = _matrix_power(image_cov, -0.5)
    image_rings = _polar(blurred[first_sigma][0], image_mean, _matrix_power(image_cov, 0.5),
                         radii, _POLAR_ANGLES)

    def font_starts(proto, proto_blurred):
      # Moments fix the warp up to a rotation phi of the whitened frame: Sigma_proto = A Sigma A^T
      # and mean_proto = A mean + t give A = Sigma_proto^1/2 R(phi) Sigma^-1/2 (det A > 0).
      proto_mean, proto_cov = _moments(proto)
      colour = _matrix_power(proto_cov, 0.5)
      proto_rings = _polar(proto_blurred, proto_mean, colour, radii, _POLAR_ANGLES)

      def at(phi):
        rotation = jnp.array([[jnp.cos(phi), -jnp.sin(phi)], [jnp.sin(phi), jnp.cos(phi)]])
        matrix = colour @ rotation @ whiten
        return _thetas_of_matrix(matrix, proto_mean - matrix @ image_mean, low, high, 1)

      grid = jnp.arange(num_candidates) * (2 * jnp.pi / max(num_candidates, 1))
      matched = _best_rotations(image_rings, proto_rings, radii, num_rotations)
      phis = jnp.concatenate([grid, matched])
      return jnp.clip((jax.vmap(at)(phis).reshape(-1, 6) - low) / span, 0.0, 1.0)

    starts = jax.vmap(font_starts)(protos, blurred[first_sigma][1])  # (F, num_candidates, 6)
    if num_random:
      starts = jnp.concatenate([starts, jax.random.uniform(key, (num_fonts, num_random, 6))], 1)
    coarse = jax.vmap(lambda f, us: jax.vmap(lambda v: jnp.sum(residual_of(f, first_sigma)(v)**2))(
        us))(jnp.arange(num_fonts), starts)
    # The best of each kind of start: the grid, the matched rotations and the random starts fail
    # on different images (moments mislead where the border cuts the glyph; random starts don't).
    bounds = np.cumsum([0, num_candidates, num_rotations, num_random])
    best = jnp.concatenate([start + jnp.argsort(coarse[:, start:stop], axis=1)[:, :num_restarts]
                            for start, stop in zip(bounds[:-1], bounds[1:]) if stop > start], 1)
    u = jnp.take_along_axis(starts, best[..., None], axis=1).reshape(-1, 6)
    font = jnp.repeat(jnp.arange(num_fonts), best.shape[1])
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

  if candidate_font is None:
    return jax.vmap(lambda *a: one(*a, None, None))(images, labels, keys)
  return jax.vmap(one)(images, labels, keys, candidate_font, candidate_theta)


# Successive halving: (starts kept (0: all), Levenberg-Marquardt steps before keeping them, blur
# sigma in pixels of the images they fit). Measured by benchmarks/projection.py.
SCHEDULE = ((0, 3, 1.5), (8, 3, 0.0), (2, 8, 0.0))
# Images per compiled call: 100 on the 22 bundled fonts (the size benchmarks/projection.py
# measures); memory grows with images x fonts (every font's starts are fitted at first), so with
# more fonts a call takes fewer images (1000 fonts: 2 per call).
CHUNK = 100
CHUNK_PAIRS = 2200  # image-font pairs per call


def images_per_call(num_fonts):
  return max(1, min(CHUNK, CHUNK_PAIRS // max(num_fonts, 1)))


def project(fonts, images, labels, key=None, num_candidates=32, num_rotations=16, num_restarts=3,
            num_steps=20, learning_rate=None, *, candidate=None, num_random=64, schedule=SCHEDULE,
            progress=None):
  """Nearest point of each image on its class manifold: (font, theta, L2 residual).

  The residual is the distance to the true manifold of the given class (Stutz et al., Sec. 3).
  Each (image, font) is a 6-parameter least-squares problem. Image moments give the warp up to
  one rotation of the whitened frame, tried at `num_candidates` grid angles and at the
  `num_rotations` angles where the polar rings of image and prototype match best; with
  `num_random` uniform starts (moments mislead where the border cuts the glyph), the
  `num_restarts` best starts of each kind per font run box-constrained Levenberg-Marquardt,
  first on blurred images (wide basins), then on the sharp ones, keeping fewer starts for more
  steps (`schedule`); the last two get `num_steps` more. On clean samples the residual is 0 (to
  float precision) for about 99.6% of hard fonts images (benchmarks/projection.py); the rest
  end in a nearby font's or a local minimum.

  Args:
    candidate: optional (font, theta) of a known point on each image's class manifold (e.g. the
      clean image an adversarial example was made from); the result is never farther than it.
    num_random: uniformly random starts per font (from `key`).
    learning_rate: ignored (the Adam projection it tuned is gone); kept for old configs.
    progress: an `advgen.progress.Progress` advanced by the images of each chunk of
      `images_per_call(num_fonts)` (default: its own when there is more than one chunk, as a
      chunk takes seconds).
  """
  del learning_rate
  if candidate is None:
    font0 = theta0 = None
  else:
    font0 = jnp.asarray(candidate[0], jnp.int32)
    theta0 = jnp.asarray(candidate[1], jnp.float32)
  key = jax.random.key(0) if key is None else key
  images, labels = jnp.asarray(images), jnp.asarray(labels)
  num = len(images)
  keys = jax.random.split(key, num)  # per image, whatever the chunks
  chunks = max(-(-num // images_per_call(fonts.prototypes.shape[0])), 1)
  size = max(-(-num // chunks), 1)  # equal chunks: one compiled shape
  if progress is None and chunks > 1:
    progress = Progress(f'projecting {num} images onto their class manifolds', num, 'images')
  parts = []
  for start in range(0, max(num, 1), size):
    rows = np.minimum(np.arange(start, start + size), num - 1) if num else np.arange(0)
    take = lambda a, rows=rows: None if a is None else a[rows]  # the last chunk repeats a row
    parts.append(_project(
        take(images), take(labels), keys[rows], jnp.asarray(fonts.prototypes),
        jnp.asarray(fonts.ranges), take(font0), take(theta0), num_candidates=num_candidates,
        num_rotations=num_rotations, num_restarts=num_restarts, num_steps=num_steps,
        num_random=num_random, schedule=tuple(tuple(stage) for stage in schedule)))
    if progress is not None:
      jax.block_until_ready(parts[-1])
      progress.advance(min(size, num - start))
  return tuple(jnp.concatenate(part)[:num] for part in zip(*parts))
