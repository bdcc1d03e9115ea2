"""The "mobile" ResNet generator of DMAD's starred rows (CycleGAN*, Pix2Pix*), arXiv 2011.08382.

`MobileResnetGenerator` is GAN Compression's `MobileResnetGenerator` (mit-han-lab/
gan-compression `models/modules/resnet_architecture/mobile_resnet_generator.py`, with
`SeparableConv2d` from `models/modules/mobile_modules.py`), the network SJLeo/DMAD searches in
`models/MaskMobileCycleGAN.py` / `models/MaskMobilePix2Pix.py` and fine-tunes in
`models/MobileCycleGAN.py` / `models/MobilePix2Pix.py`. It is CycleGAN's ResNet generator
(`cyclegan.ResnetGenerator`: reflection-padded 7x7 stem, two stride-2 3x3 convs, residual blocks
at 4 ngf channels, two stride-2 transposed convs, reflection-padded 7x7 output conv, tanh;
affine-free instance norm, every conv with a bias) whose residual blocks use separable
convolutions: reflection pad 1, depthwise 3x3 conv (bias) -> instance norm -> pointwise 1x1
conv (bias), then the block's instance norm and ReLU; the same again without the ReLU; plus the
input. Only the residual blocks are separable. DMAD's configs (`scripts/mobile_*/*/train.sh`):

  * CycleGAN*: ngf 32, 9 blocks, with `cyclegan.NLayerDiscriminator()` (ndf 64, instance norm);
  * Pix2Pix*: the same generator with ngf 48 (there is no mobile U-Net), with
    `cyclegan.NLayerDiscriminator(ndf=128)` (instance norm: the mobile models keep CycleGAN's
    discriminator) on the 6-channel concatenation of input and output images.

The official block also has a dropout layer, at rate 0 in every DMAD and GAN Compression
config; `dropout_rate` keeps the option.

For pruning and distillation, the conventions of `cyclegan.ResnetGenerator`:
  * the layer factory's gate slot (`factory.gate`) follows each instance norm of the generator
    proper (stem, down, the two per block, up), before the activation or the residual sum:
    DMAD's mask places (`models/MaskMobileCycleGAN.py`). The instance norm inside a separable
    conv has no gate: the depthwise conv keeps its input's channels, so it has no width of its
    own to prune (DMAD puts no mask there either);
  * `widths` by role, with the roles of `cyclegan.ResnetGenerator` (see the class); width 0
    for a block's "conv1" role removes the block;
  * `prune_spec()` describes the channels for `jaxcompress.prune.materialize`: the roles and
    residual group of `cyclegan.ResnetGenerator`, each gate masking its separable conv's
    pointwise conv; a depthwise conv (and the norm after it) keeps the channels of its input,
    as SJLeo/DMAD `models/MaskMobileCycleGAN.py` (`prune`, `inhert_weight`) prunes them;
  * feature taps "down1", "down2", "res1".."res{n_blocks}", "up1", "up2" (after the same
    activations and blocks as `cyclegan.ResnetGenerator`; DMAD distils "down2", "res3", "res6"
    and "res9").

Example:
  >>> from jaxcompress.models import mobile_gan
  >>> g = mobile_gan.MobileResnetGenerator(ngf=32)
  >>> variables = g.init(rng, jnp.zeros((1, 256, 256, 3)))
"""
from __future__ import annotations

from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcompress.models import cyclegan, factory


class SeparableConv(nn.Module):
  """Depthwise kxk conv -> instance norm -> pointwise 1x1 conv, both convs with a bias.

  GAN Compression's `SeparableConv2d` with its defaults (InstanceNorm2d without affine
  parameters, `use_bias=True`, `scale_factor=1`); unpadded: the block pads by reflection.

  Attributes:
    features: output channels (the pointwise conv's).
    layers: layer factory (`conv` builds both convs).
    kernel_size: the depthwise kernel's height and width.
  """
  features: int
  layers: factory.Layers
  kernel_size: int = 3

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ly = self.layers
    channels = x.shape[-1]
    k = self.kernel_size
    y = ly.conv(channels, (k, k), padding="VALID", feature_group_count=channels, use_bias=True,
                name="depthwise")(x)
    y = cyclegan.instance_norm("norm")(y)
    return ly.conv(self.features, (1, 1), padding="VALID", use_bias=True, name="pointwise")(y)


class MobileResnetBlock(nn.Module):
  """x + gate2(norm2(sep2(pad(drop(act(gate1(norm1(sep1(pad(x)))))))))).

  Attributes:
    features: channels of the residual stream (conv2's output).
    layers: layer factory.
    inner: conv1's output channels (None: `features`); a pruned block narrows it.
    dropout_rate: dropout after the first activation (0 in the official configs).
  """
  features: int
  layers: factory.Layers
  inner: int | None = None
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    ly = self.layers
    inner = self.inner or self.features
    y = SeparableConv(inner, ly, name="conv1")(cyclegan.reflect_pad(x, 1))
    y = ly.act(factory.gate(ly, inner, "gate1")(cyclegan.instance_norm("norm1")(y)))
    if self.dropout_rate > 0:
      y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
    y = SeparableConv(self.features, ly, name="conv2")(cyclegan.reflect_pad(y, 1))
    return x + factory.gate(ly, self.features, "gate2")(cyclegan.instance_norm("norm2")(y))


class MobileResnetGenerator(nn.Module):
  """GAN Compression's mobile ResNet generator (`mobile_resnet_9blocks`).

  Attributes:
    output_nc: output channels.
    ngf: channels of the stem (doubled by each downsampling); DMAD uses 32 (CycleGAN*) and 48
      (Pix2Pix*).
    n_blocks: residual blocks.
    dropout_rate: dropout inside each block when `train` (needs a "dropout" rng); 0 officially.
    layers: layer factory: `first_conv` builds the stem, `conv` the down convs and both convs
      of each separable conv, `conv_transpose` the up convs, `last_conv` (`first_conv` when
      None) the output conv; `act` replaces the ReLUs.
    widths: output channels by role for a pruned generator, the roles equal to module paths:
      "stem", "down1", "down2" (also the residual stream's width: every block's conv2 and the
      depthwise conv of its conv1), "block{b}/conv1" (b from 0: the separable conv's pointwise
      output, which its conv2's depthwise conv keeps; default: the stream's width; 0 removes
      block b, whose output is then its input), "up1", "up2". Other roles left out keep ngf,
      2 ngf, 4 ngf, 2 ngf, ngf.
  """
  output_nc: int = 3
  ngf: int = 64
  n_blocks: int = 9
  dropout_rate: float = 0.0
  layers: factory.Layers = factory.FLOAT
  widths: Mapping[str, int] | None = None

  def layer_widths(self) -> dict[str, int]:
    """Every width role with its resolved width (see `widths`)."""
    ngf = self.ngf
    defaults = {"stem": ngf, "down1": 2 * ngf, "down2": 4 * ngf}
    defaults.update({f"block{b}/conv1": 4 * ngf for b in range(self.n_blocks)})
    defaults.update({"up1": 2 * ngf, "up2": ngf})
    blocks = [f"block{b}/conv1" for b in range(self.n_blocks)]
    out = factory.resolve_widths(self.widths, defaults, "MobileResnetGenerator",
                                 removable=blocks)
    for role in blocks:  # a block's inner width follows the stream unless given
      if role not in (self.widths or {}):
        out[role] = out["down2"]
    return out

  def prune_spec(self) -> factory.PruneSpec:
    """The channel roles for `jaxcompress.prune.materialize` (DMAD, arXiv 2011.08382 Sec. 3).

    The roles of `cyclegan.ResnetGenerator.prune_spec`: the residual stream ("down2") is
    written by the gate after "down2" and by every block's "gate2" (DMAD's group rule,
    SJLeo/DMAD `models/MaskMobileCycleGAN.py`, `get_cfg_residual_mask`); a block's "conv1" role
    is removable; removed blocks (width 0) have no roles. A gate masks the output of its
    separable conv's pointwise conv (and the block norm after it). A separable conv reads its
    input role as a whole: the depthwise conv, the norm inside and the pointwise conv's input
    axis keep that role's channels, as the official `prune` (`inhert_weight`) copies the
    depthwise filters of the kept input channels (`last_mask`) and zeroes the pointwise filters
    of stream channels a block's own mask switches off. One difference: the official loop drops
    any layer whose own mask keeps nothing together with the layer after it (meant for a
    block's first conv); here only a block whose first conv keeps nothing is removed, a block
    whose "gate2" keeps nothing stays with zero pointwise filters (it adds exactly 0), and any
    other role that keeps nothing keeps one zero channel (`materialize`).
    """
    widths = self.layer_widths()
    blocks = [b for b in range(self.n_blocks) if widths[f"block{b}/conv1"]]

    def role(name: str) -> factory.PruneRole:
      return factory.PruneRole({f"{name}_gate": (name, f"{name}_norm")})
    stream = {"down2_gate": ("down2", "down2_norm")}
    stream.update({f"block{b}/gate2": (f"block{b}/conv2/pointwise", f"block{b}/norm2")
                   for b in blocks})
    roles = {"stem": role("stem"), "down1": role("down1"),
             "down2": factory.PruneRole(stream, residual=True)}
    roles.update({f"block{b}/conv1": factory.PruneRole(
        {f"block{b}/gate1": (f"block{b}/conv1/pointwise", f"block{b}/norm1")}, removable=True)
                  for b in blocks})
    roles.update({"up1": role("up1"), "up2": role("up2")})
    inputs = {"down1": ("stem",), "down2": ("down1",), "up1": ("down2",), "up2": ("up1",),
              "head": ("up2",)}
    for b in blocks:  # the whole separable conv (depthwise, its norm, pointwise) reads the role
      inputs.update({f"block{b}/conv1": ("down2",), f"block{b}/conv2": (f"block{b}/conv1",)})
    return factory.PruneSpec(roles, inputs, input_layer="stem", input_size=(32, 32))

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    tap = factory.tapper(self)  # feature taps by role (factory.taps)
    ly = self.layers
    widths = self.layer_widths()
    x = ly.first_conv(widths["stem"], (7, 7), padding="VALID", use_bias=True, name="stem")(
        cyclegan.reflect_pad(x, 3))
    x = ly.act(factory.gate(ly, widths["stem"], "stem_gate")(
        cyclegan.instance_norm("stem_norm")(x)))
    for i in range(2):
      role = f"down{i + 1}"
      x = ly.conv(widths[role], (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                  use_bias=True, name=role)(x)
      x = ly.act(factory.gate(ly, widths[role], f"{role}_gate")(
          cyclegan.instance_norm(f"{role}_norm")(x)))
      tap(role, x)
    for b in range(self.n_blocks):
      # Width 0: block b was pruned away (its first conv kept no channel, so it added nothing).
      if widths[f"block{b}/conv1"]:
        x = MobileResnetBlock(widths["down2"], ly, inner=widths[f"block{b}/conv1"],
                              dropout_rate=self.dropout_rate, name=f"block{b}")(x, train)
      tap(f"res{b + 1}", x)
    for i in range(2):
      role = f"up{i + 1}"
      x = cyclegan.upsample_conv(ly, widths[role], name=role)(x)
      x = ly.act(factory.gate(ly, widths[role], f"{role}_gate")(
          cyclegan.instance_norm(f"{role}_norm")(x)))
      tap(role, x)
    last_conv = getattr(ly, "last_conv", None) or ly.first_conv
    x = last_conv(self.output_nc, (7, 7), padding="VALID", use_bias=True, name="head")(
        cyclegan.reflect_pad(x, 3))
    return jnp.tanh(x)
