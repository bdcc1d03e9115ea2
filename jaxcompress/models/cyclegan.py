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
  `norm="batch"` gives the pix2pix discriminator (batch norm, no bias in the normalised convs,
  the official `use_bias = norm_layer == InstanceNorm2d`); DMAD's Pix2Pix runs it with ndf 128
  on the 6-channel concatenation of input and output images (SJLeo/DMAD `models/Pix2Pix.py`).

Convolutions come from the layer factory so pruned / quantized variants reuse the definition:
`layers.first_conv` builds the input conv, `layers.conv` the inner ones, and the optional factory
fields `last_conv` (output conv; `first_conv` when None, i.e. float) and `conv_transpose`
(upsampling; `nn.ConvTranspose` when None) the output and upsampling layers.
`layers.act` replaces the generator's ReLUs.

For pruning and distillation (DMAD, arXiv 2011.08382):
  * every norm (instance norm; the discriminator's batch norm) is followed by the layer factory's
    gate slot (`factory.gate`; nothing by default), before the activation or the residual sum;
  * `widths` narrows layers by role (a pruned generator / discriminator, see the classes);
  * feature taps (`factory.taps` of `apply(..., mutable=["intermediates"])`): the generator sows
    "down1", "down2" (after each downsampling ReLU), "res1".."res9" (after each residual block)
    and "up1", "up2"; the discriminator sows "hidden0".."hidden3" after each hidden LeakyReLU
    ("hidden1": the second conv's, "hidden{n_layers}": the last hidden layer).

Example:
  >>> from jaxcompress.models import cyclegan
  >>> g = cyclegan.ResnetGenerator()
  >>> variables = g.init(rng, jnp.zeros((1, 256, 256, 3)))
"""
from __future__ import annotations

from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcompress.errors import ConfigError
from jaxcompress.models import factory

_DISCRIMINATOR_NORMS = ("instance", "batch")


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
  """x + norm(conv(pad(act(norm(conv(pad(x)))))), reflection padding, no dropout.

  Attributes:
    features: channels of the residual stream (conv2's output).
    layers: layer factory.
    inner: conv1's output channels (None: `features`); a pruned block narrows it.
  """
  features: int
  layers: factory.Layers
  inner: int | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ly = self.layers
    inner = self.inner or self.features
    y = ly.conv(inner, (3, 3), padding="VALID", use_bias=True, name="conv1")(reflect_pad(x, 1))
    y = ly.act(factory.gate(ly, inner, "gate1")(instance_norm("norm1")(y)))
    y = ly.conv(self.features, (3, 3), padding="VALID", use_bias=True, name="conv2")(
        reflect_pad(y, 1))
    return x + factory.gate(ly, self.features, "gate2")(instance_norm("norm2")(y))


class ResnetGenerator(nn.Module):
  """CycleGAN ResNet generator (`resnet_9blocks` by default).

  Attributes:
    output_nc: output channels.
    ngf: channels of the first conv (doubled by each downsampling).
    n_blocks: residual blocks (9 for 256x256, 6 for 128x128 in the official code).
    layers: layer factory.
    widths: output channels by role for a pruned generator: "stem", "down1", "down2" (also the
      residual stream's width, shared by every block's conv2), "block{b}/conv1" (b from 0;
      default: the stream's width; 0 removes block b, whose output is then its input), "up1",
      "up2". Other roles left out keep ngf, 2 ngf, 4 ngf, 2 ngf, ngf.
  """
  output_nc: int = 3
  ngf: int = 64
  n_blocks: int = 9
  layers: factory.Layers = factory.FLOAT
  widths: Mapping[str, int] | None = None

  def layer_widths(self) -> dict[str, int]:
    """Every width role with its resolved width (see `widths`)."""
    ngf = self.ngf
    defaults = {"stem": ngf, "down1": 2 * ngf, "down2": 4 * ngf}
    defaults.update({f"block{b}/conv1": 4 * ngf for b in range(self.n_blocks)})
    defaults.update({"up1": 2 * ngf, "up2": ngf})
    blocks = [f"block{b}/conv1" for b in range(self.n_blocks)]
    out = factory.resolve_widths(self.widths, defaults, "ResnetGenerator", removable=blocks)
    for role in blocks:  # a block's inner width follows the stream unless given
      if role not in (self.widths or {}):
        out[role] = out["down2"]
    return out

  def prune_spec(self) -> factory.PruneSpec:
    """The channel roles for `jaxcompress.prune.materialize` (DMAD, arXiv 2011.08382 Sec. 3).

    The residual stream ("down2") is written by the gate after "down2" and by every block's
    "gate2" (SJLeo/DMAD `models/MaskCycleGAN.py`, `get_cfg_residual_mask`); a block's "conv1"
    role is removable. Removed blocks (width 0) have no roles.
    """
    widths = self.layer_widths()
    blocks = [b for b in range(self.n_blocks) if widths[f"block{b}/conv1"]]

    def role(name: str) -> factory.PruneRole:
      return factory.PruneRole({f"{name}_gate": (name, f"{name}_norm")})
    stream = {"down2_gate": ("down2", "down2_norm")}
    stream.update({f"block{b}/gate2": (f"block{b}/conv2", f"block{b}/norm2") for b in blocks})
    roles = {"stem": role("stem"), "down1": role("down1"),
             "down2": factory.PruneRole(stream, residual=True)}
    roles.update({f"block{b}/conv1": factory.PruneRole(
        {f"block{b}/gate1": (f"block{b}/conv1", f"block{b}/norm1")}, removable=True)
                  for b in blocks})
    roles.update({"up1": role("up1"), "up2": role("up2")})
    inputs = {"down1": ("stem",), "down2": ("down1",), "up1": ("down2",), "up2": ("up1",),
              "head": ("up2",)}
    for b in blocks:
      inputs.update({f"block{b}/conv1": ("down2",), f"block{b}/conv2": (f"block{b}/conv1",)})
    return factory.PruneSpec(roles, inputs, input_layer="stem", input_size=(32, 32))

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    tap = factory.tapper(self)  # feature taps by role (factory.taps)
    del train  # instance norm and no dropout: training and inference compute the same thing
    ly = self.layers
    widths = self.layer_widths()
    x = ly.first_conv(widths["stem"], (7, 7), padding="VALID", use_bias=True, name="stem")(
        reflect_pad(x, 3))
    x = ly.act(factory.gate(ly, widths["stem"], "stem_gate")(instance_norm("stem_norm")(x)))
    for i in range(2):
      role = f"down{i + 1}"
      x = ly.conv(widths[role], (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                  use_bias=True, name=role)(x)
      x = ly.act(factory.gate(ly, widths[role], f"{role}_gate")(instance_norm(f"{role}_norm")(x)))
      tap(role, x)
    for b in range(self.n_blocks):
      # Width 0: block b was pruned away (its first conv kept no channel, so it added nothing).
      if widths[f"block{b}/conv1"]:
        x = ResnetBlock(widths["down2"], ly, inner=widths[f"block{b}/conv1"], name=f"block{b}")(x)
      tap(f"res{b + 1}", x)
    for i in range(2):
      role = f"up{i + 1}"
      x = upsample_conv(ly, widths[role], name=role)(x)
      x = ly.act(factory.gate(ly, widths[role], f"{role}_gate")(instance_norm(f"{role}_norm")(x)))
      tap(role, x)
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
    widths: output channels by role ("conv0".."conv{n_layers}") for a pruned discriminator;
      roles left out keep ndf * min(2^n, 8).
    norm: "instance" (CycleGAN: affine-free instance norm, convs with bias) or "batch"
      (pix2pix: `layers.batch_norm` with PyTorch's momentum and epsilon, the normalised convs
      without bias; `train` selects batch statistics). The first conv and the head keep their
      bias either way, as in pytorch-CycleGAN-and-pix2pix `models/networks.py`.
  """
  ndf: int = 64
  n_layers: int = 3
  layers: factory.Layers = factory.FLOAT
  widths: Mapping[str, int] | None = None
  norm: str = "instance"

  def layer_widths(self) -> dict[str, int]:
    """Every width role with its resolved width (see `widths`)."""
    # Width doubles per hidden conv up to 8 * ndf (the official `nf_mult = min(2 ** n, 8)`).
    return factory.resolve_widths(
        self.widths, {f"conv{n}": self.ndf * min(2**n, 8) for n in range(self.n_layers + 1)},
        "NLayerDiscriminator")

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    tap = factory.tapper(self)  # feature taps by role (factory.taps)
    if self.norm not in _DISCRIMINATOR_NORMS:
      raise ConfigError(f"NLayerDiscriminator: unknown norm {self.norm!r}; use one of "
                        f"{', '.join(_DISCRIMINATOR_NORMS)}.")
    batch = self.norm == "batch"
    ly = self.layers
    widths = self.layer_widths()
    pad = ((1, 1), (1, 1))
    x = ly.first_conv(widths["conv0"], (4, 4), strides=(2, 2), padding=pad, use_bias=True,
                      name="conv0")(x)
    x = nn.leaky_relu(x, 0.2)
    tap("hidden0", x)
    for n in range(1, self.n_layers + 1):
      # Stride 2 for layers 1..n_layers-1, then one stride-1 layer.
      strides = 2 if n < self.n_layers else 1
      # A bias before batch norm is cancelled by its mean subtraction: the official code drops it.
      x = ly.conv(widths[f"conv{n}"], (4, 4), strides=(strides, strides), padding=pad,
                  use_bias=not batch, name=f"conv{n}")(x)
      norm = ly.batch_norm(train, name=f"norm{n}") if batch else instance_norm(f"norm{n}")
      x = factory.gate(ly, widths[f"conv{n}"], f"gate{n}")(norm(x))
      x = nn.leaky_relu(x, 0.2)
      tap(f"hidden{n}", x)
    return _last_conv(ly)(1, (4, 4), padding=pad, use_bias=True, name="head")(x)
