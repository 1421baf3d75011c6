"""Exactness and speed of the true fonts projection (`fonts.project`).

    python benchmarks/projection.py [--num 1000] [--batch 100] [--difficulty hard] [--seed 0]

Clean samples lie exactly on their class manifold, so their projection residual should be ~0:
it prints the residual quantiles and the fraction at most 0.01 (goal: >= 99.5%), and the
seconds per 100 images after compilation (goal: <= 10 s on a 2-core CPU). It then projects
the clean images plus L-inf noise of 0.1 (as far from the manifold as a regular adversarial
example), without and with the clean image's (font, theta) as a candidate, and prints how often
the projection ends farther away than the clean image, a point known to be on the manifold
(with the candidate: never).
"""

import argparse
import time

import jax
import numpy as np

from advgen.data import fonts


def _project_all(manifold, images, labels, batch, **kwargs):
  """(residuals, seconds per image after the first batch, which compiles)."""
  parts, seconds = [], 0.0
  for start in range(0, len(images), batch):
    begin = time.perf_counter()
    part = fonts.project(manifold, images[start:start + batch], labels[start:start + batch],
                         jax.random.key(start), **{
                             k: (v[0][start:start + batch], v[1][start:start + batch])
                             if k == 'candidate' else v for k, v in kwargs.items()})
    parts.append(np.asarray(jax.block_until_ready(part)[2]))
    if start:
      seconds += time.perf_counter() - begin
  timed = max(len(images) - batch, 1)
  return np.concatenate(parts), seconds / timed


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--num', type=int, default=1000)
  parser.add_argument('--batch', type=int, default=100)
  parser.add_argument('--difficulty', default='hard')
  parser.add_argument('--seed', type=int, default=0, help='which clean samples')
  parser.add_argument('--noise', type=float, default=0.1)
  args = parser.parse_args()

  manifold = fonts.manifold(args.difficulty)
  x, y, latents = fonts.sample(manifold, jax.random.key(args.seed), args.num)
  residual, per_image = _project_all(manifold, x, y, args.batch)
  quantiles = np.quantile(residual, [0.5, 0.9, 0.99, 0.995, 1.0])
  print(f'{args.num} clean {args.difficulty} fonts images (seed {args.seed}), '
        f'{manifold.num_fonts} fonts, {jax.devices()[0].device_kind}')
  print('clean residual quantiles 50/90/99/99.5/100%: ' +
        ' '.join(f'{q:.4f}' for q in quantiles))
  print(f'clean residual <= 0.01: {np.mean(residual <= 0.01):.4f} of images')
  print(f'seconds per 100 images: {100 * per_image:.2f}')

  noise = np.random.default_rng(0).choice([-args.noise, args.noise], x.shape).astype(np.float32)
  perturbed = np.clip(x + noise, 0.0, 1.0)
  clean_distance = np.linalg.norm((perturbed - x).reshape(len(x), -1), axis=1)
  alone, _ = _project_all(manifold, perturbed, y, args.batch)
  given, _ = _project_all(manifold, perturbed, y, args.batch,
                          candidate=(latents['font'], latents['theta']))
  print(f'perturbed (L-inf {args.noise}): farther than the clean image '
        f'{np.mean(alone > clean_distance * (1 + 1e-4)):.4f} without the candidate, '
        f'{np.mean(given > clean_distance * (1 + 1e-4)):.4f} with it; median residual / clean '
        f'distance {np.median(given / clean_distance):.3f}')


if __name__ == '__main__':
  main()
