"""Flax Linen classifiers from the papers, selected by name.

Inputs are images in [0, 1]; each model recentres them itself, so attacks stay in pixel space.
Every module takes `train` to switch batch norm between batch and running statistics.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


def _centre(x):
  return 2.0 * x - 1.0


def _batch_norm(train):
  """Batch norm subtracts the mean, so layers feeding it carry no bias (its gradient is zero)."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)


class StutzConvNet(nn.Module):
  """Stutz et al.: 4x4 stride-2 convs (BN, ReLU), then dense 100 and logits.

  Three conv layers for 28x28 inputs, four for larger ones, unless `num_conv` says otherwise. As
  in the authors' code the two dense layers follow each other directly (a linear bottleneck);
  `hidden_bn_relu=True` (`stutz_convnet_bn_relu`) puts batch norm and ReLU between them.
  """
  num_classes: int
  channels: Sequence[int] = (16, 32, 64, 128)
  num_conv: int | None = None
  hidden: int = 100
  hidden_bn_relu: bool = False

  @nn.compact
  def __call__(self, x, train=False):
    num_conv = self.num_conv or (3 if x.shape[-2] <= 28 else 4)
    x = _centre(x)
    for features in self.channels[:num_conv]:
      x = nn.Conv(features, (4, 4), strides=(2, 2), padding='SAME', use_bias=False)(x)
      x = nn.relu(_batch_norm(train)(x))
    x = x.reshape(x.shape[:-3] + (-1,))
    if self.hidden_bn_relu:
      x = nn.relu(_batch_norm(train)(nn.Dense(self.hidden, use_bias=False)(x)))
    else:
      x = nn.Dense(self.hidden)(x)
    return nn.Dense(self.num_classes)(x)


class MLP(nn.Module):
  """Fully connected ReLU network (4x128 by default); also takes flat toy-manifold inputs."""
  num_classes: int
  features: Sequence[int] = (128, 128, 128, 128)

  @nn.compact
  def __call__(self, x, train=False):
    del train
    x = _centre(x).reshape(x.shape[0], -1)
    for features in self.features:
      x = nn.relu(nn.Dense(features)(x))
    return nn.Dense(self.num_classes)(x)


class LeNet5(nn.Module):
  """LeCun et al.'s LeNet-5 (as used by Deniz et al.) with ReLU and max pooling."""
  num_classes: int

  @nn.compact
  def __call__(self, x, train=False):
    del train
    x = nn.relu(nn.Conv(6, (5, 5), padding='SAME')(_centre(x)))
    x = nn.max_pool(x, (2, 2), (2, 2))
    x = nn.relu(nn.Conv(16, (5, 5), padding='VALID')(x))
    x = nn.max_pool(x, (2, 2), (2, 2))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(120)(x))
    x = nn.relu(nn.Dense(84)(x))
    return nn.Dense(self.num_classes)(x)


class VGG(nn.Module):
  """VGG-style stacks of 3x3 convs with BN, each stage closed by 2x2 max pooling."""
  num_classes: int
  stages: Sequence[Sequence[int]] = ((32, 32), (64, 64), (128, 128))
  hidden: int = 256

  @nn.compact
  def __call__(self, x, train=False):
    x = _centre(x)
    for stage in self.stages:
      for features in stage:
        x = nn.Conv(features, (3, 3), padding='SAME', use_bias=False)(x)
        x = nn.relu(_batch_norm(train)(x))
      x = nn.max_pool(x, (2, 2), (2, 2))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.hidden)(x))
    return nn.Dense(self.num_classes)(x)


class _ResidualBlock(nn.Module):
  """Pre-activation basic block (He et al., 2016), shared by ResNets and Wide ResNets."""
  features: int
  strides: int
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, train):
    y = nn.relu(_batch_norm(train)(x))
    shortcut = x
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = nn.Conv(self.features, (1, 1), strides=self.strides, use_bias=False)(y)
    y = nn.Conv(self.features, (3, 3), strides=self.strides, padding='SAME', use_bias=False)(y)
    y = nn.relu(_batch_norm(train)(y))
    if self.dropout:
      y = nn.Dropout(self.dropout, deterministic=not train)(y)
    y = nn.Conv(self.features, (3, 3), padding='SAME', use_bias=False)(y)
    return shortcut + y


class ResNet(nn.Module):
  """Pre-activation ResNet: `blocks_per_stage` basic blocks per stage, widths doubling.

  The defaults give the small CIFAR-style ResNet-20; `resnet18` and `wide_resnet` in
  `advgen.models` set the stages of ResNet-18 and of WRN-depth-k.
  """
  num_classes: int
  blocks_per_stage: Sequence[int] = (3, 3, 3)
  widths: Sequence[int] = (16, 32, 64)
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(self.widths[0], (3, 3), padding='SAME', use_bias=False)(_centre(x))
    for stage, (num_blocks, width) in enumerate(zip(self.blocks_per_stage, self.widths)):
      for block in range(num_blocks):
        strides = 2 if stage > 0 and block == 0 else 1
        x = _ResidualBlock(width, strides, self.dropout)(x, train)
    x = nn.relu(_batch_norm(train)(x))
    x = jnp.mean(x, axis=(-3, -2))
    return nn.Dense(self.num_classes)(x)
