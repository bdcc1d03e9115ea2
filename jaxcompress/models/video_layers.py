"""Shared layers of the 3-D video backbones (C3D, R3D, R(2+1)D, I3D), channel-last clips.

Clips are (N, T, H, W, C); convolution kernels (kT, kH, kW, in, out), PyTorch's Conv3d weights
(out, in, kT, kH, kW) transposed. Every convolution, norm, gate and activation comes from the
layer factory (`jaxcompress.models.factory.Layers`), as in the 2-D models.

Initialisation (the models' `weight_init`):
  * "dsm": what DSM (Wang et al., "Enhancing Unsupervised Video Representation Learning by
    Decoupling the Scene and the Motion", arXiv 2009.05757) trains from: its `weights_init`
    (FingerRec/DSM-decoupling-scene-motion, `src/utils/load_weights.py`, applied by
    `pt_load_weight` and `ft_load_weight` to every backbone) draws every Conv3d kernel from
    Xavier-uniform with gain sqrt(2) and every BatchNorm scale from N(1, 0.02); conv biases and
    linear layers keep PyTorch's defaults (U(+-1/sqrt(fan_in))).
  * "torchvision": `torchvision/models/video/resnet.py`: Kaiming-normal (fan_out) kernels, unit
    BatchNorm scales, classifier N(0, 0.01) with zero bias.

Batch norms use PyTorch's momentum (0.1, flax 0.9) and epsilon 1e-5 (BatchNorm3d defaults,
every official video backbone). A layer set with `bn_scale_init != 1` (binary nets) keeps its
constant scale init under either scheme.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcompress.models import factory
from jaxcompress.ops import max_pool as max_pool_ops

Initializer = Callable[..., jax.Array]
Pads = Sequence[tuple[int, int]]
INITS = ("dsm", "torchvision")


def check_clip(x: jax.Array, model: str) -> None:
  """Raises ValueError unless `x` is a channel-last clip batch (N, T, H, W, C)."""
  if x.ndim != 5:
    raise ValueError(f"{model} takes clips of shape (N, T, H, W, C), got shape {x.shape}. "
                     "Add the batch axis or move channels last (PyTorch's NCTHW clips: "
                     "x.transpose(0, 2, 3, 4, 1)).")


def check_init(init: str, model: str) -> None:
  """Raises ValueError for an unknown initialisation scheme."""
  if init not in INITS:
    raise ValueError(f"{model}: unknown weight_init {init!r}; use one of {INITS} (\"dsm\": "
                     "the official DSM initialisation).")


def conv_kernel_init(init: str) -> Initializer:
  """Conv kernel initialiser: Xavier-uniform gain sqrt(2) ("dsm") or Kaiming fan_out."""
  if init == "dsm":
    # Xavier-uniform bound gain * sqrt(6 / (fan_in + fan_out)): variance 2 * 2 / (in + out).
    return nn.initializers.variance_scaling(2.0, "fan_avg", "uniform")
  return factory.kaiming_normal()


def torch_uniform(fan_in: int) -> Initializer:
  """PyTorch's default bias (and linear weight) init U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def _normal_around_one(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32
                       ) -> jax.Array:
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def batch_norm(ly: factory.Layers, train: bool, init: str, name: str) -> nn.Module:
  """BatchNorm3d with PyTorch's momentum/epsilon; scale N(1, 0.02) under the "dsm" init."""
  scale_init = nn.initializers.constant(ly.bn_scale_init)
  if init == "dsm" and ly.bn_scale_init == 1.0:
    scale_init = _normal_around_one
  return ly.norm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                 scale_init=scale_init, name=name)


def conv3d(ly: factory.Layers, x: jax.Array, features: int, kernel: Sequence[int],
           strides: Sequence[int] = (1, 1, 1), padding: Pads | int = 0, *, init: str,
           use_bias: bool = False, role: str = "conv", name: str) -> jax.Array:
  """A 3-D convolution through the factory with PyTorch-style explicit padding.

  Args:
    ly: layer factory.
    x: (N, T, H, W, C) input.
    features: output channels.
    kernel: (kT, kH, kW).
    strides: (sT, sH, sW).
    padding: an int for the same padding on both sides of every axis, or (low, high) per axis.
    weight_init: "dsm" or "torchvision" (see module docstring).
    use_bias: add a bias (PyTorch's default init).
    role: the factory slot that builds it: "conv", "first_conv" (the stem) or "last_conv" (a
      convolutional classifier); compression papers keep the last two in float.
    name: module name.

  Returns:
    (N, T', H', W', features).
  """
  if isinstance(padding, int):
    padding = ((padding, padding),) * 3
  fan_in = x.shape[-1] * math.prod(kernel)
  return getattr(ly, role)(features, tuple(kernel), strides=tuple(strides), padding=tuple(padding),
              use_bias=use_bias, kernel_init=conv_kernel_init(init),
              bias_init=torch_uniform(fan_in), name=name)(x)


class Unit3D(nn.Module):
  """Conv, optional BatchNorm and gate, optional activation (the official `Unit3Dpy` and the
  conv-BN-ReLU triples of C3D and the ResNet stems).

  Attributes:
    features: output channels.
    kernel: (kT, kH, kW).
    layers: layer factory.
    strides: (sT, sH, sW).
    padding: int or (low, high) per axis.
    weight_init: "dsm" or "torchvision".
    use_bias: conv bias (C3D has one; the others do not).
    norm: BatchNorm (and the gate slot) after the conv.
    act: apply `layers.act` last.
    first: build the conv with `layers.first_conv`.
  """
  features: int
  kernel: Sequence[int]
  layers: factory.Layers
  strides: Sequence[int] = (1, 1, 1)
  padding: Pads | int = 0
  weight_init: str = "dsm"
  use_bias: bool = False
  norm: bool = True
  act: bool = True
  first: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    ly = self.layers
    x = conv3d(ly, x, self.features, self.kernel, self.strides, self.padding, init=self.weight_init,
               use_bias=self.use_bias, role="first_conv" if self.first else "conv", name="conv")
    if self.norm:
      x = batch_norm(ly, train, self.weight_init, "bn")(x)
      x = factory.gate(ly, self.features, "gate")(x)
    return ly.act(x) if self.act else x


def max_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int],
             padding: Pads = ((0, 0),) * 3, *, zero_pad: bool = False,
             ceil_mode: bool = False) -> jax.Array:
  """PyTorch MaxPool3d on a (N, T, H, W, C) clip.

  Args:
    x: the clip.
    window: (kT, kH, kW).
    strides: (sT, sH, sW).
    padding: (low, high) per axis.
    zero_pad: pad with zeros (I3D's `MaxPool3dTFPadding` pads with `ConstantPad3d(.., 0)` before
      pooling) instead of MaxPool3d's own padding, which never wins the max.
    ceil_mode: PyTorch's ceil_mode: one more window when the last one would start inside the
      (padded) input; its positions past the end never win the max.

  Returns:
    The pooled clip.
  """
  if zero_pad:
    x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    padding = ((0, 0),) * 3
  pads = []
  for size, k, s, (lo, hi) in zip(x.shape[1:4], window, strides, padding):
    extra = 0
    if ceil_mode:
      out = -(-(size + lo + hi - k) // s) + 1
      if (out - 1) * s >= size + lo:  # PyTorch drops a window that starts in the right padding
        out -= 1
      extra = max((out - 1) * s + k - (size + lo + hi), 0)
    pads.append((lo, hi + extra))
  # Values of nn.max_pool; on CPU its gradient avoids XLA's scalar select-and-scatter loop.
  return max_pool_ops.max_pool(x, tuple(window), tuple(strides), tuple(pads))


def global_pool(x: jax.Array) -> jax.Array:
  """AdaptiveAvgPool3d(1) and flatten: (N, T, H, W, C) -> (N, C), the backbone features."""
  return jnp.mean(x, axis=(1, 2, 3))


def linear_head(module: nn.Module, features: jax.Array, num_classes: int, *, init: str,
                use_bias: bool, dropout: float, train: bool) -> jax.Array:
  """Dropout and the classifier `classifier` on pooled features (inside a compact method).

  Args:
    module: the calling model (its `layers` build the classifier through `last_dense`).
    features: (N, C) pooled features.
    num_classes: outputs.
    weight_init: "dsm" (PyTorch's Linear default) or "torchvision" (N(0, 0.01), zero bias).
    use_bias: classifier bias.
    dropout: dropout rate (needs a "dropout" rng in training when > 0).
    train: dropout active.

  Returns:
    (N, num_classes) logits.
  """
  if dropout > 0:
    features = nn.Dropout(dropout, deterministic=not train)(features)
  if init == "dsm":
    kinit = bias_init = torch_uniform(features.shape[-1])
  else:
    kinit, bias_init = nn.initializers.normal(0.01), nn.initializers.zeros_init()
  return module.layers.last_dense(num_classes, use_bias=use_bias, kernel_init=kinit,
                                  bias_init=bias_init, name="classifier")(features)
