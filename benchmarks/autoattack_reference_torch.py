"""The reference side of benchmarks/autoattack_reference.py: the authors' AutoAttack (PyTorch).

    /work/refenv/bin/python benchmarks/autoattack_reference_torch.py WEIGHTS IMAGES OUT \
        [--norm Linf --epsilon 0.3 [--attacks apgd-ce,apgd-t]]

Runs in its own environment (torch and pyautoattack, the authors' code packaged; never a
dependency of advgen), so it imports nothing of advgen and no JAX. WEIGHTS is the .npz that
autoattack_reference.py exports from a trained Stutz conv net (torch layouts, batch norm running
statistics), IMAGES an .npz of `x` (NCHW, [0, 1]) and `y`. It writes OUT (.npz): the model's
`logits` on x and, with --norm, the attack's per-point `robust` flags and a `summary` (JSON
string): clean and per-stage robust accuracy, parsed from the reference's own log lines (it
returns only the adversarial images), and the seconds of `run_standard_evaluation`.
"""

import argparse
import json
import logging
import math
import re
import time

import numpy as np
import pyautoattack
import torch
import torch.nn.functional as F

BN_EPSILON = 1e-5  # flax.linen.BatchNorm's default, which advgen's classifiers use
_STAGE_LINE = re.compile(r'robust accuracy after (\S+): ([\d.]+)%')


def _same_padding(size, kernel, stride):
  """XLA's 'SAME' padding of one axis: (low, high), the odd pixel at the high end, which
  torch's symmetric `padding` cannot express (28 -> 14 -> 7 -> 4 pads the last conv (1, 2))."""
  total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


class StutzConvNet(torch.nn.Module):
  """advgen's StutzConvNet in eval mode: centring, 4x4 stride-2 convs without bias, each with
  batch norm and ReLU, then dense and dense to logits (the default, linear form) or dense (no
  bias), batch norm, ReLU, dense (`stutz_convnet_bn_relu`)."""

  def __init__(self, weights):
    super().__init__()
    self.num_conv = sum(1 for name in weights if name.startswith('conv') and
                        name.endswith('.weight'))
    for name, value in weights.items():
      self.register_buffer(name.replace('.', '_'), torch.from_numpy(np.asarray(value)))

  def _norm(self, x, name):
    get = lambda field: getattr(self, f'{name}_{field}')
    return F.batch_norm(x, get('mean'), get('var'), get('scale'), get('bias'), training=False,
                        eps=BN_EPSILON)

  def forward(self, x):
    x = 2.0 * x - 1.0
    for i in range(self.num_conv):
      weight = getattr(self, f'conv{i}_weight')
      kernel, stride = weight.shape[-1], 2
      top, bottom = _same_padding(x.shape[-2], kernel, stride)
      left, right = _same_padding(x.shape[-1], kernel, stride)
      x = F.conv2d(F.pad(x, (left, right, top, bottom)), weight, stride=stride)
      x = F.relu(self._norm(x, f'bn{i}'))
    x = x.permute(0, 2, 3, 1).flatten(1)  # flax flattens NHWC: (h, w, c) order
    if hasattr(self, 'hidden_bias'):
      x = F.linear(x, self.hidden_weight, self.hidden_bias)
    else:
      x = F.relu(self._norm(F.linear(x, self.hidden_weight), 'bn_hidden'))
    return F.linear(x, self.logits_weight, self.logits_bias)


class _StageLog(logging.Handler):
  """Collects the 'robust accuracy after STAGE: P%' lines of the reference's logger."""

  def __init__(self):
    super().__init__(logging.DEBUG)
    self.stages = {}

  def emit(self, record):
    match = _STAGE_LINE.search(record.getMessage())
    if match:
      self.stages[match.group(1).lower()] = float(match.group(2)) / 100


def _attack(model, x, y, args):
  """The reference's AutoAttack on (x, y): per-point robust flags and a summary dict."""
  logger = logging.getLogger('auto-attack')
  logger.setLevel(logging.DEBUG)
  stream = logging.StreamHandler()
  stream.setFormatter(logging.Formatter('[reference] %(message)s'))
  stages = _StageLog()
  logger.addHandler(stream)
  logger.addHandler(stages)
  custom = [name for name in args.attacks.split(',') if name]
  adversary = pyautoattack.AutoAttack(model, norm=args.norm, eps=args.epsilon, seed=args.seed,
                                      version='custom' if custom else 'standard',
                                      attacks=custom or None)
  if custom:  # its constructor gives APGD and FAB 5 restarts; advgen's custom has the standard 1
    adversary.apgd.n_restarts = adversary.fab.n_restarts = 1
  start = time.perf_counter()
  _, y_adv = adversary.run_standard_evaluation(x, y, batch_size=args.batch_size)
  seconds = time.perf_counter() - start
  robust = (y_adv == y).numpy()
  with torch.no_grad():
    clean = float((model(x).argmax(1) == y).float().mean())
  summary = {'clean_accuracy': clean, 'stages': stages.stages,
             'robust_accuracy': float(robust.mean()), 'seconds': seconds,
             'attacks': adversary.attacks_to_run, 'threads': torch.get_num_threads(),
             'torch': torch.__version__, 'pyautoattack': pyautoattack.__version__}
  return robust, summary


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('weights')
  parser.add_argument('images')
  parser.add_argument('out')
  parser.add_argument('--norm', choices=('Linf', 'L2', 'L1'), help='attack (default: logits only)')
  parser.add_argument('--epsilon', type=float, default=0.3)
  parser.add_argument('--attacks', default='', help='comma-separated stages (version custom)')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--threads', type=int, default=2)
  parser.add_argument('--batch_size', type=int, default=250, help="the reference's default")
  args = parser.parse_args()
  torch.set_num_threads(args.threads)
  with np.load(args.weights) as weights:
    model = StutzConvNet(dict(weights)).eval()
  with np.load(args.images) as images:
    x, y = torch.from_numpy(images['x']), torch.from_numpy(images['y']).long()
  with torch.no_grad():
    out = {'logits': model(x).numpy()}
  if args.norm:
    out['robust'], summary = _attack(model, x, y, args)
    out['summary'] = np.array(json.dumps(summary))
  np.savez(args.out, **out)


if __name__ == '__main__':
  main()
