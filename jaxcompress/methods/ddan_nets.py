"""DDAN's networks: MobileNetV2 split into an encoder and a mapping network, and the discriminator.

"Dual Distribution Alignment Network for Generalizable Person Re-Identification" (Chen, Dai,
Liu, Chen, Ji, Shao; AAAI 2021, arXiv 2007.13249). The split follows the official code
(https://github.com/PeixianChen/DDAN, `reid/models/DDAN.py` and `reid/models/mobilenet.py`):

  * `Encoder` E: torchvision MobileNetV2 `features[0:18]` (the 3x3 stem and the 17 inverted
    residual blocks; 320 channels at stride 32 for width 1.0);
  * `Mapping` T (the official `TransferNet`): `features[18]` (1x1 conv 320 -> 1280, BatchNorm,
    ReLU6), global average pooling to the feature f, then BatchNorm1d, dropout 0.5 and the
    identity classifier. The release builds T from a second ImageNet copy of MobileNetV2 and
    uses only its `features[18]`;
  * `Discriminator` D (the official `CamDiscriminator`): Linear(1280 -> 128), BatchNorm1d,
    Linear(128 -> 2) (the release creates a dropout layer in `forward` and never applies it).

Module names equal those of `jaxcompress.models.mobilenet_v2.MobileNetV2` (stem, stem_bn,
block1..block17 in E; head, head_bn in T), so torchvision's ImageNet weights split onto them
(`split_torchvision_weights`).

Example:
  >>> enc, mapping = Encoder(), Mapping(num_classes=18530)
  >>> e = enc.apply(enc_vars, images, train=False)
  >>> logits, f, f_bn = mapping.apply(map_vars, e, train=False)
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress.models import factory
from jaxcompress.models.mobilenet_v2 import (
    INVERTED_RESIDUAL_SETTING,
    InvertedResidual,
    make_divisible,
    relu6,
)

# Modules of a converted torchvision MobileNetV2 that belong to the mapping network.
MAPPING_MODULES = ("head", "head_bn")


def torch_linear_bias_init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32,
                           fan_in: int = 1) -> jax.Array:
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)), the bias init of `torch.nn.Linear`."""
  bound = 1.0 / np.sqrt(fan_in)
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def torch_dense(features: int, fan_in: int, name: str) -> nn.Dense:
  """A dense layer initialised as `torch.nn.Linear` (kernel and bias U(+-1/sqrt(fan_in)))."""
  return nn.Dense(features, name=name,
                  kernel_init=nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
                  bias_init=lambda k, s, d=jnp.float32: torch_linear_bias_init(k, s, d, fan_in))


class Encoder(nn.Module):
  """MobileNetV2 `features[0:18]`: stem and inverted residual blocks (no 1x1 head).

  Attributes:
    width_mult: width multiplier of every layer (1.0 in DDAN).
    setting: (t, c, n, s) rows of the inverted residual stages (torchvision's by default; a
      CPU-sized run on small images may drop strides).
    round_nearest: channel counts are multiples of it.
    layers: layer factory.
  """
  width_mult: float = 1.0
  setting: Sequence[Sequence[int]] = INVERTED_RESIDUAL_SETTING
  round_nearest: int = 8
  layers: factory.Layers = factory.FLOAT

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    ly = self.layers
    stem = make_divisible(32 * self.width_mult, self.round_nearest)
    x = ly.first_conv(stem, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False,
                      name="stem")(x)
    x = relu6(ly.batch_norm(train, name="stem_bn")(x))
    index = 1
    for t, c, n, s in self.setting:
      features = make_divisible(c * self.width_mult, self.round_nearest)
      for i in range(n):
        x = InvertedResidual(features, s if i == 0 else 1, t, ly, name=f"block{index}")(x, train)
        index += 1
    return x


class Mapping(nn.Module):
  """The mapping network T: MobileNetV2 `features[18]`, pooling, BN neck, dropout, classifier.

  Returns (logits, f, f_bn): f = mean over H, W of ReLU6(BN(conv1x1(e))) (nonnegative; the
  triplet, adversarial and memory features), f_bn its BatchNorm1d (the test feature).

  Attributes:
    num_classes: identities of the joint classifier (18,530 on the DG benchmark).
    features: width of f (1280 in DDAN).
    dropout: dropout rate before the classifier (0.5); training needs a "dropout" rng.
    layers: layer factory.
  """
  num_classes: int
  features: int = 1280
  dropout: float = 0.5
  layers: factory.Layers = factory.FLOAT

  @nn.compact
  def __call__(self, e: jax.Array, train: bool = False
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
    ly = self.layers
    x = ly.conv(self.features, (1, 1), padding="VALID", use_bias=False, name="head")(e)
    x = relu6(ly.batch_norm(train, name="head_bn")(x))
    f = jnp.mean(x, axis=(1, 2))
    # The official BN neck: weight 1, bias 0 (its `init.constant_` calls are the defaults).
    f_bn = ly.batch_norm(train, name="bn")(f)
    x = nn.Dropout(self.dropout, deterministic=not train)(f_bn) if self.dropout > 0 else f_bn
    logits = torch_dense(self.num_classes, self.features, "classifier")(x)
    return logits, f, f_bn


class Discriminator(nn.Module):
  """The domain discriminator D: Linear -> BatchNorm1d -> Linear (two classes by default).

  Attributes:
    hidden: width of the hidden layer (128).
    num_domains: outputs (2: central domain or not).
    layers: layer factory (its BatchNorm).
  """
  hidden: int = 128
  num_domains: int = 2
  layers: factory.Layers = factory.FLOAT

  @nn.compact
  def __call__(self, f: jax.Array, train: bool = False) -> jax.Array:
    x = torch_dense(self.hidden, f.shape[-1], "feat")(f)
    x = self.layers.batch_norm(train, name="bn")(x)
    return torch_dense(self.num_domains, self.hidden, "classifier")(x)


def split_torchvision_weights(variables: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
  """Splits converted torchvision MobileNetV2 variables onto (Encoder, Mapping).

  Args:
    variables: {"params", "batch_stats"} of `torchvision_weights.convert_torchvision(
      "mobilenet_v2", path)`.

  Returns:
    (encoder variables, mapping variables): the encoder gets stem, stem_bn and the blocks, the
    mapping head and head_bn (its BN neck and classifier are new layers); the ImageNet
    classifier is dropped.
  """
  enc, mapping = {}, {}
  for col, tree in variables.items():
    enc[col] = {k: v for k, v in tree.items() if k not in MAPPING_MODULES + ("classifier",)}
    mapping[col] = {k: v for k, v in tree.items() if k in MAPPING_MODULES}
  return enc, mapping
