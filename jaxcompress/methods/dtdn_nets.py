"""DTDN's networks: the encoder, the dynamic channel gate and the task network.

Dai, Chen, Wu, Hong, Ye, Tian, Ji, "Learning Task-oriented Disentangled Representations for
Unsupervised Domain Adaptation", arXiv 2007.13264 (journal version: "Disentangling Task-Oriented
Representations for Unsupervised Domain Adaptation", IEEE TIP 31, 2022), Sec. 3. Layout of the
official code (PeixianChen/DTDN, `DTDN/reid/models/dtdn.py`, `DTDN/reid/models/resnet_in.py`):

  * `Encoder`: the torchvision ResNet stem (conv, BN, ReLU, max pool), stage 1 and stage 2
    (conv1 ... layer2 of ResNet-50): the map F that the gate splits.
  * `DynamicGate` ("DynamicNet"): g(F) = sigmoid(-5 (W2 ReLU(W1 maxpool(F) + b1) + b2 - 0.1)),
    one value per channel and sample, the hidden width C // reduction (16 in the release).
  * `TaskNet`: stage 3 and stage 4 of `resnet_in` (affine instance norm after the residual
    addition and before the ReLU in the LAST block of stage 3 only: `_make_layer` appends the
    `IN=True` block last; stage 4 with stride `last_stride`, 1 in the release), global MAX
    pooling, Linear(num_features) -> BatchNorm1d ("feat", "feat_bn"), then ReLU -> dropout ->
    the source head ("classifier", one output per source class) and the target head
    ("target_classifier", one output per target training image: exemplar labels), both
    initialised N(0, 0.001) with zero bias as in the release.

`block` "bottleneck" (ResNet-50, stage_sizes (3, 4, 6, 3)) or "basic" (CPU-sized ResNet-18/34
shapes); `width` is the first stage's planes (64 in torchvision). Module names follow
`jaxcompress.models.resnet_imagenet` (stem, stem_bn, stageS_blockB/{conv1.., bn1.., downsample}).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcompress.errors import ConfigError
from jaxcompress.models import factory
from jaxcompress.models.resnet_imagenet import Downsample

BLOCKS = ("bottleneck", "basic")


class Block(nn.Module):
  """A ResNet block (bottleneck or basic) with an optional affine instance norm after the
  residual addition (`resnet_in.Bottleneck(IN=True)`).

  Attributes:
    planes: block planes (output 4 * planes for bottleneck, planes for basic).
    strides: stride of the 3x3 convolution.
    kind: "bottleneck" or "basic".
    instance_norm: apply InstanceNorm2d(affine) to out + residual before the ReLU.
    layers: layer factory.
  """
  planes: int
  strides: int
  kind: str = "bottleneck"
  instance_norm: bool = False
  layers: factory.Layers = factory.FLOAT

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    ly = self.layers
    out_ch = self.planes * (4 if self.kind == "bottleneck" else 1)
    shortcut = x
    if self.strides != 1 or x.shape[-1] != out_ch:
      shortcut = Downsample(out_ch, self.strides, ly, name="downsample")(x, train)
    if self.kind == "bottleneck":
      y = ly.conv(self.planes, (1, 1), padding="VALID", use_bias=False, name="conv1")(x)
      y = ly.act(ly.batch_norm(train, name="bn1")(y))
      y = factory.conv3x3(ly, self.planes, self.strides, name="conv2")(y)
      y = ly.act(ly.batch_norm(train, name="bn2")(y))
      y = ly.conv(out_ch, (1, 1), padding="VALID", use_bias=False, name="conv3")(y)
      y = ly.batch_norm(train, name="bn3")(y)
    else:
      y = factory.conv3x3(ly, self.planes, self.strides, name="conv1")(x)
      y = ly.act(ly.batch_norm(train, name="bn1")(y))
      y = factory.conv3x3(ly, self.planes, name="conv2")(y)
      y = ly.batch_norm(train, name="bn2")(y)
    y = y + shortcut
    if self.instance_norm:
      # torch InstanceNorm2d: per sample and channel over H, W; biased variance, eps 1e-5.
      y = nn.GroupNorm(num_groups=None, group_size=1, epsilon=1e-5, name="in")(y)
    return ly.act(y)


def _stage(x: jax.Array, train: bool, *, stage: int, blocks: int, planes: int, strides: int,
           kind: str, instance_norm_last: bool) -> jax.Array:
  for b in range(blocks):
    x = Block(planes, strides if b == 0 else 1, kind,
              instance_norm=instance_norm_last and b == blocks - 1 and blocks > 1,
              name=f"stage{stage}_block{b}")(x, train)
  return x


def _check(kind: str, stage_sizes: Sequence[int]) -> None:
  if kind not in BLOCKS or len(stage_sizes) != 4:
    raise ConfigError(f"DTDN networks need block in {BLOCKS} and four stage sizes, got "
                      f"block={kind!r}, stage_sizes={tuple(stage_sizes)}.")


class Encoder(nn.Module):
  """Stem, stage 1 and stage 2: (N, H, W, 3) images -> the (N, h, w, C) map F."""
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  block: str = "bottleneck"
  width: int = 64

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    _check(self.block, self.stage_sizes)
    ly = factory.FLOAT
    x = ly.first_conv(self.width, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)),
                      use_bias=False, name="stem")(x)
    x = ly.act(ly.batch_norm(train, name="stem_bn")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for s in (0, 1):
      x = _stage(x, train, stage=s + 1, blocks=self.stage_sizes[s], planes=self.width * 2**s,
                 strides=1 if s == 0 else 2, kind=self.block, instance_norm_last=False)
    return x


class DynamicGate(nn.Module):
  """The per-sample channel gate g(F) in (0, 1), shape (N, C) (module docstring)."""
  reduction: int = 16

  @nn.compact
  def __call__(self, f: jax.Array) -> jax.Array:
    c = f.shape[-1]
    h = jnp.max(f, axis=(1, 2))
    h = nn.relu(nn.Dense(max(1, c // self.reduction), name="fc1")(h))
    h = nn.Dense(c, name="fc2")(h)
    return jax.nn.sigmoid(-5.0 * (h - 0.1))


class TaskNet(nn.Module):
  """Stage 3 (instance norm in its last block) and 4, max pooling, embedding and two heads.

  Attributes:
    num_source: source head outputs (source classes / identities).
    num_target: target head outputs (target training images); 0 for no target head.
    num_features: embedding width (2048 in the release).
    dropout: dropout rate before the heads and on the memory feature (0.5).
    stage_sizes, block, width, last_stride: the backbone (stage 3 / 4 planes width * 4, * 8).
    instance_norm: the `resnet_in` instance norm in stage 3 (False: plain ResNet, "DTDN" without
      "+IN" in the release's comments).
  """
  num_source: int
  num_target: int = 0
  num_features: int = 2048
  dropout: float = 0.5
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  block: str = "bottleneck"
  width: int = 64
  last_stride: int = 1
  instance_norm: bool = True

  @nn.compact
  def __call__(self, f: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    """Returns {"pool": max-pooled stage-4 features, "bn": the BatchNorm1d embedding,
    "hidden": ReLU(bn) after dropout, "source": source logits, "target": target logits}."""
    _check(self.block, self.stage_sizes)
    x = _stage(f, train, stage=3, blocks=self.stage_sizes[2], planes=self.width * 4, strides=2,
               kind=self.block, instance_norm_last=self.instance_norm)
    x = _stage(x, train, stage=4, blocks=self.stage_sizes[3], planes=self.width * 8,
               strides=self.last_stride, kind=self.block, instance_norm_last=False)
    pool = jnp.max(x, axis=(1, 2))
    e = nn.Dense(self.num_features, name="feat",
                 kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"))(pool)
    bn = factory.FLOAT.batch_norm(train, name="feat_bn")(e)
    hidden = nn.Dropout(self.dropout, deterministic=not train)(nn.relu(bn))
    head = dict(kernel_init=nn.initializers.normal(0.001))
    out = {"pool": pool, "bn": bn, "hidden": hidden,
           "source": nn.Dense(self.num_source, name="classifier", **head)(hidden)}
    if self.num_target > 0:
      out["target"] = nn.Dense(self.num_target, name="target_classifier", **head)(hidden)
    return out
