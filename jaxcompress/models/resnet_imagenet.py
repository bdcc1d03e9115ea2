"""ImageNet ResNet-18/34 (He et al. 2016, arXiv 1512.03385) built through the layer factory.

The torchvision layout: 7x7 stride-2 stem, 3x3 stride-2 max pool, four stages of basic blocks
(64-128-256-512 channels), 1x1 stride-2 projection shortcuts, global average pool, classifier.
ResNet-18 has 11.69 M parameters and 1.81 G MACs at 224x224 (papers round to 1.8 G / 1.82 G).

`bireal=True` gives the block binary ImageNet ResNets use (Bi-Real Net, arXiv 1808.00278; RBNN's
official `imagenet/models_imagenet/resnet.py`): a shortcut around EACH 3x3 convolution,
  y = act(bn1(conv1(x)) + downsample(x));  out = act(bn2(conv2(y)) + y),
with the downsample kept in float (RBNN builds it from `nn.Conv2d`, not its binary conv, so it is
built here from `factory.FLOAT.conv` whatever `layers.conv` is). `avg_down=True` uses the
official code's alternative downsample, 2x2 average pool (ceil mode, padding not counted) then a
stride-1 1x1 conv; its default, and ours, is the strided 1x1 conv. RBNN's full ImageNet setting is
`bireal=True, bn_before_classifier=True` with `layers.act = nn.hard_tanh` and `bn_scale_init=1e-8`.

Example:
  >>> from jaxcompress.models import factory, resnet_imagenet
  >>> model = resnet_imagenet.ResNet18(num_classes=1000, layers=factory.FLOAT)
  >>> variables = model.init(rng, jnp.zeros((1, 224, 224, 3)), train=False)
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcompress.models import factory


class Downsample(nn.Module):
  """Projection shortcut: 1x1 conv (+ optional 2x2 average pool first) and batch norm.

  Attributes:
    features: output channels.
    strides: spatial stride of the block.
    layers: layer factory (norm and, unless `force_float`, the conv class).
    avg_down: pool with a 2x2 average then apply a stride-1 conv (RBNN `avg_down`).
    force_float: build the conv from the float factory (binary ImageNet ResNets keep it float).
  """
  features: int
  strides: int
  layers: factory.Layers
  avg_down: bool = False
  force_float: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv = factory.FLOAT.conv if self.force_float else self.layers.conv
    strides = self.strides
    if self.avg_down and strides != 1:
      # PyTorch AvgPool2d(ceil_mode=True, count_include_pad=False): pad odd sizes at the end and
      # average only the real pixels.
      pad = [(0, d % strides) for d in x.shape[1:3]]
      x = nn.avg_pool(x, (strides, strides), (strides, strides), padding=pad,
                      count_include_pad=False)
      strides = 1
    x = conv(self.features, (1, 1), strides=(strides, strides), padding="VALID", use_bias=False,
             name="conv")(x)
    return self.layers.batch_norm(train, name="bn")(x)


class BasicBlock(nn.Module):
  """Two 3x3 convs; standard (one shortcut per block) or Bi-Real (one shortcut per conv).

  Attributes:
    features: output channels.
    strides: stride of the first conv.
    layers: layer factory.
    bireal: shortcut around each conv with a float downsample (binary ImageNet ResNets).
    avg_down: average-pool downsample (see `Downsample`).
  """
  features: int
  strides: int
  layers: factory.Layers
  bireal: bool = False
  avg_down: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    ly = self.layers
    shortcut = x
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = Downsample(self.features, self.strides, ly, self.avg_down,
                            force_float=self.bireal, name="downsample")(x, train)
    y = ly.batch_norm(train, name="bn1")(factory.conv3x3(ly, self.features, self.strides,
                                                         name="conv1")(x))
    if self.bireal:
      y = ly.act(y + shortcut)
      z = ly.batch_norm(train, name="bn2")(factory.conv3x3(ly, self.features, name="conv2")(y))
      return ly.act(z + y)
    y = ly.act(y)
    y = ly.batch_norm(train, name="bn2")(factory.conv3x3(ly, self.features, name="conv2")(y))
    return ly.act(y + shortcut)


def imagenet_stem(ly: factory.Layers, x: jax.Array, train: bool) -> jax.Array:
  """The torchvision ResNet stem inside a compact module: 7x7/2 conv "stem", BN "stem_bn",
  activation, 3x3/2 max pool."""
  x = ly.first_conv(64, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)), use_bias=False,
                    name="stem")(x)
  x = ly.act(ly.batch_norm(train, name="stem_bn")(x))
  # PyTorch MaxPool2d(3, 2, padding=1) pads with -inf, as flax's max_pool does.
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class ResNet(nn.Module):
  """ImageNet ResNet with basic blocks (ResNet-18: (2, 2, 2, 2); ResNet-34: (3, 4, 6, 3)).

  Attributes:
    num_classes: classifier outputs.
    stage_sizes: blocks per stage.
    layers: layer factory (float, binary, quantized ...); `first_conv` builds the stem and
      `last_dense` the classifier, which binary papers keep in float.
    bireal: Bi-Real blocks (shortcut per conv, float downsample).
    avg_down: average-pool downsample shortcut.
    bn_before_classifier: BatchNorm1d between global pooling and the classifier (RBNN official).
  """
  num_classes: int = 1000
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  layers: factory.Layers = factory.FLOAT
  bireal: bool = False
  avg_down: bool = False
  bn_before_classifier: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    ly = self.layers
    x = imagenet_stem(ly, x, train)
    for stage, blocks in enumerate(self.stage_sizes):
      for b in range(blocks):
        strides = 2 if stage > 0 and b == 0 else 1
        x = BasicBlock(64 * 2**stage, strides, ly, self.bireal, self.avg_down,
                       name=f"stage{stage + 1}_block{b}")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    if self.bn_before_classifier:
      # A float BatchNorm1d with PyTorch defaults and scale 1 (RBNN only sets 2-d BN scales).
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                       name="pool_bn")(x)
    return ly.last_dense(self.num_classes, name="classifier")(x)


def ResNet18(num_classes: int = 1000,  # pylint: disable=invalid-name
             layers: factory.Layers = factory.FLOAT, **kwargs: Any) -> ResNet:
  """ImageNet ResNet-18 (11.69 M parameters, 1.81 G MACs at 224x224)."""
  return ResNet(num_classes=num_classes, stage_sizes=(2, 2, 2, 2), layers=layers, **kwargs)


def ResNet34(num_classes: int = 1000,  # pylint: disable=invalid-name
             layers: factory.Layers = factory.FLOAT, **kwargs: Any) -> ResNet:
  """ImageNet ResNet-34 (21.80 M parameters, 3.66 G MACs at 224x224)."""
  return ResNet(num_classes=num_classes, stage_sizes=(3, 4, 6, 3), layers=layers, **kwargs)
