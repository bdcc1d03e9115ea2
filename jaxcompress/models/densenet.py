"""DenseNet-BC (Huang et al. 2017, arXiv 1608.06993) built through the layer factory.

The torchvision layout (`torchvision/models/densenet.py`): 7x7 stride-2 stem, BN-ReLU, 3x3
stride-2 max pool; dense blocks of BN-ReLU-1x1 conv (bn_size * growth channels)-BN-ReLU-3x3 conv
(growth channels) layers whose outputs are concatenated to their input; transitions of
BN-ReLU-1x1 conv (halving the channels)-2x2 average pool; a final BN, ReLU, global average pool
and classifier. DenseNet-121 has 7.98 M parameters and 2.87 G MACs at 224x224.

Module names mirror torchvision's state_dict keys without its `features.` prefix: conv0, norm0,
denseblockI/denselayerJ/{norm1, conv1, norm2, conv2}, transitionI/{norm, conv}, norm5,
classifier.

Example:
  >>> from jaxcompress.models import densenet
  >>> model = densenet.densenet121(num_classes=1000)
  >>> variables = model.init(rng, jnp.zeros((1, 224, 224, 3)), train=False)

The `densenetNNN` constructors take further `DenseNet` attributes as keyword arguments, which
override the named architecture's (a shallower `block_config` for a quick experiment).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcompress.models import factory


class DenseLayer(nn.Module):
  """BN-ReLU-Conv1x1-BN-ReLU-Conv3x3 producing `growth_rate` new channels (the "BC" layer).

  Attributes:
    growth_rate: channels the layer adds.
    bn_size: the 1x1 bottleneck has bn_size * growth_rate channels.
    dropout: dropout on the new channels (torchvision's `drop_rate`; needs a "dropout" rng).
    layers: layer factory.
  """
  growth_rate: int
  bn_size: int
  dropout: float
  layers: factory.Layers

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    ly = self.layers
    y = ly.act(ly.batch_norm(train, name="norm1")(x))
    y = ly.conv(self.bn_size * self.growth_rate, (1, 1), padding="VALID", use_bias=False,
                name="conv1")(y)
    y = ly.act(ly.batch_norm(train, name="norm2")(y))
    y = ly.conv(self.growth_rate, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                name="conv2")(y)
    if self.dropout > 0:
      y = nn.Dropout(self.dropout, deterministic=not train)(y)
    return y


class DenseBlock(nn.Module):
  """`num_layers` dense layers, each reading the concatenation of all earlier outputs.

  Attributes:
    num_layers: layers in the block.
    growth_rate: channels each layer adds.
    bn_size: bottleneck multiplier of each layer.
    dropout: dropout of each layer's new channels.
    layers: layer factory.
  """
  num_layers: int
  growth_rate: int
  bn_size: int
  dropout: float
  layers: factory.Layers

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for i in range(self.num_layers):
      new = DenseLayer(self.growth_rate, self.bn_size, self.dropout, self.layers,
                       name=f"denselayer{i + 1}")(x, train)
      # torchvision concatenates [input, layer1, layer2, ...] in that channel order.
      x = jnp.concatenate([x, new], axis=-1)
    return x


class Transition(nn.Module):
  """BN-ReLU-Conv1x1 to `features` channels, then a 2x2 stride-2 average pool.

  Attributes:
    features: output channels (half the input in DenseNet-BC).
    layers: layer factory.
  """
  features: int
  layers: factory.Layers

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    ly = self.layers
    x = ly.act(ly.batch_norm(train, name="norm")(x))
    x = ly.conv(self.features, (1, 1), padding="VALID", use_bias=False, name="conv")(x)
    # AvgPool2d(2, 2): no padding, odd sizes drop the last row/column (floor), as "VALID" does.
    return nn.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")


class DenseNet(nn.Module):
  """DenseNet-BC with torchvision's architecture.

  Attributes:
    num_classes: classifier outputs.
    growth_rate: k, channels each dense layer adds (32; 48 for DenseNet-161).
    block_config: dense layers per block ((6, 12, 24, 16) for DenseNet-121).
    num_init_features: stem channels (64; 96 for DenseNet-161).
    bn_size: bottleneck multiplier of the dense layers.
    dropout: torchvision's `drop_rate` after each dense layer (needs a "dropout" rng).
    layers: layer factory; `first_conv` builds the stem, `last_dense` the classifier.
  """
  num_classes: int = 1000
  growth_rate: int = 32
  block_config: Sequence[int] = (6, 12, 24, 16)
  num_init_features: int = 64
  bn_size: int = 4
  dropout: float = 0.0
  layers: factory.Layers = factory.FLOAT

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    ly = self.layers
    x = ly.first_conv(self.num_init_features, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)),
                      use_bias=False, name="conv0")(x)
    x = ly.act(ly.batch_norm(train, name="norm0")(x))
    # PyTorch MaxPool2d(3, 2, padding=1) pads with -inf, as flax's max_pool does.
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for i, num_layers in enumerate(self.block_config):
      x = DenseBlock(num_layers, self.growth_rate, self.bn_size, self.dropout, ly,
                     name=f"denseblock{i + 1}")(x, train)
      if i != len(self.block_config) - 1:
        x = Transition(x.shape[-1] // 2, ly, name=f"transition{i + 1}")(x, train)
    x = ly.act(ly.batch_norm(train, name="norm5")(x))
    x = jnp.mean(x, axis=(1, 2))
    return ly.last_dense(self.num_classes, name="classifier")(x)


def densenet121(num_classes: int = 1000, layers: factory.Layers = factory.FLOAT,
                **kwargs: Any) -> DenseNet:
  """DenseNet-121 (7.98 M parameters at 1000 classes)."""
  kwargs = {"growth_rate": 32, "block_config": (6, 12, 24, 16),
            "num_init_features": 64, **kwargs}
  return DenseNet(num_classes=num_classes, layers=layers, **kwargs)


def densenet161(num_classes: int = 1000, layers: factory.Layers = factory.FLOAT,
                **kwargs: Any) -> DenseNet:
  """DenseNet-161 (28.68 M parameters at 1000 classes)."""
  kwargs = {"growth_rate": 48, "block_config": (6, 12, 36, 24),
            "num_init_features": 96, **kwargs}
  return DenseNet(num_classes=num_classes, layers=layers, **kwargs)


def densenet169(num_classes: int = 1000, layers: factory.Layers = factory.FLOAT,
                **kwargs: Any) -> DenseNet:
  """DenseNet-169 (14.15 M parameters at 1000 classes)."""
  kwargs = {"growth_rate": 32, "block_config": (6, 12, 32, 32),
            "num_init_features": 64, **kwargs}
  return DenseNet(num_classes=num_classes, layers=layers, **kwargs)


def densenet201(num_classes: int = 1000, layers: factory.Layers = factory.FLOAT,
                **kwargs: Any) -> DenseNet:
  """DenseNet-201 (20.01 M parameters at 1000 classes)."""
  kwargs = {"growth_rate": 32, "block_config": (6, 12, 48, 32),
            "num_init_features": 64, **kwargs}
  return DenseNet(num_classes=num_classes, layers=layers, **kwargs)
