"""PGD throughput at several batch sizes: advgen's engine against torchattacks and a bare gradient.

    python benchmarks/attack_throughput.py [--batches 100,250,1000] [--steps 40] [--repeats 5]
        [--models 5]

On Stutz et al.'s conv net (28x28x1, random weights and batch statistics) it prints, per batch
size, PGD-40 image-steps per second of advgen (`attacks.pgd`, which runs the classifier in
chunks of `pgd.CPU_CHUNK_SIZE` images on CPU; every step runs, `early_exit=False`, as in
torchattacks), of the same attack unchunked (`chunk_size=0`), of
bare jitted input gradients, and of torchattacks.PGD on the same architecture and weights, and
the ratio advgen / torchattacks. torch runs with 1 thread and with all cores and keeps the faster
(torch's OpenMP threads slow down badly on a shared machine). torch and torchattacks are
benchmark-only dependencies (`pip install torch torchattacks`); without them the comparison is
skipped. At the first batch size it then attacks `--models` such nets the way `scripts/attack.py`
does, in one program (`studies.attack.attack_models`), against one after another and a plain
`vmap` (`--models 0` skips it).
The methods are timed in turns within one run, so a busy machine slows them alike; each figure is
the fastest of `--repeats` rounds.
"""

import argparse
import os
import time

import jax
import numpy as np
import optax

from advgen import attacks, models
from advgen.models import stacked
from advgen.studies import attack as attack_study

EPSILON, STEP_SIZE = 0.3, 0.01


def _variables(key):
  """Random weights and non-trivial batch statistics, so BN matters when comparing logits."""
  module = models.classifier('stutz_convnet', 10)
  variables = models.init(module, key, (28, 28, 1))
  keys = iter(jax.random.split(jax.random.key(1), 16))
  stats = {
      name: {'mean': 0.1 * jax.random.normal(next(keys), s['mean'].shape),
             'var': jax.random.uniform(next(keys), s['var'].shape, minval=0.5, maxval=2.0)}
      for name, s in variables['batch_stats'].items()
  }
  return module, {**variables, 'batch_stats': stats}


def model_runners(num_models, x, y, steps):
  """Callables attacking `num_models` stacked nets: as scripts/attack.py does, one after another,
  and vmapped."""
  module, _ = _variables(jax.random.key(0))
  variables = stacked.stack([_variables(k)[1]
                              for k in jax.random.split(jax.random.key(4), num_models)])
  attack = attacks.build(dict(attack='pgd_linf', epsilon=EPSILON, num_steps=steps,
                              step_size=STEP_SIZE))
  key, batch = jax.random.key(0), {'image': x, 'label': y}
  one = lambda v: attack(models.logits_fn(module, v), batch, key)
  single, vmapped = jax.jit(one), jax.jit(jax.vmap(one))
  per_model = [stacked.select(variables, k) for k in range(num_models)]
  return {
      'together': lambda: jax.block_until_ready(attack_study.attack_models(
          variables, batch, key, module=module, attack=attack)),
      'one_by_one': lambda: jax.block_until_ready([single(v) for v in per_model]),
      'vmapped': lambda: jax.block_until_ready(vmapped(variables)),
  }


def _seconds(fn):
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def jax_runners(logits_fn, x, y, steps):
  """Callables for PGD (chunked by default, and unchunked) and for `steps` bare input-gradient
  evaluations."""
  loss = lambda images: optax.softmax_cross_entropy_with_integer_labels(logits_fn(images), y).sum()
  gradient = jax.jit(jax.value_and_grad(loss))
  threat = attacks.LinfBall(x, EPSILON)
  key = jax.random.key(0)

  def pgd(**options):
    return lambda: jax.block_until_ready(attacks.pgd(
        logits_fn, threat, y, key, num_steps=steps, step_size=STEP_SIZE, early_exit=False,
        **options))

  def gradients():
    out = None
    for _ in range(steps):
      out = gradient(x)
    return jax.block_until_ready(out)

  return {'advgen_pgd': pgd(), 'advgen_pgd_unchunked': pgd(chunk_size=0),
          'bare_gradient': gradients}


def _same_padding(size):
  """Flax 'SAME' padding of a 4x4 stride-2 convolution: (low, high) for an input of `size`."""
  total = max((-(-size // 2) - 1) * 2 + 4 - size, 0)
  return total // 2, total - total // 2


def torch_model(variables):
  """The same network in torch (NCHW), weights copied from the Flax variables."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  params, stats = variables['params'], variables['batch_stats']
  tensor = lambda a: torch.tensor(np.asarray(a))

  def batch_norm(name, cls):
    layer = cls(params[name]['scale'].shape[0], eps=1e-5)
    layer.weight.data, layer.bias.data = tensor(params[name]['scale']), tensor(params[name]['bias'])
    layer.running_mean.data, layer.running_var.data = (tensor(stats[name]['mean']),
                                                       tensor(stats[name]['var']))
    return layer

  def linear(p):
    layer = nn.Linear(*p['kernel'].shape, bias='bias' in p)
    layer.weight.data = tensor(p['kernel'].T)
    if 'bias' in p:
      layer.bias.data = tensor(p['bias'])
    return layer

  class StutzConvNet(nn.Module):

    def __init__(self):
      super().__init__()
      self.pads, convs, size = [], [], 28
      for i in range(3):
        p = params[f'Conv_{i}']
        conv = nn.Conv2d(p['kernel'].shape[2], p['kernel'].shape[3], 4, stride=2,
                         bias='bias' in p)
        conv.weight.data = tensor(np.transpose(p['kernel'], (3, 2, 0, 1)))
        if 'bias' in p:
          conv.bias.data = tensor(p['bias'])
        low, high = _same_padding(size)
        self.pads.append((low, high, low, high))
        size = -(-size // 2)
        convs.append(conv)
      self.convs = nn.ModuleList(convs)
      self.norms = nn.ModuleList([batch_norm(f'BatchNorm_{i}', nn.BatchNorm2d) for i in range(3)])
      self.hidden = linear(params['Dense_0'])
      # the default's dense layers follow each other directly; stutz_convnet_bn_relu's do not
      self.hidden_norm = (batch_norm('BatchNorm_3', nn.BatchNorm1d) if 'BatchNorm_3' in params
                          else None)
      self.logits = linear(params['Dense_1'])

    def forward(self, x):
      x = 2.0 * x - 1.0
      for pad, conv, norm in zip(self.pads, self.convs, self.norms):
        x = torch.relu(norm(conv(nn.functional.pad(x, pad))))
      x = x.permute(0, 2, 3, 1).flatten(1)  # Flax flattens NHWC
      x = self.hidden(x)
      return self.logits(x if self.hidden_norm is None else torch.relu(self.hidden_norm(x)))

  return StutzConvNet().eval()


def torch_runner(variables, x, y, steps, reference_logits):
  """torchattacks.PGD on the copied model, or None (with the reason) without torch."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import torchattacks  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    return None, f'torch/torchattacks not importable ({e})'
  model = torch_model(variables)
  images = torch.tensor(np.transpose(np.asarray(x), (0, 3, 1, 2)))
  labels = torch.tensor(np.asarray(y), dtype=torch.long)
  with torch.no_grad():
    gap = np.abs(model(images).numpy() - np.asarray(reference_logits)).max()
  if gap > 1e-4:
    raise SystemExit(f'the torch copy disagrees with the Flax model (max logits gap {gap:.2e})')
  attack = torchattacks.PGD(model, eps=EPSILON, alpha=STEP_SIZE, steps=steps, random_start=True)

  def run(threads):
    def attack_with_threads():
      torch.set_num_threads(threads)
      return attack(images, labels)
    return attack_with_threads

  threads = sorted({1, os.cpu_count() or 1})
  runners = {f'torchattacks_pgd_{t}_threads': run(t) for t in threads}
  return runners, f'torch {torch.__version__}, max |logits gap| vs flax {gap:.2e}'


def _best_seconds(runners, repeats):
  for run in runners.values():  # compile and warm up
    run()
  best = {name: float('inf') for name in runners}
  for _ in range(repeats):  # in turns, so load changes hit every method
    for name, run in runners.items():
      best[name] = min(best[name], _seconds(run))
  return best


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batches', default='100,250,1000')
  parser.add_argument('--steps', type=int, default=40)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--models', type=int, default=5)
  args = parser.parse_args()

  module, variables = _variables(jax.random.key(0))
  logits_fn = models.logits_fn(module, variables)
  batches = [int(b) for b in args.batches.split(',')]
  print(f'device: {jax.devices()[0].device_kind} ({os.cpu_count()} cores), {args.steps} steps, '
        f'L-inf eps {EPSILON}, step {STEP_SIZE}, image-steps/s (fastest of {args.repeats})')
  ratios = {}
  for index, batch in enumerate(batches):
    x = jax.random.uniform(jax.random.key(2), (batch, 28, 28, 1))
    y = jax.random.randint(jax.random.key(3), (batch,), 0, 10)
    runners = jax_runners(logits_fn, x, y, args.steps)
    torch_runners, torch_note = torch_runner(variables, x, y, args.steps, logits_fn(x))
    runners.update(torch_runners or {})
    if index == 0 and args.models:
      runners.update({f'{args.models}_models_{name}': run
                      for name, run in model_runners(args.models, x, y, args.steps).items()})
    best = _best_seconds(runners, args.repeats)
    rate = {name: batch * args.steps / t for name, t in best.items()}
    line = (f'batch {batch:5d}: advgen {rate["advgen_pgd"]:8.0f}, unchunked '
            f'{rate["advgen_pgd_unchunked"]:8.0f}, bare gradient {rate["bare_gradient"]:8.0f}')
    if torch_runners:
      torch_rates = {name: rate[name] for name in torch_runners}
      fastest = max(torch_rates, key=torch_rates.get)
      ratios[batch] = rate['advgen_pgd'] / torch_rates[fastest]
      line += (', torchattacks ' + ', '.join(
          f'{rate[n]:.0f} ({n.split("_")[2]} thr)' for n in torch_runners) +
               f'; advgen / torchattacks {ratios[batch]:.2f}')
    print(line, flush=True)
    if index == 0 and args.models:
      k = args.models
      together = best[f'{k}_models_together']
      print(f'  {k} models in one program (scripts/attack.py): '
            f'{best[f"{k}_models_one_by_one"] / together:.3f}x the speed of one after another, '
            f'{best[f"{k}_models_vmapped"] / together:.3f}x the speed of vmapping them')
  if ratios:
    print('advgen / torchattacks PGD: ' + ', '.join(f'{r:.2f} at batch {b}'
                                                    for b, r in ratios.items()) +
          f'  [{torch_note}]')
  else:
    print(f'torchattacks: skipped, {torch_note}')


if __name__ == '__main__':
  main()
