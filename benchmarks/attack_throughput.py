"""PGD throughput: the JAX PGD engine against a bare input-gradient and against torchattacks.

    python benchmarks/attack_throughput.py [--batch 100] [--steps 40] [--repeats 10] [--models 5]

On Stutz et al.'s conv net (28x28x1, batch 100, random weights and batch statistics) it prints
PGD image-steps per second, their ratio to bare jitted `value_and_grad` evaluations of the loss
with respect to the input on the same batch (the cost floor of one step), and, when torch and
torchattacks are importable, the ratio to torchattacks.PGD on the same architecture and weights.
It then attacks `--models` such nets the way `scripts/attack.py` does, in one program
(`robustness.attack_models`), and prints its speed against attacking them one after another and
against a plain `vmap` over the stacked models.
The methods are timed in turns within one run, so a busy machine slows them alike; each figure is
the fastest of `--repeats` rounds.
"""

import argparse
import time

import jax
import numpy as np
import optax

from advgen import attacks, models, robustness
from advgen.train import state as state_lib

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
  stacked = state_lib.stack([_variables(k)[1]
                             for k in jax.random.split(jax.random.key(4), num_models)])
  attack = robustness.build_attack(
      dict(attack='pgd_linf', epsilon=EPSILON, num_steps=steps, step_size=STEP_SIZE), None)
  key = jax.random.key(0)
  one = lambda v: attack(models.logits_fn(module, v), x, y, key, {})
  single, vmapped = jax.jit(one), jax.jit(jax.vmap(one))
  per_model = [jax.tree.map(lambda a, k=k: a[k], stacked) for k in range(num_models)]
  return {
      'together': lambda: jax.block_until_ready(robustness.attack_models(
          stacked, x, y, key, {}, module=module, attack=attack)),
      'one_by_one': lambda: jax.block_until_ready([single(v) for v in per_model]),
      'vmapped': lambda: jax.block_until_ready(vmapped(stacked)),
  }


def _seconds(fn):
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def jax_runners(logits_fn, x, y, steps):
  """Callables for one PGD attack and for `steps` bare input-gradient evaluations."""
  loss = lambda images: optax.softmax_cross_entropy_with_integer_labels(logits_fn(images), y).sum()
  gradient = jax.jit(jax.value_and_grad(loss))
  threat = attacks.LinfBall(x, EPSILON)
  key = jax.random.key(0)

  def pgd():
    return jax.block_until_ready(
        attacks.pgd(logits_fn, threat, y, key, num_steps=steps, step_size=STEP_SIZE))

  def gradients():
    out = None
    for _ in range(steps):
      out = gradient(x)
    return jax.block_until_ready(out)

  return pgd, gradients


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
      self.hidden, self.hidden_norm = linear(params['Dense_0']), batch_norm('BatchNorm_3',
                                                                             nn.BatchNorm1d)
      self.logits = linear(params['Dense_1'])

    def forward(self, x):
      x = 2.0 * x - 1.0
      for pad, conv, norm in zip(self.pads, self.convs, self.norms):
        x = torch.relu(norm(conv(nn.functional.pad(x, pad))))
      x = x.permute(0, 2, 3, 1).flatten(1)  # Flax flattens NHWC
      return self.logits(torch.relu(self.hidden_norm(self.hidden(x))))

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
  return (lambda: attack(images, labels)), (f'torch {torch.__version__} '
                                            f'(threads {torch.get_num_threads()}), '
                                            f'max |logits gap| vs flax {gap:.2e}')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=100)
  parser.add_argument('--steps', type=int, default=40)
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument('--models', type=int, default=5)
  args = parser.parse_args()

  module, variables = _variables(jax.random.key(0))
  logits_fn = models.logits_fn(module, variables)
  x = jax.random.uniform(jax.random.key(2), (args.batch, 28, 28, 1))
  y = jax.random.randint(jax.random.key(3), (args.batch,), 0, 10)
  pgd, gradients = jax_runners(logits_fn, x, y, args.steps)
  torch_pgd, torch_note = torch_runner(variables, x, y, args.steps, logits_fn(x))
  runners = {'jax_pgd': pgd, 'bare_gradient': gradients}
  if torch_pgd is not None:
    runners['torchattacks_pgd'] = torch_pgd
  runners.update({f'{args.models}_models_{name}': run
                  for name, run in model_runners(args.models, x, y, args.steps).items()})
  for run in runners.values():  # compile and warm up
    run()
  best = {name: float('inf') for name in runners}
  for _ in range(args.repeats):  # in turns, so load changes hit every method
    for name, run in runners.items():
      best[name] = min(best[name], _seconds(run))

  rate = {name: args.batch * args.steps / t for name, t in best.items()}
  print(f'device: {jax.devices()[0].device_kind}, batch {args.batch}, {args.steps} steps, '
        f'L-inf eps {EPSILON}, step {STEP_SIZE}')
  print(f'JAX PGD:                {rate["jax_pgd"]:10.0f} image-steps/s')
  print(f'bare input gradients:   {rate["bare_gradient"]:10.0f} image-gradients/s')
  print(f'ratio PGD / bare gradient: {rate["jax_pgd"] / rate["bare_gradient"]:.3f}')
  if torch_pgd is None:
    print(f'torchattacks: skipped, {torch_note}')
  else:
    print(f'torchattacks PGD:       {rate["torchattacks_pgd"]:10.0f} image-steps/s  [{torch_note}]')
    print(f'ratio JAX PGD / torchattacks PGD: {rate["jax_pgd"] / rate["torchattacks_pgd"]:.3f}')
  k = args.models
  together = best[f'{k}_models_together']
  print(f'{k} models in one program (scripts/attack.py): '
        f'{best[f"{k}_models_one_by_one"] / together:.3f}x the speed of one after another, '
        f'{best[f"{k}_models_vmapped"] / together:.3f}x the speed of vmapping them')


if __name__ == '__main__':
  main()
