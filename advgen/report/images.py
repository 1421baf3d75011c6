"""Image figures: rows of images with titles (matplotlib) and plain PNG grids (PIL)."""

import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def signed_difference(a, b):
  """b - a mapped to [0, 1] around grey 0.5, scaled by its largest magnitude, for display."""
  d = np.asarray(b, np.float32) - np.asarray(a, np.float32)
  return 0.5 + 0.5 * d / max(float(np.abs(d).max()), 1e-8)


def figure_row(ncols, width=4.2, height=3.4):
  """A figure of `ncols` side-by-side axes, each `width` x `height` inches, and the axes."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  figure = Figure(figsize=(width * ncols, height), layout='constrained')
  FigureCanvasAgg(figure)
  return figure, figure.subplots(1, ncols, squeeze=False)[0]


def image_rows(rows, row_titles, path, column_titles=None, marks=None, title=None):
  """Saves rows of equally many NHWC images in [0, 1] as one PNG grid; `marks` (booleans shaped
  like the grid, optional) frames the marked images in red, e.g. the successful attacks."""
  num_rows, num_cols = len(rows), len(rows[0])
  fig, axes = plt.subplots(num_rows, num_cols, figsize=(num_cols * 1.1, num_rows * 1.2),
                           squeeze=False)
  for r, (images, row_title) in enumerate(zip(rows, row_titles)):
    for c, image in enumerate(images):
      ax = axes[r, c]
      image = np.asarray(image)
      ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap='gray', vmin=0, vmax=1)
      ax.set_xticks([])
      ax.set_yticks([])
      if marks is not None and marks[r][c]:
        for spine in ax.spines.values():
          spine.set_color('red')
          spine.set_linewidth(2)
      if c == 0:
        ax.set_ylabel(row_title, fontsize=7, rotation=0, ha='right', va='center')
      if r == 0 and column_titles is not None:
        ax.set_title(column_titles[c], fontsize=7)
  if title:
    fig.suptitle(title, fontsize=8)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def save_grid(path, rows, scale=2):
  """Writes images (R, C, H, W, ch) in [0, 1] as one PNG grid with a 1-pixel separator."""
  rows = np.asarray(rows)
  r, c, h, w, ch = rows.shape
  canvas = np.full((r * (h + 1) + 1, c * (w + 1) + 1, ch), 0.5, np.float32)
  for i in range(r):
    for j in range(c):
      canvas[1 + i * (h + 1):1 + i * (h + 1) + h, 1 + j * (w + 1):1 + j * (w + 1) + w] = rows[i, j]
  canvas = np.uint8(np.round(np.clip(canvas, 0, 1) * 255))
  image = Image.fromarray(canvas[..., 0] if ch == 1 else canvas)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  image.resize((image.width * scale, image.height * scale), Image.NEAREST).save(path)
  return path
