"""C3D with batch norm (Tran et al. 2015, arXiv 1412.0767), channel-last clips, layer factory.

The backbone DSM uses for retrieval (Wang et al., "Enhancing Unsupervised Video Representation
Learning by Decoupling the Scene and the Motion", arXiv 2009.05757; official code
FingerRec/DSM-decoupling-scene-motion, `src/model/c3d.py`): eight 3x3x3 convs with bias, each
followed by BatchNorm3d and ReLU (64, 128, 256x2, 512x2, 512x2 channels); max pools (1, 2, 2)
after conv1 and (2, 2, 2) after conv2, conv3b and conv4b (no padding, floor); no pool after
conv5b but a global average pool (the official "pool5 = AdaptiveAvgPool3d(1)"), then the
linear classifier. A 16x112x112 clip ends at 2x7x7x512. 27,866,640 parameters at 400 classes,
27,713,253 at 101, as the official module counts them.

The official forward ends with `log_softmax`; this model returns the logits (the same
cross-entropy, and the argmax is unchanged).

Module names are the official ones (conv1, conv2, conv3a, ..., conv5b, each with its conv/bn
pair as `Unit3D`); feature taps (`factory.TAPS`): "conv1".."conv5" after each stage's last conv.

Example:
  >>> from jaxcompress.models import video_c3d
  >>> model = video_c3d.c3d(num_classes=101)
  >>> logits, feats = model.apply(variables, clips, return_features=True)  # feats: (N, 512)
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from jaxcompress.models import factory
from jaxcompress.models import video_layers as vl

# (stage, conv names, output channels, pool window after the stage or None)
_STAGES = (
    ("conv1", ("conv1",), 64, (1, 2, 2)),
    ("conv2", ("conv2",), 128, (2, 2, 2)),
    ("conv3", ("conv3a", "conv3b"), 256, (2, 2, 2)),
    ("conv4", ("conv4a", "conv4b"), 512, (2, 2, 2)),
    ("conv5", ("conv5a", "conv5b"), 512, None),
)


class C3D(nn.Module):
  """C3D with BN on (N, T, H, W, C) clips.

  Attributes:
    num_classes: classifier outputs.
    layers: layer factory; `first_conv` builds conv1, `last_dense` the classifier.
    weight_init: "dsm" (the official DSM `weights_init`) or "torchvision" (Kaiming).
    include_top: end with the classifier; False returns the pooled features and builds no
      classifier (the pretraining encoder; fine-tuning adds a fresh `classifier`).
    dropout: dropout rate before the classifier (needs a "dropout" rng in training).
  """
  num_classes: int = 101
  layers: factory.Layers = factory.FLOAT
  weight_init: str = "dsm"
  include_top: bool = True
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, return_features: bool = False
               ) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Logits (N, num_classes); with `return_features` also the pooled (N, 512) features.

    Without `include_top` the result is the features (twice with `return_features`).
    """
    vl.check_clip(x, "C3D")
    vl.check_init(self.weight_init, "C3D")
    tap = factory.tapper(self)
    for stage, names, c, pool in _STAGES:
      for name in names:
        x = vl.Unit3D(c, (3, 3, 3), self.layers, padding=1, weight_init=self.weight_init,
                      use_bias=True, first=name == "conv1", name=name)(x, train)
      x = tap(stage, x)
      if pool is not None:
        x = vl.max_pool(x, pool, pool)
    features = vl.global_pool(x)
    if not self.include_top:
      return (features, features) if return_features else features
    logits = vl.linear_head(self, features, self.num_classes, init=self.weight_init,
                            use_bias=True, dropout=self.dropout, train=train)
    return (logits, features) if return_features else logits


def c3d(num_classes: int = 101, layers: factory.Layers = factory.FLOAT, **kwargs: Any) -> C3D:
  """DSM's C3D with BN (27.71 M parameters at 101 classes)."""
  return C3D(num_classes=num_classes, layers=layers, **kwargs)
