"""EDSR (Lim et al., CVPRW 2017) and its PAMS-quantized student (PAMS, ECCV 2020, arXiv 2011.04212).

NHWC, layout and parameter names shared by the float teacher and the quantized student, so a
full-precision checkpoint initialises the student directly. Convolutions come from
the layer factory:
  * `layers.conv`: the residual-block convolutions (quantized in PAMS);
  * `layers.first_conv`: every layer PAMS keeps in float: head, body-end conv, upsampler, tail;
  * `layers.act_quant` (only on `PAMSLayers`): the activation quantizers, placed exactly as the
    official `PAMS_ResBlock`: skip = Q1(x); body = conv2(Q2(relu(conv1(x)))) * res_scale;
    out = Q3(body) + skip. conv1's input is NOT quantized (official code).
MeanShift is a constant (the DIV2K RGB mean times rgb_range), not a parameter. All convs have a
bias, as the official trainer builds the student with `PAMS_EDSR(args, bias=True)`.

EDSR has no normalisation, so the layer factory's gate slot (`factory.gate`; nothing by default)
sits where a block's channels can be pruned: after conv1, before the ReLU. `widths` narrows those
inner widths by role ("body_{i}/conv1"). Feature taps (`factory.taps` of
`apply(..., mutable=["intermediates"])`): "body_{i}" after each residual block and "body" after
the global skip (the feature `return_features` returns).

Example:
  >>> model = edsr_baseline(scale=4)                       # float, 16 blocks x 64 feats
  >>> student = edsr_baseline(scale=4, layers=pams_layers(bits=4))
  >>> sr, feat = student.apply(variables, lr, return_features=True)   # feat feeds the SKT loss
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcompress.models import factory
from jaxcompress.quant import quantizers

Array = jax.Array
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)

# PyTorch's default conv init (kaiming_uniform, a = sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_default_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


@dataclasses.dataclass(frozen=True)
class PAMSLayers(factory.Layers):
  """`factory.Layers` plus an activation-quantizer slot used by the SR models.

  Attributes:
    act_quant: factory of activation quantizer modules (called with `name=`); None = identity.
  """
  act_quant: factory.ModuleFactory | None = None


@factory.register("pams")
def pams_layers(bits: int = 8, calibration: str = "ema", alpha_init: float = 10.0,
                **kwargs: Any) -> PAMSLayers:
  """Layer set of the PAMS students: PAMSConv (weights quantized) + PAMSQuantAct.

  Args:
    bits: bit width of weights and activations (the paper's 4 or 8).
    calibration: "ema" (paper) or "last_batch" (official code) first-epoch alpha calibration.
    alpha_init: initial alpha (10 in the official code; overwritten by the calibration).
    **kwargs: other `factory.Layers` fields.
  """
  return PAMSLayers(
      conv=functools.partial(quantizers.PAMSConv, bits=bits),
      act_quant=functools.partial(quantizers.PAMSQuantAct, bits=bits, calibration=calibration,
                                  alpha_init=alpha_init),
      **kwargs)


def act_quant(layers: factory.Layers, name: str) -> Any:
  """The activation quantizer `name` of a layer set, or the identity for float layer sets."""
  make = getattr(layers, "act_quant", None)
  return (lambda x: x) if make is None else make(name=name)


def pixel_shuffle(x: Array, r: int) -> Array:
  """`torch.nn.PixelShuffle(r)` in NHWC: out[n, h*r+i, w*r+j, c] = x[n, h, w, c*r*r + i*r + j]."""
  n, h, w, c = x.shape
  x = x.reshape(n, h, w, c // (r * r), r, r)
  return x.transpose(0, 1, 4, 2, 5, 3).reshape(n, h * r, w * r, c // (r * r))


def conv(make: factory.ModuleFactory, features: int, kernel: int = 3, name: str | None = None,
         use_bias: bool = True) -> nn.Module:
  """A stride-1 conv with PyTorch's `padding = kernel // 2` and init."""
  p = kernel // 2
  return make(features, (kernel, kernel), padding=((p, p), (p, p)), use_bias=use_bias,
              kernel_init=torch_default_init, name=name)


class Upsampler(nn.Module):
  """EDSR's upsampler: (conv n->4n, PixelShuffle 2) x log2(scale), or conv n->9n, PixelShuffle 3."""
  scale: int
  n_feats: int
  layers: factory.Layers = factory.FLOAT

  @nn.compact
  def __call__(self, x: Array) -> Array:
    if self.scale & (self.scale - 1) == 0:
      for i in range(int(math.log2(self.scale))):
        x = pixel_shuffle(conv(self.layers.first_conv, 4 * self.n_feats, name=f"conv_{i}")(x), 2)
    elif self.scale == 3:
      x = pixel_shuffle(conv(self.layers.first_conv, 9 * self.n_feats, name="conv_0")(x), 3)
    else:
      raise ValueError(f"scale must be 2^n or 3, got {self.scale}.")
    return x


class ResBlock(nn.Module):
  """EDSR residual block (no BN); PAMS activation quantizers when `layers` provides them.

  Attributes:
    n_feats: channels of the residual stream (conv2's output).
    res_scale: residual scaling.
    layers: layer factory.
    inner: conv1's output channels (None: `n_feats`); a pruned block narrows it.
  """
  n_feats: int
  res_scale: float = 1.0
  layers: factory.Layers = factory.FLOAT
  inner: int | None = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    inner = self.inner or self.n_feats
    skip = act_quant(self.layers, "quant_act1")(x)
    h = conv(self.layers.conv, inner, name="conv1")(x)
    h = self.layers.act(factory.gate(self.layers, inner, "gate1")(h))
    h = act_quant(self.layers, "quant_act2")(h)
    h = conv(self.layers.conv, self.n_feats, name="conv2")(h) * self.res_scale
    return act_quant(self.layers, "quant_act3")(h) + skip


class EDSR(nn.Module):
  """EDSR; `__call__(x, return_features=False)` -> sr or (sr, body feature after the global skip).

  Attributes:
    scale: upscaling factor (2, 3, 4 or any power of 2).
    n_resblocks, n_feats, res_scale: 16 / 64 / 1.0 (baseline) or 32 / 256 / 0.1 (full EDSR).
    n_colors: image channels.
    rgb_range: input range (255 in PAMS); the mean shift is DIV2K_RGB_MEAN * rgb_range.
    rgb_mean: per-channel mean subtracted at the input and added back at the output.
    layers: layer factory (FLOAT teacher, `pams_layers(bits)` student).
    widths: inner widths of pruned residual blocks by role ("body_{i}/conv1", i from 0); roles
      left out keep n_feats.
  """
  scale: int = 4
  n_resblocks: int = 16
  n_feats: int = 64
  res_scale: float = 1.0
  n_colors: int = 3
  rgb_range: float = 255.0
  rgb_mean: Sequence[float] = DIV2K_RGB_MEAN
  layers: factory.Layers = factory.FLOAT
  widths: Mapping[str, int] | None = None

  @nn.compact
  def __call__(self, x: Array, return_features: bool = False) -> Array | tuple[Array, Array]:
    tap = factory.tapper(self)  # feature taps by role (factory.taps)
    widths = factory.resolve_widths(
        self.widths, {f"body_{i}/conv1": self.n_feats for i in range(self.n_resblocks)}, "EDSR")
    mean = jnp.asarray(self.rgb_mean, x.dtype) * self.rgb_range
    x = conv(self.layers.first_conv, self.n_feats, name="head")(x - mean)
    res = x
    for i in range(self.n_resblocks):
      res = ResBlock(self.n_feats, self.res_scale, self.layers, inner=widths[f"body_{i}/conv1"],
                     name=f"body_{i}")(res)
      tap(f"body_{i}", res)
    res = conv(self.layers.first_conv, self.n_feats, name="body_end")(res) + x
    tap("body", res)
    out = Upsampler(self.scale, self.n_feats, self.layers, name="upsampler")(res)
    out = conv(self.layers.first_conv, self.n_colors, name="tail")(out) + mean
    return (out, res) if return_features else out


def edsr_baseline(scale: int = 4, layers: factory.Layers = factory.FLOAT, **kwargs: Any) -> EDSR:
  """EDSR baseline (16 blocks, 64 feats, res_scale 1; 1.37 M params at x2, 1.52 M at x4)."""
  return EDSR(scale=scale, n_resblocks=16, n_feats=64, res_scale=1.0, layers=layers, **kwargs)


def edsr_full(scale: int = 4, layers: factory.Layers = factory.FLOAT, **kwargs: Any) -> EDSR:
  """Full EDSR (32 blocks, 256 feats, res_scale 0.1)."""
  return EDSR(scale=scale, n_resblocks=32, n_feats=256, res_scale=0.1, layers=layers, **kwargs)
