"""VGG-small for CIFAR (LQ-Nets, arXiv 1807.10029), the 1w1a benchmark net of RBNN/IR-Net.

conv(3->128, float) - BN - act, then binary-capable convs 128, 256, 256, 512, 512 where the second
conv of each pair is followed by 2x2 max-pooling, then BN - act (RBNN's official order:
conv -> pool -> BN -> act), and a float classifier on the 4*4*512 = 8192 flattened features.

Every batch norm is followed by the layer factory's gate slot (`factory.gate`; nothing by
default), each conv's activation is sown as the feature tap "conv1".."conv5" (`factory.taps`),
and `widths` narrows layers by role ("stem", "conv1".."conv5") for a pruned network.
"""
from __future__ import annotations

from typing import Mapping

import flax.linen as nn
import jax

from jaxcompress.models import factory

_WIDTHS = {"stem": 128, "conv1": 128, "conv2": 256, "conv3": 256, "conv4": 512, "conv5": 512}


class VGGSmall(nn.Module):
  """VGG-small: 4.66 M parameters, 0.61 G MACs at 32x32.

  Attributes:
    num_classes: classifier outputs.
    layers: layer factory.
    widths: output channels by role ("stem", "conv1".."conv5") for a pruned network; roles
      left out keep 128, 128, 256, 256, 512, 512.
  """
  num_classes: int = 10
  layers: factory.Layers = factory.FLOAT
  widths: Mapping[str, int] | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    tap = factory.tapper(self)  # feature taps by role (factory.taps)
    ly = self.layers
    widths = factory.resolve_widths(self.widths, _WIDTHS, "VGGSmall")
    x = ly.first_conv(widths["stem"], (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                      name="stem")(x)
    x = ly.act(factory.gate(ly, widths["stem"], "stem_gate")(ly.batch_norm(train)(x)))
    for i in range(5):
      role = f"conv{i + 1}"
      x = factory.conv3x3(ly, widths[role], name=role)(x)
      if i % 2 == 0:  # max-pool after conv1, conv3 and conv5
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      x = ly.act(factory.gate(ly, widths[role], f"{role}_gate")(ly.batch_norm(train)(x)))
      tap(role, x)
    x = x.reshape(x.shape[0], -1)
    return ly.last_dense(self.num_classes, name="classifier")(x)
