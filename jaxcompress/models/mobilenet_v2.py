"""MobileNetV2 (Sandler et al. 2018, arXiv 1801.04381) built through the layer factory.

The torchvision layout (`torchvision/models/mobilenetv2.py`): a 3x3 stride-2 stem of 32 channels,
17 inverted residual blocks (1x1 expand by t, 3x3 depthwise, 1x1 linear projection; a residual
connection when stride is 1 and the width is unchanged), a 1x1 head of 1280 channels, global
average pool, dropout and the classifier. Every convolution but the projection is followed by
BatchNorm and ReLU6; widths are rounded to multiples of 8 as torchvision's `_make_divisible`
does. 3.50 M parameters and 300.8 M MACs at 224x224.

Module names: stem/stem_bn, block1..block17 with expand/expand_bn (absent when t = 1),
depthwise/depthwise_bn and project/project_bn, head/head_bn, classifier.

Example:
  >>> from jaxcompress.models import mobilenet_v2
  >>> model = mobilenet_v2.MobileNetV2(num_classes=1000)
  >>> variables = model.init(rng, jnp.zeros((1, 224, 224, 3)), train=False)
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcompress.models import factory

# (expand ratio t, output channels c, repeats n, first stride s): Table 2 of arXiv 1801.04381.
INVERTED_RESIDUAL_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                             (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
  """Rounds a width to the nearest multiple of `divisor`, never more than 10 % below `v`.

  The rule of the official TensorFlow models (slim `mobilenet.py`) that torchvision copies.

  Args:
    v: the unrounded channel count (width multiplier times the base width).
    divisor: channel counts are multiples of it.
    min_value: lower bound (default `divisor`).

  Returns:
    The rounded channel count.
  """
  min_value = divisor if min_value is None else min_value
  new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
  if new_v < 0.9 * v:
    new_v += divisor
  return new_v


def relu6(x: jax.Array) -> jax.Array:
  """min(max(x, 0), 6), the activation of MobileNetV2."""
  return jnp.clip(x, 0.0, 6.0)


class InvertedResidual(nn.Module):
  """1x1 expand (t > 1), 3x3 depthwise, 1x1 linear projection; residual when shapes allow.

  Attributes:
    features: output channels.
    strides: stride of the depthwise convolution.
    expand_ratio: t; the hidden width is round(in_channels * t).
    layers: layer factory (`act` is ignored: the block's nonlinearity is ReLU6 by design).
  """
  features: int
  strides: int
  expand_ratio: int
  layers: factory.Layers

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    ly = self.layers
    in_features = x.shape[-1]
    hidden = int(round(in_features * self.expand_ratio))
    y = x
    if self.expand_ratio != 1:
      y = ly.conv(hidden, (1, 1), padding="VALID", use_bias=False, name="expand")(y)
      y = relu6(ly.batch_norm(train, name="expand_bn")(y))
    y = ly.conv(hidden, (3, 3), strides=(self.strides, self.strides), padding=((1, 1), (1, 1)),
                feature_group_count=hidden, use_bias=False, name="depthwise")(y)
    y = relu6(ly.batch_norm(train, name="depthwise_bn")(y))
    y = ly.conv(self.features, (1, 1), padding="VALID", use_bias=False, name="project")(y)
    # Linear bottleneck: no activation after the projection (Sec. 3.2 of the paper).
    y = ly.batch_norm(train, name="project_bn")(y)
    if self.strides == 1 and in_features == self.features:
      y = y + x
    return y


class MobileNetV2(nn.Module):
  """MobileNetV2 with torchvision's architecture and width rounding.

  Attributes:
    num_classes: classifier outputs.
    width_mult: width multiplier alpha of every layer (the head keeps >= 1280 channels).
    setting: (t, c, n, s) rows of the inverted residual stages.
    round_nearest: channel counts are multiples of it.
    dropout: dropout rate before the classifier; torchvision trains with 0.2, which needs a
      "dropout" rng in `apply` when training.
    layers: layer factory; `first_conv` builds the stem, `last_dense` the classifier.
  """
  num_classes: int = 1000
  width_mult: float = 1.0
  setting: Sequence[Sequence[int]] = INVERTED_RESIDUAL_SETTING
  round_nearest: int = 8
  dropout: float = 0.0
  layers: factory.Layers = factory.FLOAT

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    ly = self.layers
    stem = make_divisible(32 * self.width_mult, self.round_nearest)
    last = make_divisible(1280 * max(1.0, self.width_mult), self.round_nearest)
    x = ly.first_conv(stem, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False,
                      name="stem")(x)
    x = relu6(ly.batch_norm(train, name="stem_bn")(x))
    index = 1
    for t, c, n, s in self.setting:
      features = make_divisible(c * self.width_mult, self.round_nearest)
      for i in range(n):
        x = InvertedResidual(features, s if i == 0 else 1, t, ly, name=f"block{index}")(x, train)
        index += 1
    x = ly.conv(last, (1, 1), padding="VALID", use_bias=False, name="head")(x)
    x = relu6(ly.batch_norm(train, name="head_bn")(x))
    x = jnp.mean(x, axis=(1, 2))
    if self.dropout > 0:
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return ly.last_dense(self.num_classes, name="classifier")(x)


def mobilenet_v2(num_classes: int = 1000, layers: factory.Layers = factory.FLOAT,
                 **kwargs: Any) -> MobileNetV2:
  """MobileNetV2 1.0 (3.50 M parameters at 1000 classes)."""
  return MobileNetV2(num_classes=num_classes, layers=layers, **kwargs)
