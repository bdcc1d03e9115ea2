"""I3D (Carreira & Zisserman 2017, arXiv 1705.07750), channel-last clips, layer factory.

The backbone of DSM's headline results (Wang et al., "Enhancing Unsupervised Video
Representation Learning by Decoupling the Scene and the Motion", arXiv 2009.05757), as its
official code builds it (FingerRec/DSM-decoupling-scene-motion, `src/model/i3d.py`, a port of
the TensorFlow Inception-v1 I3D):

* `unit3d` (`Unit3Dpy`) = conv without bias, BatchNorm3d, ReLU, with TensorFlow-style "SAME"
  padding taken from the kernel and stride only: pad_along = max(k - s, 0), low = pad_along // 2
  and the rest high (the 7x7x7 stride-2 stem pads (2, 3) on every axis), whatever the input size.
* Max pools (`MaxPool3dTFPadding`) zero-pad the same way, then pool with ceil_mode=True:
  (1, 3, 3) / (1, 2, 2) after the stem and after Conv3d_2c, (3, 3, 3) / 2 before Mixed_4b,
  (2, 2, 2) / 2 before Mixed_5b, (3, 3, 3) / 1 in each Mixed block's pool branch. The clip is
  halved in time by the stem, before Mixed_4b and before Mixed_5b: 16x224x224 ends at 2x7x7x1024
  (16x112x112 at 2x4x4).
* Fine-tuning head (`with_classifier=True`): AvgPool3d((2, 7, 7), stride 1), dropout, a bias-free
  (7, 1, 1) conv to the classes with SAME padding (3, 3) in time, averaged over time.
  12,287,264 backbone parameters, 15,154,464 with the head at 400 classes (1024 * 7 per class),
  as the official module's layers count them (its unused inpainting and discriminator
  members, whose module the release does not include, are left out).

The official head pools a fixed (2, 7, 7) window, which fails on the 4x4 maps of 112x112 clips;
here the window is clipped to the feature map (the same result at 224x224) and the logits are
averaged over every remaining position. The official forward ends with `log_softmax`; this model
returns the logits. Pretraining (DSM's `id_head`) reads the globally pooled features
(`include_top=False` or `return_features=True`).

Module names are the official ones (conv3d_1a_7x7, mixed_3b/branch_1_0, ...); the classifier conv
is `classifier` (built by `layers.last_conv`). Feature taps (`factory.TAPS`): "conv3d_2c_3x3",
"mixed_3c", "mixed_4f", "mixed_5c".

Example:
  >>> from jaxcompress.models import video_i3d
  >>> model = video_i3d.i3d(num_classes=101, dropout=0.5)
  >>> logits, feats = model.apply(variables, clips, return_features=True)  # feats: (N, 1024)
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcompress.models import factory
from jaxcompress.models import video_layers as vl

# Output channels of the Mixed blocks: branch_0, branch_1 (1x1, 3x3x3), branch_2 (1x1, 3x3x3),
# branch_3 (after the pool); the Inception-v1 widths.
_MIXED = {
    "mixed_3b": (64, 96, 128, 16, 32, 32),
    "mixed_3c": (128, 128, 192, 32, 96, 64),
    "mixed_4b": (192, 96, 208, 16, 48, 64),
    "mixed_4c": (160, 112, 224, 24, 64, 64),
    "mixed_4d": (128, 128, 256, 24, 64, 64),
    "mixed_4e": (112, 144, 288, 32, 64, 64),
    "mixed_4f": (256, 160, 320, 32, 128, 128),
    "mixed_5b": (256, 160, 320, 32, 128, 128),
    "mixed_5c": (384, 192, 384, 48, 128, 128),
}


def tf_same_padding(kernel: Sequence[int], strides: Sequence[int]) -> tuple[tuple[int, int], ...]:
  """The official `get_padding_shape`: (low, high) with low + high = max(k - s, 0) per axis."""
  return tuple(((max(k - s, 0)) // 2, max(k - s, 0) - max(k - s, 0) // 2)
               for k, s in zip(kernel, strides))


def tf_max_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int]) -> jax.Array:
  """`MaxPool3dTFPadding`: zero padding by `tf_same_padding`, then a ceil-mode max pool."""
  return vl.max_pool(x, window, strides, tf_same_padding(window, strides), zero_pad=True,
                     ceil_mode=True)


def unit3d(features: int, kernel: Sequence[int], layers: factory.Layers,
           strides: Sequence[int] = (1, 1, 1), weight_init: str = "dsm", first: bool = False,
           name: str | None = None) -> vl.Unit3D:
  """The official `Unit3Dpy`: conv (no bias) with TF-SAME padding, BN, gate, activation.

  Args:
    features: output channels.
    kernel: (kT, kH, kW).
    layers: layer factory.
    strides: (sT, sH, sW).
    weight_init: "dsm" or "torchvision".
    first: build the conv with `layers.first_conv` (the stem).
    name: module name.

  Returns:
    An unbound `video_layers.Unit3D` (parameters conv/kernel and bn/{scale, bias}).
  """
  return vl.Unit3D(features, kernel, layers, strides, tf_same_padding(kernel, strides),
                   weight_init, first=first, name=name)


class Mixed(nn.Module):
  """Inception block: 1x1 | 1x1 -> 3x3x3 | 1x1 -> 3x3x3 | 3x3x3 max pool -> 1x1, concatenated.

  Attributes:
    widths: the six output widths (see `_MIXED`).
    layers: layer factory.
    weight_init: "dsm" or "torchvision".
  """
  widths: Sequence[int]
  layers: factory.Layers
  weight_init: str = "dsm"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    w, ly, init = self.widths, self.layers, self.weight_init
    b0 = unit3d(w[0], (1, 1, 1), ly, weight_init=init, name="branch_0")(x, train)
    b1 = unit3d(w[1], (1, 1, 1), ly, weight_init=init, name="branch_1_0")(x, train)
    b1 = unit3d(w[2], (3, 3, 3), ly, weight_init=init, name="branch_1_1")(b1, train)
    b2 = unit3d(w[3], (1, 1, 1), ly, weight_init=init, name="branch_2_0")(x, train)
    b2 = unit3d(w[4], (3, 3, 3), ly, weight_init=init, name="branch_2_1")(b2, train)
    b3 = tf_max_pool(x, (3, 3, 3), (1, 1, 1))
    b3 = unit3d(w[5], (1, 1, 1), ly, weight_init=init, name="branch_3")(b3, train)
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class I3D(nn.Module):
  """I3D (RGB) on (N, T, H, W, C) clips.

  Attributes:
    num_classes: classifier outputs.
    layers: layer factory; `first_conv` builds the stem, `last_conv` the classifier conv.
    weight_init: "dsm" (the official DSM `weights_init`) or "torchvision" (Kaiming).
    include_top: end with the official fine-tuning head; False returns the pooled features and
      builds no classifier (the pretraining encoder; fine-tuning adds a fresh `classifier`).
    dropout: dropout rate of the head (DSM fine-tunes with 0.5; needs a "dropout" rng in
      training).
  """
  num_classes: int = 400
  layers: factory.Layers = factory.FLOAT
  weight_init: str = "dsm"
  include_top: bool = True
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, return_features: bool = False
               ) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Logits (N, num_classes); with `return_features` also the pooled (N, 1024) features.

    Without `include_top` the result is the features (twice with `return_features`).
    """
    vl.check_clip(x, "I3D")
    vl.check_init(self.weight_init, "I3D")
    ly, init = self.layers, self.weight_init
    tap = factory.tapper(self)
    x = unit3d(64, (7, 7, 7), ly, (2, 2, 2), init, first=True, name="conv3d_1a_7x7")(x, train)
    x = tf_max_pool(x, (1, 3, 3), (1, 2, 2))
    x = unit3d(64, (1, 1, 1), ly, weight_init=init, name="conv3d_2b_1x1")(x, train)
    x = unit3d(192, (3, 3, 3), ly, weight_init=init, name="conv3d_2c_3x3")(x, train)
    x = tf_max_pool(tap("conv3d_2c_3x3", x), (1, 3, 3), (1, 2, 2))
    for name, widths in _MIXED.items():
      if name == "mixed_4b":
        x = tf_max_pool(x, (3, 3, 3), (2, 2, 2))
      elif name == "mixed_5b":
        x = tf_max_pool(x, (2, 2, 2), (2, 2, 2))
      x = Mixed(widths, ly, init, name=name)(x, train)
      if name in ("mixed_3c", "mixed_4f", "mixed_5c"):
        x = tap(name, x)
    features = vl.global_pool(x)
    if not self.include_top:
      return (features, features) if return_features else features
    window = tuple(min(k, d) for k, d in zip((2, 7, 7), x.shape[1:4]))
    y = nn.avg_pool(x, window, (1, 1, 1), padding="VALID")
    if self.dropout > 0:
      y = nn.Dropout(self.dropout, deterministic=not train)(y)
    y = vl.conv3d(ly, y, self.num_classes, (7, 1, 1), (1, 1, 1), tf_same_padding((7, 1, 1),
                  (1, 1, 1)), init=init, role="last_conv", name="classifier")
    logits = jnp.mean(y, axis=(1, 2, 3))
    return (logits, features) if return_features else logits


def i3d(num_classes: int = 400, layers: factory.Layers = factory.FLOAT, **kwargs: Any) -> I3D:
  """DSM's I3D (12.29 M backbone parameters; + 7 * 1024 per class in the head)."""
  return I3D(num_classes=num_classes, layers=layers, **kwargs)
