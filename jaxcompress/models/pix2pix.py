"""The pix2pix U-Net generator (Isola et al. 2017, arXiv 1611.07004) as DMAD compresses it.

`UnetGenerator` is pytorch-CycleGAN-and-pix2pix's `unet_256` (`models/networks.py`,
`UnetGenerator` / `UnetSkipConnectionBlock`): `num_downs` (8) 4x4 stride-2 convs halve a 256x256
image down to 1x1, and as many 4x4 stride-2 transposed convs (PyTorch `ConvTranspose2d(k=4, s=2,
p=1)`) double it back; each decoder layer but the output one is concatenated with the encoder
feature of the same resolution (skip first, as the official `torch.cat([x, model(x)], 1)`).
Batch norm after every conv but the outermost down conv, the innermost down conv and the output
conv; no conv bias before batch norm (the official `use_bias = norm_layer == InstanceNorm2d`,
False for pix2pix's batch norm), so only the output transposed conv has a bias. LeakyReLU(0.2)
in the encoder, ReLU in the decoder (also right after the innermost conv), tanh at the output.
With `use_dropout` (pix2pix's default) dropout 0.5 follows the batch norms of the `num_downs - 5`
decoder layers right above the innermost one ("up2".."up4" for `unet_256`), as the official
middle blocks do.

ngf = 64 on 1x3x256x256: 54,413,955 parameters (batch-norm scales and offsets included; the
official module's count, DMAD's "54.4 M") and 18.14 G MACs counted the GAN way (transposed convs
at output resolution: `summary(..., mac_convention="gan")`). thop (0.0.31 and 0.1.1) and
torchprofile give the same 18.14-18.15 G on the official PyTorch module; DMAD quotes 18.6 G.
DMAD trains it with ngf 48 (SJLeo/DMAD `scripts/pix2pix/*/train.sh`: 30.6 M parameters, 10.3 G
MACs); its discriminator is `cyclegan.NLayerDiscriminator(ndf=128, norm="batch")` on the
6-channel concatenation of input and output images.

For pruning and distillation (DMAD, arXiv 2011.08382):
  * the layer factory's gate slot (`factory.gate`) follows every batch norm and the two down
    convs without one (outermost, innermost), before the activation and the dropout: the 15
    places of DMAD's masks (SJLeo/DMAD `models/MaskPix2Pix.py`);
  * `widths` narrows convs by role (see `UnetGenerator`);
  * feature taps (`factory.taps` of `apply(..., mutable=["intermediates"])`), with n = num_downs:
    "down1".."down{n}" after each encoder activation (LeakyReLU for 1..n-1, which is also what
    the skip connection carries; the decoder's ReLU for the innermost); "up1".."up{n-1}" the
    decoder layer's channels after its ReLU (and dropout); "up1_norm".."up{n-1}_norm" the
    decoder layer's normalised output (after its gate), before dropout and ReLU. DMAD's
    Pix2Pix attention distillation (SJLeo/DMAD `models/Pix2Pix.py`) hooks the batch norms of
    "down2", "down4", "up4" and "up6": these are the taps "down2", "down4" (the hooks keep a
    reference that the next in-place LeakyReLU overwrites), "up4_norm" and "up6_norm".

Example:
  >>> from jaxcompress.models import pix2pix
  >>> g = pix2pix.UnetGenerator(ngf=48)
  >>> variables = g.init({"params": rng}, jnp.zeros((1, 256, 256, 3)))
  >>> y = g.apply(variables, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"])
"""
from __future__ import annotations

from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcompress.errors import ConfigError
from jaxcompress.models import factory

# pix2pix's dropout rate (the official nn.Dropout(0.5)).
DROPOUT_RATE = 0.5


def _conv_transpose(layers: factory.Layers) -> factory.ModuleFactory:
  return getattr(layers, "conv_transpose", None) or nn.ConvTranspose


def down_conv(conv: factory.ModuleFactory, features: int, name: str) -> nn.Module:
  """PyTorch `Conv2d(k=4, stride=2, padding=1, bias=False)`: exactly halves even H and W."""
  return conv(features, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False,
              name=name)


def up_conv(layers: factory.Layers, features: int, use_bias: bool,
            name: str | None = None) -> nn.Module:
  """PyTorch `ConvTranspose2d(k=4, stride=2, padding=1)`: exactly doubles H and W.

  A transposed conv is the input-gradient of a conv; with `transpose_kernel=True` flax computes
  exactly that gradient for the conv whose HWIO kernel is this layer's kernel (PyTorch's
  (in, out, kh, kw) weight transposed to (kh, kw, out, in)). On the stride-dilated input the
  PyTorch padding p = 1 becomes k - 1 - p = 2 on both sides: (2H - 1) + 4 - 4 + 1 = 2H outputs.
  """
  return _conv_transpose(layers)(features, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
                                 use_bias=use_bias, transpose_kernel=True, name=name)


class UnetGenerator(nn.Module):
  """pix2pix U-Net generator (`unet_256` with the defaults).

  Encoder layer k (1..n, n = num_downs) is the conv "down{k}"; decoder layer k (1..n-1,
  counted from the innermost, so "up{k}" pairs with the skip of "down{n-k}") is the transposed
  conv "up{k}", which reads the concatenation [skip of down{n-k+1}, up{k-1}] (down{n} for
  up1); the output transposed conv "head" reads [skip of down1, up{n-1}].

  Attributes:
    output_nc: output channels.
    num_downs: downsamplings (8 for 256x256 inputs, 7 for 128x128); at least 5. Inputs need
      H and W divisible by 2^num_downs.
    ngf: channels of the first conv; encoder widths ngf, 2 ngf, 4 ngf, then 8 ngf.
    use_dropout: dropout 0.5 after "up2".."up{num_downs-4}" when `train` (needs a "dropout"
      rng); pix2pix trains with it (the official `--no_dropout` is off; DMAD keeps it).
    layers: layer factory: `first_conv` builds "down1", `conv` the other down convs,
      `conv_transpose` the up convs and the head; `act` replaces the decoder's ReLUs (the
      encoder's LeakyReLU(0.2) is fixed, like the discriminator's).
    widths: output channels by role for a pruned generator; the roles, equal to the conv
      module names: "down1".."down{n}" (defaults ngf * min(2^(k-1), 8)) and "up1".."up{n-1}"
      (default: the width of down{n-k}, the skip it is concatenated with); for `unet_256`
      down1..down8 and up1..up7. Each role also sets its norm ("{role}_norm", absent for down1
      and down{n}) and gate ("{role}_gate"), and the input channels of the layer reading it
      (down{k+1}; the decoder layer whose concatenation holds it). Down kernels are HWIO, the
      transposed kernels (kh, kw, out, in). The head's width is `output_nc`.
  """
  output_nc: int = 3
  num_downs: int = 8
  ngf: int = 64
  use_dropout: bool = True
  layers: factory.Layers = factory.FLOAT
  widths: Mapping[str, int] | None = None

  def _default_widths(self) -> dict[str, int]:
    n = self.num_downs
    down = {f"down{k}": self.ngf * min(2 ** (k - 1), 8) for k in range(1, n + 1)}
    up = {f"up{k}": down[f"down{n - k}"] for k in range(1, n)}
    return {**down, **up}

  def layer_widths(self) -> dict[str, int]:
    """Every width role with its resolved width (see `widths`)."""
    if self.num_downs < 5:
      raise ConfigError(f"UnetGenerator: num_downs must be >= 5 (the official U-Net has four "
                        f"fixed outer levels and the innermost one), got {self.num_downs}.")
    return factory.resolve_widths(self.widths, self._default_widths(), "UnetGenerator")

  def dropout_roles(self) -> tuple[str, ...]:
    """Decoder roles followed by dropout when `use_dropout` (the official middle blocks)."""
    if not self.use_dropout:
      return ()
    return tuple(f"up{k}" for k in range(2, self.num_downs - 3))

  def prune_spec(self) -> factory.PruneSpec:
    """The channel roles for `jaxcompress.prune.materialize` (DMAD, arXiv 2011.08382 Sec. 3).

    Each conv role is masked by its gate alone (no residual streams, nothing removable); a
    decoder layer reads the concatenation [skip, previous decoder layer], the head
    [down1, up{n-1}]; each layer keeps its channels with m > 0, as SJLeo/DMAD
    `models/MaskPix2Pix.py` (`prune`) does.
    """
    n = self.num_downs
    roles = {}
    for k in range(1, n + 1):
      norm = (f"down{k}_norm",) if 1 < k < n else ()  # the outermost and innermost have none
      roles[f"down{k}"] = factory.PruneRole({f"down{k}_gate": (f"down{k}", *norm)})
    for k in range(1, n):
      roles[f"up{k}"] = factory.PruneRole({f"up{k}_gate": (f"up{k}", f"up{k}_norm")})
    inputs = {f"down{k + 1}": (f"down{k}",) for k in range(1, n)}
    inputs["up1"] = (f"down{n}",)
    inputs.update({f"up{k}": (f"down{n - k + 1}", f"up{k - 1}") for k in range(2, n)})
    inputs["head"] = ("down1", f"up{n - 1}")
    return factory.PruneSpec(roles, inputs, input_layer="down1", input_size=(2**n, 2**n))

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    n = self.num_downs
    widths = self.layer_widths()
    step = 2 ** n
    if x.ndim != 4 or x.shape[1] % step or x.shape[2] % step:
      raise ValueError(f"UnetGenerator with num_downs={n} needs NHWC inputs whose H and W are "
                       f"multiples of {step}, got shape {x.shape}; resize or crop the images "
                       "or lower num_downs.")
    tap = factory.tapper(self)  # feature taps by role (factory.taps)
    ly = self.layers
    dropped = self.dropout_roles()
    skips = []
    for k in range(1, n + 1):
      role = f"down{k}"
      x = down_conv(ly.first_conv if k == 1 else ly.conv, widths[role], role)(x)
      if 1 < k < n:  # the outermost and innermost down convs have no norm
        x = ly.batch_norm(train, name=f"{role}_norm")(x)
      x = factory.gate(ly, widths[role], f"{role}_gate")(x)
      if k < n:
        # The skip carries the LeakyReLU output: the official block's in-place LeakyReLU
        # rewrites the tensor it later concatenates (same after the decoder's ReLU anyway).
        x = nn.leaky_relu(x, 0.2)
        skips.append(x)
      else:
        x = ly.act(x)  # the innermost conv feeds the decoder's first ReLU directly
      tap(role, x)
    for k in range(1, n):
      role = f"up{k}"
      x = up_conv(ly, widths[role], use_bias=False, name=role)(x)
      x = ly.batch_norm(train, name=f"{role}_norm")(x)
      x = factory.gate(ly, widths[role], f"{role}_gate")(x)
      tap(f"{role}_norm", x)
      if role in dropped:
        x = nn.Dropout(DROPOUT_RATE, deterministic=not train, name=f"{role}_dropout")(x)
      skip = skips[n - 1 - k]  # down{n-k}'s activation, same resolution
      x = ly.act(jnp.concatenate([skip, x], axis=-1))
      tap(role, x[..., skip.shape[-1]:])
    x = up_conv(ly, self.output_nc, use_bias=True, name="head")(x)
    return jnp.tanh(x)
