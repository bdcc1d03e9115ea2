"""VGG-small for CIFAR (LQ-Nets, arXiv 1807.10029), the 1w1a benchmark net of RBNN/IR-Net.

conv(3->128, float) - BN - act, then binary-capable convs 128, 256, 256, 512, 512 where the second
conv of each pair is followed by 2x2 max-pooling, then BN - act (RBNN's official order:
conv -> pool -> BN -> act), and a float classifier on the 4*4*512 = 8192 flattened features.
"""
from __future__ import annotations

import flax.linen as nn
import jax

from jaxcompress.models import factory


class VGGSmall(nn.Module):
  """VGG-small: 4.66 M parameters, 0.61 G MACs at 32x32."""
  num_classes: int = 10
  layers: factory.Layers = factory.FLOAT

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    ly = self.layers
    x = ly.first_conv(128, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, name="stem")(x)
    x = ly.act(ly.batch_norm(train)(x))
    for i, (width, pool) in enumerate([(128, True), (256, False), (256, True), (512, False),
                                       (512, True)]):
      x = factory.conv3x3(ly, width, name=f"conv{i + 1}")(x)
      if pool:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      x = ly.act(ly.batch_norm(train)(x))
    x = x.reshape(x.shape[0], -1)
    return ly.last_dense(self.num_classes, name="classifier")(x)
