"""FAB on a trained classifier: its minimal perturbations next to DeepFool's, and its time.

    python benchmarks/fab.py --workdir=/tmp/advgen/fonts [--num 100] [--steps 100]

Loads the first classifier of a scripts/train_classifier.py workdir and its first --num test
images, and attacks the correctly classified ones with untargeted FAB (L-inf, L2, L1), FAB-T
(9 targets, L-inf and L2; AutoAttack's setting) and DeepFool (L-inf, L2; 100 iterations). It
prints per attack the success rate, the median distance of the successes, the fraction of images
where FAB's distance is at most DeepFool's in the same norm, and the seconds of a second, compiled
call.
"""

import argparse
import time

import jax
import numpy as np

from advgen import attacks, models
from advgen.models import stacked
from advgen.studies import runs


def _timed(fn):
  jax.block_until_ready(fn())  # compiles
  start = time.perf_counter()
  out = jax.block_until_ready(fn())
  return out, time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--num', type=int, default=100)
  parser.add_argument('--steps', type=int, default=100)
  args = parser.parse_args()
  _, dataset, module, variables = runs.load_classifiers(args.workdir)
  logits_fn = models.logits_fn(module, stacked.select(variables, 0))
  x, y = dataset.x_test[:args.num], dataset.y_test[:args.num]
  correct = np.asarray(logits_fn(x)).argmax(-1) == np.asarray(y)
  x, y = x[correct], y[correct]
  key = jax.random.key(0)
  print(f'{len(y)} of {args.num} test images correctly classified; {args.steps} FAB iterations')

  deepfool = {}
  for norm in ('linf', 'l2'):
    res, seconds = _timed(lambda n=norm: attacks.deepfool(logits_fn, x, y, norm=n, max_iter=100))
    deepfool[norm] = np.where(res.success, res.distance, np.inf)
    print(f'deepfool {norm:4s}: success {np.mean(res.success):.3f}, median distance '
          f'{np.median(res.distance[res.success]):.4f}, {seconds:.2f} s')
  for name, norm, targeted in [('fab', 'linf', False), ('fab', 'l2', False), ('fab', 'l1', False),
                               ('fab_t', 'linf', True), ('fab_t', 'l2', True)]:
    res, seconds = _timed(lambda n=norm, t=targeted: attacks.fab(
        logits_fn, x, y, key, norm=n, num_steps=args.steps, targeted=t))
    distance = np.where(res.success, res.distance, np.inf)
    versus = (f', <= deepfool on {np.mean(distance <= deepfool[norm]):.3f}'
              if norm in deepfool else '')
    print(f'{name:5s} {norm:4s}: success {np.mean(res.success):.3f}, median distance '
          f'{np.median(res.distance[res.success]):.4f}{versus}, {seconds:.2f} s')


if __name__ == '__main__':
  main()
