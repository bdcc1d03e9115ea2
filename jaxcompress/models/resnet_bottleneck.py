"""ImageNet ResNet-50/101/152 (He et al. 2016, arXiv 1512.03385) built through the layer factory.

The torchvision layout ("ResNet v1.5", torchvision `models/resnet.py`): 7x7 stride-2 stem, 3x3
stride-2 max pool, four stages of bottleneck blocks (1x1 reduce, 3x3, 1x1 expand by 4) with the
stride on the 3x3 convolution (the paper's v1 puts it on the first 1x1; v1.5 is ~0.5 % more
accurate and is what torchvision's checkpoints use), 1x1 strided projection shortcuts, global
average pool, classifier. `groups` and `width_per_group` give ResNeXt (arXiv 1611.05431) and
Wide ResNet-50-2 (arXiv 1605.07146) exactly as torchvision builds them:
  width = int(planes * width_per_group / 64) * groups.
ResNet-50 has 25.56 M parameters and 4.09 G MACs at 224x224.

Module names follow `resnet_imagenet` (stem, stem_bn, stageS_blockB/{conv1..3, bn1..3,
downsample}, classifier), so the same compression code addresses both families. The layer
factory's gate slot follows bn1 and bn2 of every block ("gate1", "gate2"; nothing by default),
and `widths` sets those inner widths per block: channel pruning of the bottlenecks' insides
(`prune_spec` for `jaxcompress.prune.materialize`; the residual streams keep their width).

Example:
  >>> from jaxcompress.models import factory, resnet_bottleneck
  >>> model = resnet_bottleneck.ResNet50(num_classes=1000, layers=factory.FLOAT)
  >>> variables = model.init(rng, jnp.zeros((1, 224, 224, 3)), train=False)

The named constructors take further `BottleneckResNet` attributes as keyword arguments, which
override the named architecture's (e.g. fewer `stage_sizes` for a quick experiment).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcompress.errors import ConfigError
from jaxcompress.models import factory, resnet_imagenet
from jaxcompress.models.resnet_imagenet import Downsample

EXPANSION = 4  # output channels of a bottleneck block = EXPANSION * planes


class Bottleneck(nn.Module):
  """1x1 reduce, 3x3 (strided, grouped), 1x1 expand; projection shortcut when the shape changes.

  Attributes:
    planes: channels of the reduced representation before widening (output: 4 * planes).
    strides: stride of the 3x3 convolution (torchvision v1.5).
    layers: layer factory.
    groups: groups of the 3x3 convolution (ResNeXt cardinality).
    width_per_group: channels per group of the 3x3 convolution at planes = 64.
    inner: (conv1, conv2) output widths of a pruned block; None: the architecture's.
  """
  planes: int
  strides: int
  layers: factory.Layers
  groups: int = 1
  width_per_group: int = 64
  inner: tuple[int, int] | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    ly = self.layers
    width = int(self.planes * (self.width_per_group / 64.0)) * self.groups
    width1, width2 = self.inner or (width, width)
    features = self.planes * EXPANSION
    shortcut = x
    if self.strides != 1 or x.shape[-1] != features:
      shortcut = Downsample(features, self.strides, ly, name="downsample")(x, train)
    y = ly.conv(width1, (1, 1), padding="VALID", use_bias=False, name="conv1")(x)
    y = ly.act(factory.gate(ly, width1, "gate1")(ly.batch_norm(train, name="bn1")(y)))
    y = ly.conv(width2, (3, 3), strides=(self.strides, self.strides), padding=((1, 1), (1, 1)),
                feature_group_count=self.groups, use_bias=False, name="conv2")(y)
    y = ly.act(factory.gate(ly, width2, "gate2")(ly.batch_norm(train, name="bn2")(y)))
    y = ly.conv(features, (1, 1), padding="VALID", use_bias=False, name="conv3")(y)
    y = ly.batch_norm(train, name="bn3")(y)
    return ly.act(y + shortcut)


class BottleneckResNet(nn.Module):
  """ImageNet ResNet with bottleneck blocks (ResNet-50: (3, 4, 6, 3)).

  Attributes:
    num_classes: classifier outputs.
    stage_sizes: blocks per stage.
    layers: layer factory; `first_conv` builds the stem and `last_dense` the classifier.
    groups: groups of every 3x3 convolution (ResNeXt).
    width_per_group: 3x3 channels per group at planes = 64 (128 for Wide ResNet-50-2).
    widths: inner widths of a pruned network, "stageS_blockB/conv1" and ".../conv2" -> channels;
      roles left out keep the architecture's.
  """
  num_classes: int = 1000
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  layers: factory.Layers = factory.FLOAT
  groups: int = 1
  width_per_group: int = 64
  widths: Mapping[str, int] | None = None

  def layer_widths(self) -> dict[str, int]:
    """Every inner width role ("stageS_blockB/conv1", ".../conv2") with its width.

    Raises:
      ConfigError: when `widths` names an unknown role or a non-positive width.
    """
    defaults = {}
    for stage, blocks in enumerate(self.stage_sizes):
      width = int(64 * 2**stage * (self.width_per_group / 64.0)) * self.groups
      for b in range(blocks):
        defaults.update({f"stage{stage + 1}_block{b}/conv{i}": width for i in (1, 2)})
    return factory.resolve_widths(dict(self.widths or {}), defaults, "BottleneckResNet")

  def prune_spec(self) -> factory.PruneSpec:
    """The bottlenecks' inner channels for `jaxcompress.prune.materialize`.

    Role ".../conv1" is masked by the block's "gate1" (conv1, bn1) and read by conv2; ".../conv2"
    by "gate2" (conv2, bn2) and read by conv3. The residual streams are not pruned.

    Raises:
      ConfigError: for grouped 3x3 convolutions (ResNeXt), whose groups would be cut apart.
    """
    if self.groups != 1:
      raise ConfigError("BottleneckResNet.prune_spec describes ungrouped bottlenecks; ResNeXt "
                        f"(groups={self.groups}) cannot be pruned channel by channel.")
    roles: dict[str, factory.PruneRole] = {}
    inputs: dict[str, tuple[str, ...]] = {}
    for role in self.layer_widths():
      block, conv = role.split("/")
      i = int(conv[-1])
      roles[role] = factory.PruneRole({f"{block}/gate{i}": (f"{block}/conv{i}", f"{block}/bn{i}")})
      inputs[f"{block}/conv{i + 1}"] = (role,)
    return factory.PruneSpec(roles, inputs, input_layer="stem", input_size=(64, 64))

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    ly = self.layers
    widths = self.layer_widths() if self.widths else {}
    x = resnet_imagenet.imagenet_stem(ly, x, train)
    for stage, blocks in enumerate(self.stage_sizes):
      for b in range(blocks):
        strides = 2 if stage > 0 and b == 0 else 1
        name = f"stage{stage + 1}_block{b}"
        inner = (widths[f"{name}/conv1"], widths[f"{name}/conv2"]) if widths else None
        x = Bottleneck(64 * 2**stage, strides, ly, self.groups, self.width_per_group, inner,
                       name=name)(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return ly.last_dense(self.num_classes, name="classifier")(x)


def ResNet50(num_classes: int = 1000,  # pylint: disable=invalid-name
             layers: factory.Layers = factory.FLOAT, **kwargs: Any) -> BottleneckResNet:
  """ImageNet ResNet-50 v1.5 (25.56 M parameters, 4.09 G MACs at 224x224)."""
  return BottleneckResNet(num_classes=num_classes, layers=layers,
                          **{"stage_sizes": (3, 4, 6, 3), **kwargs})


def ResNet101(num_classes: int = 1000,  # pylint: disable=invalid-name
              layers: factory.Layers = factory.FLOAT, **kwargs: Any) -> BottleneckResNet:
  """ImageNet ResNet-101 v1.5 (44.55 M parameters)."""
  return BottleneckResNet(num_classes=num_classes, layers=layers,
                          **{"stage_sizes": (3, 4, 23, 3), **kwargs})


def ResNet152(num_classes: int = 1000,  # pylint: disable=invalid-name
              layers: factory.Layers = factory.FLOAT, **kwargs: Any) -> BottleneckResNet:
  """ImageNet ResNet-152 v1.5 (60.19 M parameters)."""
  return BottleneckResNet(num_classes=num_classes, layers=layers,
                          **{"stage_sizes": (3, 8, 36, 3), **kwargs})


def ResNeXt50_32x4d(num_classes: int = 1000,  # pylint: disable=invalid-name
                    layers: factory.Layers = factory.FLOAT, **kwargs: Any) -> BottleneckResNet:
  """ResNeXt-50 32x4d (arXiv 1611.05431; 25.03 M parameters)."""
  return BottleneckResNet(num_classes=num_classes, layers=layers,
                          **{"stage_sizes": (3, 4, 6, 3), "groups": 32, "width_per_group": 4,
                             **kwargs})


def WideResNet50_2(num_classes: int = 1000,  # pylint: disable=invalid-name
                   layers: factory.Layers = factory.FLOAT, **kwargs: Any) -> BottleneckResNet:
  """Wide ResNet-50-2 (arXiv 1605.07146; 68.88 M parameters)."""
  return BottleneckResNet(num_classes=num_classes, layers=layers,
                          **{"stage_sizes": (3, 4, 6, 3), "width_per_group": 128, **kwargs})
