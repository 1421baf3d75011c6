"""Early exit: Stutz et al.'s attack on a trained fonts conv net, stopping once every example of
every restart has succeeded against running all 40 steps.

    python benchmarks/early_exit.py [--workdir /tmp/advgen/fonts] [--num 1000] [--batch 250]

L-inf PGD with Adam (lr 0.005), 40 iterations, 5 restarts, eps 0.3, early stopping, on the first
`--num` test images in batches of `--batch` (configs/attack_fonts.py), model 0 of the classifier
workdir. Without a trained workdir it trains one first (`scripts/train_classifier.py
--config=configs/fonts.py --config.num_epochs=2`, about a minute on 2 CPU cores). Both runs are
timed in turns, fastest of `--repeats`; it checks that they return the same results and prints
the ratio of their times.
"""

import argparse
import os
import subprocess
import sys
import time

import jax
import numpy as np
import optax

from advgen import attacks
from advgen.models import stacked
from advgen.studies import runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _classifier(workdir, epochs):
  if not os.path.exists(os.path.join(workdir, 'results.json')):
    subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'train_classifier.py'),
                    '--config=' + os.path.join(ROOT, 'configs', 'fonts.py'), f'--workdir={workdir}',
                    f'--config.num_epochs={epochs}'], check=True)
  _, dataset, module, variables = runs.load_classifiers(workdir)
  return dataset, module, stacked.select(variables, 0)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', default='/tmp/advgen/early_exit_fonts')
  parser.add_argument('--epochs', type=int, default=2, help='when it trains the classifier')
  parser.add_argument('--num', type=int, default=1000)
  parser.add_argument('--batch', type=int, default=250)
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args()

  dataset, module, variables = _classifier(args.workdir, args.epochs)
  logits_fn = lambda images: module.apply(variables, images, train=False)
  x, y = dataset.x_test[:args.num], dataset.y_test[:args.num]
  adam = optax.adam(0.005)
  key = jax.random.key(0)

  def attack(early_exit):
    def run():
      out = []
      for start in range(0, len(x), args.batch):
        threat = attacks.LinfBall(x[start:start + args.batch], 0.3)
        out.append(attacks.pgd(logits_fn, threat, y[start:start + args.batch],
                               jax.random.fold_in(key, start), num_steps=40, step_rule=adam,
                               restarts=5, early_exit=early_exit))
      return jax.block_until_ready(out)
    return run

  runners = {'early_exit': attack(True), 'every_step': attack(False)}
  results = {name: run() for name, run in runners.items()}  # compile, and compare
  for field in ('x_adv', 'success', 'distance', 'restart_success'):
    for a, b in zip(results['early_exit'], results['every_step']):
      np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
  best = {name: float('inf') for name in runners}
  for _ in range(args.repeats):
    for name, run in runners.items():
      start = time.perf_counter()
      run()
      best[name] = min(best[name], time.perf_counter() - start)
  success = np.concatenate([np.asarray(r.restart_success) for r in results['every_step']])
  correct = np.argmax(np.asarray(logits_fn(x)), -1) == y
  print(f'{args.num} test images, batch {args.batch}, Adam 0.005, 40 steps, 5 restarts, eps 0.3; '
        f'clean accuracy {correct.mean():.3f}, success rate (per restart, on correct) '
        f'{success[correct].mean():.3f}')
  print(f'early exit {best["early_exit"]:.2f} s, every step {best["every_step"]:.2f} s: '
        f'early exit is {best["every_step"] / best["early_exit"]:.2f}x as fast (same results)')


if __name__ == '__main__':
  main()
