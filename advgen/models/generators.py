"""Flax Linen generators: VAE, VAE-GAN (Stutz et al.) and DCGAN (Fawzi et al.), by name.

One `Generator` module holds an optional encoder, a decoder and an optional discriminator; a VAE
has no discriminator, a DCGAN no encoder. Class-specific generators are K = num_classes parameter
sets stacked along a leading model axis (a class-agnostic generator is the case K = 1);
`class_models` turns stacked variables into the closures downstream code sees,
`encode_fn(x, y) -> (mean, log_var)` and `decode_fn(z, y) -> x`, which pick the model of class y.

Strided 4x4 convolutions and their transposes are written as matrix products (patches times a
kernel matrix; pixels times a kernel matrix, then overlap-add). They equal `nn.Conv` /
`nn.ConvTranspose` with stride 2 and SAME padding, but `vmap` over stacked parameters turns them
into batched matrix products, where XLA would otherwise emit grouped convolutions (slow on CPU)
or input-dilated convolutions (very slow on CPU).
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from advgen.errors import UserError


def _centre(x):
  return 2.0 * x - 1.0


def _batch_norm(train):
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)


def _half(size):
  return -(-size // 2)


def flat_normal(key, shape, dtype=jnp.float32, bound=None):
  """Normal draws (truncated to [-bound, bound] if given) made as a flat vector and reshaped.

  With partitionable threefry (JAX's default), XLA:CPU takes seconds to compile a draw of rank 3
  or more (vmapped rank-2 draws included); a flat draw compiles in a fraction of a second.
  """
  size = int(np.prod(shape))
  if bound is None:
    flat = jax.random.normal(key, (size,), dtype)
  else:
    flat = jax.random.truncated_normal(key, -bound, bound, (size,), dtype)
  return flat.reshape(shape)


def lecun_normal(key, shape, dtype=jnp.float32):
  """`nn.initializers.lecun_normal()` (truncated normal, variance 1 / fan_in), drawn flat."""
  std = np.sqrt(1.0 / np.prod(shape[:-1])) / .87962566103423978
  return flat_normal(key, shape, dtype, bound=2.0) * jnp.asarray(std, dtype)


class Conv4x4(nn.Module):
  """4x4 convolution, stride 2, SAME padding: `nn.Conv(features, (4, 4), (2, 2), 'SAME')`.

  Computed as space-to-depth, 2x2 patches and one matrix product.
  """
  features: int
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    kernel = self.param('kernel', lecun_normal, (4, 4, c, self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,)) if self.use_bias else 0.0
    ho, wo = _half(h), _half(w)
    pad_h, pad_w = 2 * ho + 2 - h, 2 * wo + 2 - w  # SAME padding; the padded size is even
    x = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2),
                    (0, 0)))
    s2d = x.reshape(b, ho + 1, 2, wo + 1, 2, c).transpose(0, 1, 3, 2, 4, 5)
    s2d = s2d.reshape(b, ho + 1, wo + 1, 4 * c)
    patches = jnp.concatenate([s2d[:, i:i + ho, j:j + wo] for i in range(2) for j in range(2)], -1)
    # Patch channels are ordered (i, j, di, dj, c) for kernel entry (2i + di, 2j + dj).
    matrix = kernel.reshape(2, 2, 2, 2, c, self.features).transpose(0, 2, 1, 3, 4, 5)
    out = patches.reshape(-1, 16 * c) @ matrix.reshape(16 * c, self.features)
    return out.reshape(b, ho, wo, self.features) + bias


class ConvTranspose4x4(nn.Module):
  """Transposed 4x4 convolution, stride 2, SAME padding (output 2H x 2W):
  `nn.ConvTranspose(features, (4, 4), (2, 2), 'SAME')`.

  One matrix product takes every input pixel to its 4x4 output footprint, and the footprints are
  overlap-added with shifted slices. Input pixel u reaches output rows 2u - 1 .. 2u + 2 through
  kernel rows 3 .. 0, so with the kernel flipped, rows 2u - 1 + {0, 1} come from kernel rows
  {0, 1} and rows 2u + 1 + {0, 1} from kernel rows {2, 3} (the same for columns). A single wide
  product is much faster on CPU than one thin product per output parity, above all for the last
  layer (one output channel).
  """
  features: int
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    f = self.features
    kernel = self.param('kernel', lecun_normal, (4, 4, c, f))
    bias = self.param('bias', nn.initializers.zeros, (f,)) if self.use_bias else 0.0
    flipped = kernel[::-1, ::-1].transpose(2, 0, 1, 3).reshape(c, 16 * f)
    # footprint[..., by, qy, bx, qx, f]: flipped kernel entry (2 by + qy, 2 bx + qx).
    footprint = (x.reshape(-1, c) @ flipped).reshape(b, h, w, 2, 2, 2, 2, f)

    def overlap_add(a, axis):
      """Block 0 of `axis + 2` stays at position u, block 1 moves to u + 1."""
      first, second = jnp.take(a, 0, axis + 2), jnp.take(a, 1, axis + 2)
      pad = lambda t, before: jnp.pad(t, [(before, 1 - before) if i == axis else (0, 0)
                                          for i in range(t.ndim)])
      return pad(first, 0) + pad(second, 1)

    rows = overlap_add(footprint, 1)  # (b, h + 1, w, qy, bx, qx, f)
    both = overlap_add(rows, 2)  # (b, h + 1, w + 1, qy, qx, f)
    out = both.transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h + 2, 2 * w + 2, f)
    return out[:, 1:2 * h + 1, 1:2 * w + 1] + bias


class Encoder(nn.Module):
  """Stutz et al.: 4x4 stride-2 convs (BN, ReLU), then a dense layer to mean and log-variance."""
  latent_dim: int
  channels: Sequence[int]

  @nn.compact
  def __call__(self, x, train=False):
    x = _centre(x)
    for features in self.channels:
      x = nn.relu(_batch_norm(train)(Conv4x4(features, use_bias=False)(x)))
    x = nn.Dense(2 * self.latent_dim)(x.reshape(x.shape[0], -1))
    return x[:, :self.latent_dim], x[:, self.latent_dim:]


class Decoder(nn.Module):
  """Dense to a small map of channels[0], then one 4x4 stride-2 transposed conv per further entry
  of `channels` and a last one to the image channels, BN and ReLU between, sigmoid output.

  The starting size is the image size halved len(channels) times (rounded up); maps that come out
  one pixel too large (e.g. 8 -> 7 on the way to 28) are cropped.
  """
  image_shape: Sequence[int]
  channels: Sequence[int]

  @nn.compact
  def __call__(self, z, train=False):
    height, width, out_channels = self.image_shape
    sizes = [(height, width)]
    for _ in self.channels:
      sizes.append((_half(sizes[-1][0]), _half(sizes[-1][1])))
    sizes = sizes[::-1]
    (h0, w0), features = sizes[0], self.channels[0]
    x = nn.Dense(h0 * w0 * features, use_bias=False)(z).reshape(z.shape[0], h0, w0, features)
    x = nn.relu(_batch_norm(train)(x))
    widths = list(self.channels[1:]) + [out_channels]
    for i, features in enumerate(widths):
      h, w = sizes[i + 1]
      last = i + 1 == len(widths)
      x = ConvTranspose4x4(features, use_bias=last)(x)[:, :h, :w]  # BN follows: no bias
      if not last:
        x = nn.relu(_batch_norm(train)(x))
    return nn.sigmoid(x)


class Discriminator(nn.Module):
  """A small conv net (4x4 stride-2 convs, leaky ReLU, no normalization) to one logit."""
  channels: Sequence[int]

  @nn.compact
  def __call__(self, x):
    x = _centre(x)
    for features in self.channels:
      x = nn.leaky_relu(Conv4x4(features)(x), 0.2)
    return nn.Dense(1)(x.reshape(x.shape[0], -1))[:, 0]


class Generator(nn.Module):
  """Encoder (if `encoder_channels`), decoder and discriminator (if `discriminator_channels`).

  Parameters live under 'encoder', 'decoder' and 'discriminator', each trained by its own loss.
  """
  image_shape: Sequence[int]
  latent_dim: int
  decoder_channels: Sequence[int]
  encoder_channels: Optional[Sequence[int]] = None
  discriminator_channels: Optional[Sequence[int]] = None

  def setup(self):
    self.decoder = Decoder(tuple(self.image_shape), tuple(self.decoder_channels))
    if self.encoder_channels:
      self.encoder = Encoder(self.latent_dim, tuple(self.encoder_channels))
    if self.discriminator_channels:
      self.discriminator = Discriminator(tuple(self.discriminator_channels))

  @property
  def has_encoder(self):
    return bool(self.encoder_channels)

  @property
  def has_discriminator(self):
    return bool(self.discriminator_channels)

  def encode(self, x, train=False):
    return self.encoder(x, train)

  def decode(self, z, train=False):
    return self.decoder(z, train)

  def discriminate(self, x):
    return self.discriminator(x)

  def reconstruct(self, x):
    """The decoded encoder mean (inference mode)."""
    return self.decode(self.encode(x)[0])

  def __call__(self, x, train=False):
    """Runs every part once (for `init`)."""
    out = {'image': self.decode(jnp.zeros((x.shape[0], self.latent_dim), x.dtype), train)}
    if self.has_encoder:
      out['mean'], out['log_var'] = self.encode(x, train)
    if self.has_discriminator:
      out['logit'] = self.discriminate(x)
    return out


def _small(image_shape, limit):
  return max(image_shape[:2]) <= limit


def vae(image_shape, latent_dim=10, encoder_channels=None, decoder_channels=None):
  """Stutz's VAE: three convs (64/128/256) for 28x28 images, four (to 512) for larger ones."""
  if encoder_channels is None:
    encoder_channels = (64, 128, 256) if _small(image_shape, 28) else (64, 128, 256, 512)
  if decoder_channels is None:
    decoder_channels = tuple(encoder_channels)[::-1]
  return Generator(tuple(image_shape), latent_dim, tuple(decoder_channels),
                   tuple(encoder_channels), None)


def vaegan(image_shape, latent_dim=10, encoder_channels=None, decoder_channels=None,
           discriminator_channels=None):
  """Stutz's VAE-GAN: the VAE plus a small conv discriminator."""
  base = vae(image_shape, latent_dim, encoder_channels, decoder_channels)
  if discriminator_channels is None:
    discriminator_channels = (32, 64, 128) if _small(image_shape, 28) else (32, 64, 128, 256)
  return base.clone(discriminator_channels=tuple(discriminator_channels))


def dcgan(image_shape, latent_dim=100, decoder_channels=None, discriminator_channels=None):
  """DCGAN (Radford et al.; Fawzi et al.'s generator for SVHN and CIFAR-10), prior N(0, I)."""
  small = _small(image_shape, 32)
  if decoder_channels is None:
    decoder_channels = (256, 128, 64) if small else (512, 256, 128, 64)
  if discriminator_channels is None:
    discriminator_channels = (64, 128, 256) if small else (64, 128, 256, 512)
  return Generator(tuple(image_shape), latent_dim, tuple(decoder_channels), None,
                   tuple(discriminator_channels))


GENERATORS = {'vae': vae, 'vaegan': vaegan, 'dcgan': dcgan}


def _tuples(value):
  if isinstance(value, (list, tuple)):
    return tuple(_tuples(v) for v in value)
  return value


def check_name(name):
  if name not in GENERATORS:
    raise UserError(f'unknown generator {name!r}; choose one of {", ".join(GENERATORS)}')


def create(name, image_shape, **kwargs):
  """The generator module registered as `name` for images of `image_shape` (H, W, C)."""
  check_name(name)
  try:
    module = GENERATORS[name](tuple(image_shape), **{k: _tuples(v) for k, v in kwargs.items()})
  except TypeError as e:
    raise UserError(f'bad settings for generator {name!r}: {e}') from None
  if module.latent_dim < 1:
    raise UserError(f'latent_dim of generator {name!r} must be positive, got {module.latent_dim}')
  return module


def truncated_prior(key, shape, bound=2.0):
  """Latent codes from N(0, I) resampled into [-bound, bound] (Stutz's truncated prior)."""
  return flat_normal(key, shape, bound=bound)
