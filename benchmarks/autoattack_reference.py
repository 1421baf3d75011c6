"""advgen's AutoAttack against the authors' reference (pyautoattack, PyTorch) on the same weights.

    python benchmarks/autoattack_reference.py \
        --workdirs=/tmp/refbench/fonts,/tmp/refbench/fonts_adversarial [--num 1000] \
        [--python /work/refenv/bin/python] [--attacks apgd_ce]

The reference lives in its own environment, never a dependency of advgen:

    python -m venv /work/refenv && /work/refenv/bin/pip install torch==2.13.0 pyautoattack numpy

For each classifier workdir (scripts/train_classifier.py; its first model) this exports the
weights to an .npz in torch layouts, rebuilds the net in PyTorch (autoattack_reference_torch.py,
run by --python as a subprocess; arrays go through .npz files in --out) and checks that its
logits on the first --num test images match advgen's (max abs difference <= --tolerance, else it
stops). Then, per norm, the reference's standard AutoAttack and advgen's run one after the other
on those images, and it prints the robust accuracy of both after every stage, the points on
which their final verdicts differ, and the wall times: the reference's `run_standard_evaluation`
(torch on --threads threads, OpenMP waiting passively) and advgen's jitted cascade including its
compilation (and the compilation alone), with the load average before each. --attacks runs only
the given stages (version 'custom' on both sides, one restart each) to find the stage that
differs. Results go to --out/results.json.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import jax
import numpy as np

from advgen import models
from advgen.attacks.autoattack import ROBUST, autoattack, stage_accuracy
from advgen.models import stacked
from advgen.studies import runs

TORCH_SIDE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                          'autoattack_reference_torch.py')
REFERENCE_NAMES = {'apgd_ce': 'apgd-ce', 'apgd_dlr': 'apgd-dlr', 'apgd_t': 'apgd-t',
                   'fab': 'fab', 'fab_t': 'fab-t', 'square': 'square'}
REFERENCE_NORMS = {'linf': 'Linf', 'l2': 'L2', 'l1': 'L1'}
STANDARD = ('apgd_ce', 'apgd_t', 'fab_t', 'square')
_SHOWN = 10  # differing points listed in the table (all of them go to results.json)


def export(variables):
  """Torch layouts of a StutzConvNet's Flax variables (one model): conv kernels HWIO -> OIHW,
  dense kernels (in, out) -> (out, in), batch norm scale, bias and running statistics; the
  hidden layer's bias (the default, linear form) or its batch norm (`stutz_convnet_bn_relu`)."""
  params, stats = variables['params'], variables['batch_stats']
  convs = sorted((k for k in params if k.startswith('Conv_')), key=lambda k: int(k[5:]))
  dense = sorted((k for k in params if k.startswith('Dense_')), key=lambda k: int(k[6:]))
  norms = sorted((k for k in params if k.startswith('BatchNorm_')), key=lambda k: int(k[10:]))
  if len(dense) != 2 or len(norms) not in (len(convs), len(convs) + 1):
    raise SystemExit(f'not a StutzConvNet: layers {sorted(params)}')
  out = {}
  names = [f'bn{i}' for i in range(len(convs))] + ['bn_hidden']  # zip drops it if absent
  for name, layer in zip(names, norms):
    out.update({f'{name}.scale': params[layer]['scale'], f'{name}.bias': params[layer]['bias'],
                f'{name}.mean': stats[layer]['mean'], f'{name}.var': stats[layer]['var']})
  for i, layer in enumerate(convs):
    out[f'conv{i}.weight'] = np.transpose(params[layer]['kernel'], (3, 2, 0, 1))
  out['hidden.weight'] = np.transpose(params[dense[0]]['kernel'])
  if 'bias' in params[dense[0]]:
    out['hidden.bias'] = params[dense[0]]['bias']
  out['logits.weight'] = np.transpose(params[dense[1]]['kernel'])
  out['logits.bias'] = params[dense[1]]['bias']
  return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}


def reference(args, weights, images, out, *flags):
  """Runs the torch side in its environment; its output .npz as a dict."""
  command = [args.python, TORCH_SIDE, weights, images, out, f'--threads={args.threads}', *flags]
  # OpenMP's spinning threads run ~10x slower on a shared CPU; passive waiting keeps torch fair
  env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get('OMP_WAIT_POLICY', 'PASSIVE'))
  done = subprocess.run(command, check=False, env=env)
  if done.returncode:
    raise SystemExit(f'the reference side failed ({done.returncode}): {" ".join(command)}')
  with np.load(out) as result:
    return dict(result)


def advgen_side(logits_fn, x, y, key, norm, epsilon, stages):
  """advgen's AutoAttack, compiled ahead of time so that compilation is timed on its own."""
  custom = dict(version='custom', attacks_to_run=stages) if stages != STANDARD else {}
  run = jax.jit(lambda x, y, key, epsilon: autoattack(logits_fn, x, y, key, norm=norm,
                                                     epsilon=epsilon, **custom))
  start = time.perf_counter()
  compiled = run.lower(x, y, key, epsilon).compile()
  compile_seconds = time.perf_counter() - start
  res = jax.block_until_ready(compiled(x, y, key, epsilon))
  seconds = time.perf_counter() - start
  accuracy = stage_accuracy(res)
  summary = {'clean_accuracy': accuracy['clean_accuracy'],
             'robust_accuracy': accuracy['robust_accuracy'],
             'stages': {REFERENCE_NAMES[name]: accuracy[f'robust_accuracy_{name}']
                        for name in res.names},
             'seconds': seconds, 'compile_seconds': compile_seconds}
  # stage indexes names; ROBUST (-1) and MISCLASSIFIED (-2) index the two appended from the end
  verdicts = np.array(tuple(REFERENCE_NAMES[n] for n in res.names) + ('clean error', 'robust'))
  return verdicts[np.asarray(res.stage)], summary


def _rows(name, norm, epsilon, ref, ours):
  """Table lines of one (model, norm): accuracy per stage of both sides, then the times."""
  lines = [f'{name} {norm} eps={epsilon:g}: clean {ref["clean_accuracy"]:.3f} (reference) '
           f'{ours["clean_accuracy"]:.3f} (advgen)']
  for stage, theirs in ours['stages'].items():
    value = ref['stages'].get(stage, ref['robust_accuracy'])  # it skips stages once all broken
    lines.append(f'  after {stage:9s} reference {value:6.1%}  advgen {theirs:6.1%}  '
                 f'diff {100 * (theirs - value):+5.1f} points')
  differ = ', '.join(f'{i} ({v})' for i, v in list(ours['disagree'].items())[:_SHOWN])
  lines.append(f'  final verdicts differ on {len(ours["disagree"])} points'
               + (f': {differ}' if differ else '')
               + (' ...' if len(ours['disagree']) > _SHOWN else ''))
  lines.append(f'  time reference {ref["seconds"]:.1f} s (load {ref["load"]:.1f}), '
               f'advgen {ours["seconds"]:.1f} s incl. {ours["compile_seconds"]:.1f} s compilation '
               f'(load {ours["load"]:.1f}): '
               f'ratio advgen / reference {ours["seconds"] / ref["seconds"]:.2f} '
               f'({(ours["seconds"] - ours["compile_seconds"]) / ref["seconds"]:.2f} compiled)')
  return lines


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdirs', required=True, help='comma-separated classifier workdirs')
  parser.add_argument('--num', type=int, default=1000, help='first test images')
  parser.add_argument('--norms', default='linf,l2')
  parser.add_argument('--linf_epsilon', type=float, default=0.3)
  parser.add_argument('--l2_epsilon', type=float, default=2.0)
  parser.add_argument('--attacks', default=','.join(STANDARD),
                      help=f'stages of {", ".join(REFERENCE_NAMES)} (default: standard)')
  parser.add_argument('--python', default='/work/refenv/bin/python',
                      help="the reference environment's interpreter")
  parser.add_argument('--threads', type=int, default=2, help='torch threads')
  parser.add_argument('--tolerance', type=float, default=1e-4, help='max abs logit difference')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--out', default='/tmp/refbench')
  args = parser.parse_args()
  stages = tuple(args.attacks.split(','))
  unknown = [s for s in stages if s not in REFERENCE_NAMES]
  if unknown:
    raise SystemExit(f'unknown stages {unknown}; choose from {", ".join(REFERENCE_NAMES)}')
  ref_flags = [] if stages == STANDARD else [
      '--attacks=' + ','.join(REFERENCE_NAMES[s] for s in stages)]
  os.makedirs(args.out, exist_ok=True)
  results, table = [], []
  for index, workdir in enumerate(args.workdirs.split(',')):
    name = os.path.basename(os.path.normpath(workdir))
    _, dataset, module, variables = runs.load_classifiers(workdir)
    variables = jax.tree.map(np.asarray, stacked.select(variables, 0))
    logits_fn = models.logits_fn(module, variables)
    x, y = np.asarray(dataset.x_test[:args.num]), np.asarray(dataset.y_test[:args.num])
    weights = os.path.join(args.out, f'{index}_{name}_weights.npz')
    images = os.path.join(args.out, f'{index}_{name}_images.npz')
    np.savez(weights, **export(variables))
    np.savez(images, x=np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))), y=y.astype(np.int64))
    ours_logits = np.asarray(logits_fn(x))
    theirs = reference(args, weights, images, os.path.join(args.out, f'{index}_{name}_logits.npz'))
    gap = float(np.max(np.abs(theirs['logits'] - ours_logits)))
    print(f'{name}: max abs logit difference torch vs advgen {gap:.2e} on {len(y)} images '
          f'(logits up to {np.max(np.abs(ours_logits)):.1f})', flush=True)
    if not gap <= args.tolerance:
      raise SystemExit(f'{name}: the exported torch model is not advgen\'s ({gap:.2e} > '
                       f'{args.tolerance:g}); nothing compared')
    for norm in args.norms.split(','):
      epsilon = args.linf_epsilon if norm == 'linf' else args.l2_epsilon
      load = os.getloadavg()[0]
      ref = reference(args, weights, images, os.path.join(args.out, f'{index}_{name}_{norm}.npz'),
                      f'--norm={REFERENCE_NORMS[norm]}', f'--epsilon={epsilon}',
                      f'--seed={args.seed}', *ref_flags)
      summary = dict(json.loads(str(ref['summary'])), load=load)
      load = os.getloadavg()[0]
      verdicts, ours = advgen_side(logits_fn, x, y, jax.random.key(args.seed), norm, epsilon,
                                   stages)
      differ = np.flatnonzero((verdicts == 'robust') != ref['robust'])
      ours.update(load=load, disagree={
          int(i): f'advgen {verdicts[i]}, reference {"robust" if ref["robust"][i] else "broken"}'
          for i in differ})
      results.append({'model': name, 'workdir': workdir, 'norm': norm, 'epsilon': epsilon,
                      'num': len(y), 'logit_gap': gap, 'reference': summary, 'advgen': ours,
                      'ratio': ours['seconds'] / summary['seconds']})
      rows = _rows(name, norm, epsilon, summary, ours)
      table += rows
      print('\n'.join(rows), flush=True)
  with open(os.path.join(args.out, 'results.json'), 'w') as f:
    json.dump({'command': ' '.join(sys.argv), 'backend': jax.default_backend(),
               'results': results}, f, indent=2)
  print('\n'.join(table))


if __name__ == '__main__':
  main()
