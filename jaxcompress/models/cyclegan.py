"""CycleGAN networks (Zhu et al. 2017, arXiv 1703.10593), as in pytorch-CycleGAN-and-pix2pix.

* `ResnetGenerator`: reflection-padded 7x7 conv, two stride-2 3x3 downsampling convs, `n_blocks`
  (9) residual blocks at 4 * ngf channels, two stride-2 transposed convs (PyTorch kernel 3,
  stride 2, padding 1, output_padding 1: exactly doubles H and W), reflection-padded 7x7 conv,
  tanh. Instance norm without affine parameters (the official `norm='instance'`), so every conv
  has a bias. ngf = 64 on 256x256x3: 11.378 M parameters; 56.8 G MACs counted the GAN-compression
  way (transposed convs at output resolution: DMAD, GAN Compression, thop), 49.6 G counting what
  a transposed conv multiplies (`summary(..., mac_convention="true")`).
* `NLayerDiscriminator`: the 70x70 PatchGAN (n_layers = 3, ndf = 64; 4x4 convs, LeakyReLU 0.2,
  instance norm from the second conv on): 2.765 M parameters, 30x30 logits on 256x256 inputs.

Convolutions come from the layer factory so pruned / quantized variants reuse the definition:
`layers.first_conv` builds the input conv, `layers.conv` the inner ones, and the optional factory
fields `last_conv` (output conv; default `first_conv`, i.e. float) and `conv_transpose`
(upsampling; default `nn.ConvTranspose`) are read with `getattr` until `factory.Layers` has them.
`layers.act` replaces the generator's ReLUs.

Example:
  >>> from jaxcompress.models import cyclegan
  >>> g = cyclegan.ResnetGenerator()
  >>> variables = g.init(rng, jnp.zeros((1, 256, 256, 3)))
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcompress.models import factory


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
  """PyTorch `ReflectionPad2d(pad)` on NHWC (edge pixel not repeated)."""
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def instance_norm(name: str | None = None) -> nn.Module:
  """PyTorch `InstanceNorm2d` defaults: no affine parameters, epsilon 1e-5."""
  return nn.InstanceNorm(epsilon=1e-5, use_scale=False, use_bias=False, name=name)


def _last_conv(layers: factory.Layers) -> factory.ModuleFactory:
  return getattr(layers, "last_conv", None) or layers.first_conv


def _conv_transpose(layers: factory.Layers) -> factory.ModuleFactory:
  return getattr(layers, "conv_transpose", None) or nn.ConvTranspose


def upsample_conv(layers: factory.Layers, features: int, name: str | None = None) -> nn.Module:
  """PyTorch `ConvTranspose2d(k=3, stride=2, padding=1, output_padding=1)`.

  A transposed conv is the input-gradient of a conv; with `transpose_kernel=True` flax computes
  exactly that gradient for the conv whose HWIO kernel is this layer's kernel (PyTorch's
  (in, out, kh, kw) weight transposed to (kh, kw, out, in)). On the stride-dilated input the
  PyTorch padding p = 1 and output_padding 1 become k - 1 - p = 1 before and 1 + 1 = 2 after.
  """
  return _conv_transpose(layers)(features, (3, 3), strides=(2, 2), padding=((1, 2), (1, 2)),
                                 use_bias=True, transpose_kernel=True, name=name)


class ResnetBlock(nn.Module):
  """x + norm(conv(pad(act(norm(conv(pad(x)))))), reflection padding, no dropout."""
  features: int
  layers: factory.Layers

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ly = self.layers
    y = ly.conv(self.features, (3, 3), padding="VALID", use_bias=True, name="conv1")(
        reflect_pad(x, 1))
    y = ly.act(instance_norm("norm1")(y))
    y = ly.conv(self.features, (3, 3), padding="VALID", use_bias=True, name="conv2")(
        reflect_pad(y, 1))
    return x + instance_norm("norm2")(y)


class ResnetGenerator(nn.Module):
  """CycleGAN ResNet generator (`resnet_9blocks` by default).

  Attributes:
    output_nc: output channels.
    ngf: channels of the first conv (doubled by each downsampling).
    n_blocks: residual blocks (9 for 256x256, 6 for 128x128 in the official code).
    layers: layer factory.
  """
  output_nc: int = 3
  ngf: int = 64
  n_blocks: int = 9
  layers: factory.Layers = factory.FLOAT

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train  # instance norm and no dropout: training and inference compute the same thing
    ly = self.layers
    x = ly.first_conv(self.ngf, (7, 7), padding="VALID", use_bias=True, name="stem")(
        reflect_pad(x, 3))
    x = ly.act(instance_norm("stem_norm")(x))
    for i in range(2):
      x = ly.conv(self.ngf * 2**(i + 1), (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                  use_bias=True, name=f"down{i + 1}")(x)
      x = ly.act(instance_norm(f"down{i + 1}_norm")(x))
    for b in range(self.n_blocks):
      x = ResnetBlock(self.ngf * 4, ly, name=f"block{b}")(x)
    for i in range(2):
      x = upsample_conv(ly, self.ngf * 2**(1 - i), name=f"up{i + 1}")(x)
      x = ly.act(instance_norm(f"up{i + 1}_norm")(x))
    x = _last_conv(ly)(self.output_nc, (7, 7), padding="VALID", use_bias=True, name="head")(
        reflect_pad(x, 3))
    return jnp.tanh(x)


class NLayerDiscriminator(nn.Module):
  """PatchGAN discriminator (70x70 receptive field with n_layers = 3).

  Attributes:
    ndf: channels of the first conv.
    n_layers: stride-2 conv layers after the first (the last of the n_layers + 1 hidden convs
      has stride 1).
    layers: layer factory; LeakyReLU(0.2) is fixed by the architecture.
  """
  ndf: int = 64
  n_layers: int = 3
  layers: factory.Layers = factory.FLOAT

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train
    ly = self.layers
    pad = ((1, 1), (1, 1))
    x = ly.first_conv(self.ndf, (4, 4), strides=(2, 2), padding=pad, use_bias=True,
                      name="conv0")(x)
    x = nn.leaky_relu(x, 0.2)
    for n in range(1, self.n_layers + 1):
      # Stride 2 for layers 1..n_layers-1, then one stride-1 layer; width doubles up to 8 * ndf.
      strides = 2 if n < self.n_layers else 1
      x = ly.conv(self.ndf * min(2**n, 8), (4, 4), strides=(strides, strides), padding=pad,
                  use_bias=True, name=f"conv{n}")(x)
      x = nn.leaky_relu(instance_norm(f"norm{n}")(x), 0.2)
    return _last_conv(ly)(1, (4, 4), padding=pad, use_bias=True, name="head")(x)
