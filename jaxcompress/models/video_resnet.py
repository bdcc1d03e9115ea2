"""3-D ResNets for video: R3D-18 and R(2+1)D, channel-last clips, through the layer factory.

Two layouts of each, selected by `variant`:

* "dsm": the backbones of DSM (Wang et al., "Enhancing Unsupervised Video Representation
  Learning by Decoupling the Scene and the Motion", arXiv 2009.05757; official code
  FingerRec/DSM-decoupling-scene-motion).
  - R3D (`src/model/r3d.py`, Hara et al.'s 3D-ResNets): 7x7x7 stem, stride (1, 2, 2), padding 3;
    3x3x3 max pool, stride 2 (the first temporal halving); stages of two 3x3x3 basic blocks,
    stride 2 in T, H and W from stage 2 on; shortcut "B" (1x1x1 strided conv + BN). A 16x112x112
    clip ends at 1x4x4. Fine-tuning head: `cp`, a bias-free conv over the spatially pooled map
    with kernel (ceil(sample_duration / 16), 1, 1) = 1 for 16-frame clips, averaged over time,
    i.e. a bias-free linear layer on the pooled features.
  - R(2+1)D (`src/model/r2p1d.py`, `R2Plus1DNet((1, 1, 1, 1))`, the net DSM trains: one block
    per stage): every conv factored into a (1, k, k) spatial conv, BN, ReLU and a (k, 1, 1)
    temporal conv, with floor(k_t k^2 in out / (k^2 in + k_t out)) middle channels per conv
    (83 in the (3, 7, 7) stem); the shortcut is itself a factored 1x1x1 conv (stride (1, 2, 2)
    then (2, 1, 1), BN and ReLU between) + BN. Linear classifier with bias.
* "torchvision": `torchvision/models/video/resnet.py` (`r3d_18`, `r2plus1d_18`, Tran et al.
  2018, arXiv 1711.11248): (3, 7, 7) stem, stride (1, 2, 2), no pool; the same stages; 1x1x1
  strided conv shortcuts. R(2+1)D's stem is (1, 7, 7) to 45 channels then (3, 1, 1) to 64, and
  both convs of a block take (in * out * 27) // (in * 9 + 3 * out) middle channels computed from
  the block's input and output widths. A 16x112x112 clip ends at 2x7x7. Linear classifier.

Parameters with 400 classes: torchvision R3D-18 33,371,472 and R(2+1)D-18 31,505,325 (its
published counts); DSM R3D-18 33,408,704 and DSM R(2+1)D (one block per stage) 14,570,503, as
the official modules count them.

Module names follow the official ones where they exist (conv1/bn1/conv2/bn2/downsample in a
block); blocks are `stage{s}_block{b}` as in `resnet_imagenet`, the classifier `classifier`.
Feature taps (`factory.TAPS`): "stem", "stage1".."stage4".

Example:
  >>> from jaxcompress.models import video_resnet
  >>> model = video_resnet.r3d_18(num_classes=101)
  >>> variables = model.init(rng, jnp.zeros((1, 16, 112, 112, 3)), train=False)
  >>> logits, feats = model.apply(variables, clips, return_features=True)  # feats: (N, 512)
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax

from jaxcompress.models import factory
from jaxcompress.models import video_layers as vl

VARIANTS = ("dsm", "torchvision")


def mid_channels(c_in: int, c_out: int, kt: int = 3, k: int = 3) -> int:
  """Middle width of a (2+1)D conv with the parameters of a kt x k x k conv (Tran et al. 2018,
  Sec. 3.5): floor(kt k^2 c_in c_out / (k^2 c_in + kt c_out))."""
  return (kt * k * k * c_in * c_out) // (k * k * c_in + kt * c_out)


class Conv2Plus1D(nn.Module):
  """(1, k, k) spatial conv to `mid` channels, BN, gate, activation, (kt, 1, 1) temporal conv.

  Attributes:
    features: output channels.
    mid: middle channels.
    layers: layer factory.
    kernel: (kt, k, k) of the conv it factors.
    strides: (st, s, s); the spatial conv takes (1, s, s), the temporal one (st, 1, 1).
    padding: (pt, p, p), split the same way.
    weight_init: "dsm" or "torchvision".
    first: build the spatial conv with `layers.first_conv` (the stem).
  """
  features: int
  mid: int
  layers: factory.Layers
  kernel: Sequence[int] = (3, 3, 3)
  strides: Sequence[int] = (1, 1, 1)
  padding: Sequence[int] = (1, 1, 1)
  weight_init: str = "dsm"
  first: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    ly, (kt, kh, kw), (st, sh, sw), (pt, ph, pw) = (self.layers, self.kernel, self.strides,
                                                    self.padding)
    x = vl.conv3d(ly, x, self.mid, (1, kh, kw), (1, sh, sw), ((0, 0), (ph, ph), (pw, pw)),
                  init=self.weight_init, role="first_conv" if self.first else "conv",
                  name="spatial")
    x = vl.batch_norm(ly, train, self.weight_init, "spatial_bn")(x)
    x = ly.act(factory.gate(ly, self.mid, "spatial_gate")(x))
    return vl.conv3d(ly, x, self.features, (kt, 1, 1), (st, 1, 1), ((pt, pt), (0, 0), (0, 0)),
                     init=self.weight_init, name="temporal")


class BasicBlock(nn.Module):
  """Two 3x3x3 (or factored) convs with BN, a shortcut, activation.

  Attributes:
    features: output channels.
    stride: stride of the first conv (and the shortcut) in T, H and W.
    layers: layer factory.
    mids: middle widths of the two factored convs; None: plain 3x3x3 convs.
    down_mid: middle width of a factored 1x1x1 shortcut conv (DSM's R(2+1)D); None: a plain
      strided 1x1x1 conv.
    weight_init: "dsm" or "torchvision".
  """
  features: int
  stride: int
  layers: factory.Layers
  mids: tuple[int, int] | None = None
  down_mid: int | None = None
  weight_init: str = "dsm"

  def _conv(self, x: jax.Array, mid: int | None, stride: int, name: str, train: bool
            ) -> jax.Array:
    s3 = (stride,) * 3
    if mid is None:
      return vl.conv3d(self.layers, x, self.features, (3, 3, 3), s3, 1, init=self.weight_init,
                       name=name)
    return Conv2Plus1D(self.features, mid, self.layers, strides=s3, weight_init=self.weight_init,
                       name=name)(x, train)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    ly, c = self.layers, self.features
    mids = self.mids or (None, None)
    shortcut = x
    if self.stride != 1 or x.shape[-1] != c:
      s3 = (self.stride,) * 3
      if self.down_mid is None:
        shortcut = vl.conv3d(ly, x, c, (1, 1, 1), s3, 0, init=self.weight_init, name="downsample")
      else:
        shortcut = Conv2Plus1D(c, self.down_mid, ly, (1, 1, 1), s3, (0, 0, 0), self.weight_init,
                               name="downsample")(x, train)
      shortcut = vl.batch_norm(ly, train, self.weight_init, "downsample_bn")(shortcut)
      shortcut = factory.gate(ly, c, "downsample_gate")(shortcut)
    y = self._conv(x, mids[0], self.stride, "conv1", train)
    y = ly.act(factory.gate(ly, c, "gate1")(vl.batch_norm(ly, train, self.weight_init, "bn1")(y)))
    y = self._conv(y, mids[1], 1, "conv2", train)
    y = factory.gate(ly, c, "gate2")(vl.batch_norm(ly, train, self.weight_init, "bn2")(y))
    return ly.act(y + shortcut)


class VideoResNet(nn.Module):
  """R3D / R(2+1)D with basic blocks on (N, T, H, W, C) clips.

  Attributes:
    num_classes: classifier outputs.
    stage_sizes: blocks per stage ((2, 2, 2, 2): the -18 nets).
    factorized: (2+1)D convs instead of 3x3x3.
    variant: "dsm" or "torchvision" stems, shortcuts, mid widths and classifier bias (module
      docstring).
    layers: layer factory; `first_conv` builds the stem's (first) conv, `last_dense` the
      classifier.
    weight_init: "dsm" (the official DSM `weights_init`) or "torchvision".
    include_top: end with the classifier; False returns the pooled features and builds no
      classifier (the pretraining encoder; fine-tuning adds a fresh `classifier`).
    dropout: dropout rate before the classifier (needs a "dropout" rng in training).
    width: channels of the stem and the first stage (64 in every official net; stage s has
      width * 2**s); smaller values give CPU-sized nets for quick experiments.
  """
  num_classes: int = 400
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  factorized: bool = False
  variant: str = "dsm"
  layers: factory.Layers = factory.FLOAT
  weight_init: str = "dsm"
  include_top: bool = True
  dropout: float = 0.0
  width: int = 64

  def _stem(self, x: jax.Array, train: bool) -> jax.Array:
    ly, init, dsm = self.layers, self.weight_init, self.variant == "dsm"
    if not self.factorized:
      kernel, pad = ((7, 7, 7), 3) if dsm else ((3, 7, 7), ((1, 1), (3, 3), (3, 3)))
      x = vl.Unit3D(self.width, kernel, ly, (1, 2, 2), pad, init, first=True, name="stem")(
          x, train)
      # Hara's R3D halves T, H and W with a 3x3x3 max pool; torchvision's R3D has none.
      return vl.max_pool(x, (3, 3, 3), (2, 2, 2), ((1, 1),) * 3) if dsm else x
    mid = mid_channels(x.shape[-1], self.width, 3, 7) if dsm else 45 * self.width // 64
    x = Conv2Plus1D(self.width, mid, ly, (3, 7, 7), (1, 2, 2), (1, 3, 3), init, first=True,
                    name="stem")(x, train)
    x = factory.gate(ly, self.width, "stem_gate")(vl.batch_norm(ly, train, init, "stem_bn")(x))
    return ly.act(x)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, return_features: bool = False
               ) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Logits (N, num_classes); with `return_features` also the pooled (N, 512) features.

    Without `include_top` the result is the features (twice with `return_features`).
    """
    name = f"VideoResNet({self.variant}, factorized={self.factorized})"
    vl.check_clip(x, name)
    vl.check_init(self.weight_init, name)
    if self.variant not in VARIANTS:
      raise ValueError(f"{name}: unknown variant {self.variant!r}; use one of {VARIANTS}.")
    tap = factory.tapper(self)
    x = tap("stem", self._stem(x, train))
    for s, blocks in enumerate(self.stage_sizes):
      c = self.width * 2**s
      for b in range(blocks):
        c_in = x.shape[-1]
        stride = 2 if s > 0 and b == 0 else 1
        mids = down_mid = None
        if self.factorized and self.variant == "dsm":
          mids = (mid_channels(c_in, c), mid_channels(c, c))
          if stride != 1 or c_in != c:
            down_mid = mid_channels(c_in, c, 1, 1)
        elif self.factorized:
          mids = (mid_channels(c_in, c),) * 2  # torchvision: both convs use the block's width
        x = BasicBlock(c, stride, self.layers, mids, down_mid, self.weight_init,
                       name=f"stage{s + 1}_block{b}")(x, train)
      x = tap(f"stage{s + 1}", x)
    features = vl.global_pool(x)
    if not self.include_top:
      return (features, features) if return_features else features
    # DSM's R3D fine-tuning head `cp` is a bias-free conv; the other classifiers have biases.
    use_bias = not (self.variant == "dsm" and not self.factorized)
    logits = vl.linear_head(self, features, self.num_classes, init=self.weight_init,
                            use_bias=use_bias, dropout=self.dropout, train=train)
    return (logits, features) if return_features else logits


def r3d_18(num_classes: int = 400, layers: factory.Layers = factory.FLOAT,
           **kwargs: Any) -> VideoResNet:
  """DSM's R3D-18 (Hara's layout, 7x7x7 stem and temporal max pool; 33.41 M parameters at 400
  classes)."""
  return VideoResNet(num_classes=num_classes, layers=layers, **kwargs)


def r3d_18_torchvision(num_classes: int = 400, layers: factory.Layers = factory.FLOAT,
                       **kwargs: Any) -> VideoResNet:
  """torchvision's `r3d_18` (33.37 M parameters at 400 classes)."""
  kwargs = {"variant": "torchvision", "weight_init": "torchvision", **kwargs}
  return VideoResNet(num_classes=num_classes, layers=layers, **kwargs)


def r2plus1d_18(num_classes: int = 400, layers: factory.Layers = factory.FLOAT,
                **kwargs: Any) -> VideoResNet:
  """torchvision's `r2plus1d_18` (31.51 M parameters at 400 classes)."""
  kwargs = {"variant": "torchvision", "weight_init": "torchvision", **kwargs}
  return VideoResNet(num_classes=num_classes, factorized=True, layers=layers, **kwargs)


def r2plus1d_dsm(num_classes: int = 101, layers: factory.Layers = factory.FLOAT,
                 **kwargs: Any) -> VideoResNet:
  """DSM's `R2Plus1DNet((1, 1, 1, 1))`: one factored block per stage (14.42 M parameters at
  101 classes)."""
  kwargs = {"stage_sizes": (1, 1, 1, 1), **kwargs}
  return VideoResNet(num_classes=num_classes, factorized=True, layers=layers, **kwargs)
