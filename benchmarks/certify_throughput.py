"""CERTIFY's throughput: noisy samples per second of randomized smoothing against the bare forward
pass, and K models counted together against one after another.

    python benchmarks/certify_throughput.py [--batch 50] [--samples 2000] [--chunks 250,500,1000]
        [--repeats 3] [--models 3]

On Stutz et al.'s conv net (28x28x1, random weights) it prints, per chunk size (noisy images
per classifier call), the votes counted per second by `certify.noise_counts` (noise drawn and
votes accumulated inside one jit-compiled loop) on `--batch` images with `--samples` noisy copies
each, the images per second of the bare jitted forward pass on batches of the chunk's size, and
their ratio. Then it counts `--models` such nets in one program (`studies.certify.count_models`,
as scripts/certify.py does) against one after another (`--models 0` skips it). The methods are
timed in turns, so a busy machine slows them alike; each figure is the best of `--repeats`.
"""

import argparse
import time

import jax

from advgen import certify, models
from advgen.models import stacked
from advgen.studies import certify as certify_study

SIGMA = 0.25


def _seconds(fn):
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def _best(runners, repeats):
  """Seconds of each callable: compiled first, then the fastest of `repeats` rounds in turns."""
  for fn in runners.values():
    jax.block_until_ready(fn())
  times = {name: [] for name in runners}
  for _ in range(repeats):
    for name, fn in runners.items():
      times[name].append(_seconds(fn))
  return {name: min(t) for name, t in times.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=50)
  parser.add_argument('--samples', type=int, default=2000)
  parser.add_argument('--chunks', default='250,500,1000')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--models', type=int, default=3)
  args = parser.parse_args()
  module = models.classifier('stutz_convnet', 10)
  init = lambda key: models.init(module, key, (28, 28, 1))
  variables = init(jax.random.key(0))
  logits_fn = models.logits_fn(module, variables)
  x = jax.random.uniform(jax.random.key(1), (args.batch, 28, 28, 1))
  keys = certify.example_keys(jax.random.key(2), args.batch)
  total = args.batch * args.samples
  print(f'backend {jax.default_backend()}, {args.batch} images x {args.samples} noisy samples')
  print('chunk  certify samples/s  bare forward images/s  ratio')
  forward = jax.jit(logits_fn)
  for chunk in [int(c) for c in args.chunks.split(',')]:
    images = jax.random.uniform(jax.random.key(3), (chunk, 28, 28, 1))
    calls = -(-total // chunk)
    times = _best({
        'certify': lambda: certify.noise_counts(logits_fn, x, keys, SIGMA, args.samples, chunk),
        'bare': lambda: [forward(images) for _ in range(calls)],
    }, args.repeats)
    rate, bare = total / times['certify'], calls * chunk / times['bare']
    print(f'{chunk:5d}  {rate:17,.0f}  {bare:21,.0f}  {rate / bare:5.2f}')
  if args.models:
    per_model = [init(k) for k in jax.random.split(jax.random.key(4), args.models)]
    together = stacked.stack(per_model)
    alone = [stacked.stack([v]) for v in per_model]
    count = lambda v: certify_study.count_models(
        v, x, keys, module=module, num_samples=args.samples, sigma=SIGMA,
        chunk_size=certify.resolve_chunk_size(None))
    times = _best({'together': lambda: count(together),
                   'one_by_one': lambda: [count(v) for v in alone]}, args.repeats)
    print(f'{args.models} models: together {args.models * total / times["together"]:,.0f} '
          f'samples/s, one after another {args.models * total / times["one_by_one"]:,.0f} '
          f'samples/s, ratio {times["one_by_one"] / times["together"]:.2f}')


if __name__ == '__main__':
  main()
