"""MEB-Net's re-identification networks: a backbone's pooled features, a BN neck and a classifier.

Zhai et al., "Multiple Expert Brainstorming for Domain Adaptive Person Re-identification", ECCV
2020, arXiv 2007.01546. The head follows the official experts (YunpengZhai/MEB-Net,
`mebnet/models/resnet.py`, `densenet.py`, `inceptionv3.py`, which share it):

  x = global average pool of the backbone (DenseNet: ReLU first, then [x, x] -> 2048-d)
  e = Linear(x) (kaiming normal, fan_out; only when num_features > 0), else e = x
  b = BatchNorm1d(e) with its bias frozen at 0 (here: no bias)
  eval feature = b / ||b||            (the retrieval and clustering feature)
  y = b / ||b|| if norm, ReLU(b) if num_features > 0, else b; dropout; logits = Linear(y, no bias,
  init N(0, 0.001))
and in training the triplet losses read the pooled x (the official `forward` returns (x, prob)).

Backbones (`build_net`):
  * "reid_resnet": the torchvision ResNet layout with the re-ID changes of the official ResNet
    expert: last stride 1 and a stem conv -> BN -> max pool WITHOUT ReLU (`nn.Sequential(conv1,
    bn1, maxpool, layer1..4)`, inherited from MMT); `block` "bottleneck" (ResNet-50) or "basic"
    (ResNet-18/34) and a base `width` (64 in torchvision) for CPU-sized nets. Module names are
    those of `jaxcompress.models.resnet_imagenet`, so converted torchvision weights fit.
  * any registered model (densenet121, inception_v3, mobilenet_v2, resnet18, ...): its
    classifier is replaced by the identity, leaving the globally pooled features (DenseNet's and
    Inception's already end with the official ReLU / pooling).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxcompress import models
from jaxcompress.errors import ConfigError
from jaxcompress.models import factory
from jaxcompress.models.resnet_bottleneck import Bottleneck
from jaxcompress.models.resnet_imagenet import BasicBlock


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Rows divided by max(||row||_2, eps) (`torch.nn.functional.normalize`)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


class ReidResNet(nn.Module):
  """ResNet trunk of the official re-ID expert; returns the (N, C) globally pooled features.

  Attributes:
    stage_sizes: blocks per stage ((3, 4, 6, 3) for ResNet-50).
    block: "bottleneck" (output 4 * planes) or "basic".
    width: planes of the first stage (64 in torchvision); stage s has width * 2**s.
    last_stride: stride of the last stage (1 in the official re-ID ResNet, 2 in torchvision).
    stem_relu: ReLU after the stem BN (False in the official re-ID ResNet).
    layers: layer factory.
  """
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  block: str = "bottleneck"
  width: int = 64
  last_stride: int = 1
  stem_relu: bool = False
  layers: factory.Layers = factory.FLOAT

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.block not in ("bottleneck", "basic"):
      raise ConfigError(f"reid_resnet block must be 'bottleneck' or 'basic', got {self.block!r}.")
    ly = self.layers
    x = ly.first_conv(self.width, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)),
                      use_bias=False, name="stem")(x)
    x = ly.batch_norm(train, name="stem_bn")(x)
    if self.stem_relu:
      x = ly.act(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    last = len(self.stage_sizes) - 1
    for stage, blocks in enumerate(self.stage_sizes):
      for b in range(blocks):
        strides = 1 if stage == 0 or b > 0 else (self.last_stride if stage == last else 2)
        planes, name = self.width * 2**stage, f"stage{stage + 1}_block{b}"
        if self.block == "bottleneck":
          x = Bottleneck(planes, strides, ly, name=name)(x, train)
        else:
          x = BasicBlock(planes, strides, ly, name=name)(x, train)
    return jnp.mean(x, axis=(1, 2))


class _Identity(nn.Module):
  """Stands in for a registered model's classifier: the pooled features pass through."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return x


def _identity_dense(*args: Any, name: str | None = None, **kwargs: Any) -> nn.Module:
  del args, kwargs
  return _Identity(name=name)


class ReidNet(nn.Module):
  """Backbone + MEB-Net head (module docstring).

  Attributes:
    backbone: a module mapping NHWC images to (N, C) pooled features.
    num_classes: classifier outputs (source identities, or clusters in adaptation).
    num_features: width of the embedding Linear before the BN; 0 = none (official default).
    norm: L2-normalise the BN output before the classifier.
    dropout: dropout before the classifier.
    duplicate: concatenate the pooled features with themselves (the official DenseNet-121 expert
      makes its 1024 channels 2048 so that every expert's features have one size).
  """
  backbone: nn.Module
  num_classes: int
  num_features: int = 0
  norm: bool = False
  dropout: float = 0.0
  duplicate: bool = False

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    """Returns {"pooled": x (triplet losses), "feature": eval feature, "logits"}."""
    x = self.backbone(images, train=train)
    if self.duplicate:
      x = jnp.concatenate([x, x], axis=-1)
    e = x
    if self.num_features > 0:
      e = nn.Dense(self.num_features, name="feat",
                   kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"))(x)
    b = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, use_bias=False,
                     name="feat_bn")(e)
    y = l2_normalize(b) if self.norm else (nn.relu(b) if self.num_features > 0 else b)
    if self.dropout > 0:
      y = nn.Dropout(self.dropout, deterministic=not train)(y)
    logits = nn.Dense(self.num_classes, use_bias=False, name="classifier",
                      kernel_init=nn.initializers.normal(0.001))(y)
    return {"pooled": x, "feature": l2_normalize(b), "logits": logits}


HEAD_KEYS = ("num_features", "norm", "dropout", "duplicate")


def build_net(block: ml_collections.ConfigDict | dict, num_classes: int) -> ReidNet:
  """The expert described by a model block.

  Args:
    block: {"name": "reid_resnet" or a registered model, "kwargs": backbone arguments,
      "head": {num_features, norm, dropout, duplicate}}.
    num_classes: classifier outputs.

  Returns:
    An unbound `ReidNet`, applied as `net.apply(variables, images, train=...)`.
  """
  block = dict(block)
  name = block.get("name", "")
  kwargs = dict(block.get("kwargs", None) or {})
  head = dict(block.get("head", None) or {})
  unknown = sorted(set(head) - set(HEAD_KEYS))
  if unknown:
    raise ConfigError(f"Unknown re-ID head options {unknown}; the head takes {HEAD_KEYS}.")
  if name == "reid_resnet":
    backbone = ReidResNet(**kwargs)
  else:
    backbone = models.build(name, layers=factory.FLOAT.replace(last_dense=_identity_dense),
                            num_classes=1, **kwargs)
  return ReidNet(backbone=backbone, num_classes=int(num_classes), **head)
