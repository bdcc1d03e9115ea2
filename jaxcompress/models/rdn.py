"""RDN (Zhang et al., CVPR 2018) and its PAMS-quantized student (PAMS, ECCV 2020, arXiv 2011.04212).

Configuration B of EDSR-PyTorch: D = 16 residual dense blocks, C = 8 conv layers each, growth
G = 64, G0 = 64 (about 22.3 M params at x4). No mean shift (as EDSR-PyTorch's and PAMS' RDN).
Activation quantizers (`layers.act_quant`, see `edsr.PAMSLayers`) sit where the official
`PAMS_RDB`, `PAMS_RDB_Conv_in` and `PAMS_RDN` put them:
  * RDB input: x = Q(x), also used by the local residual;
  * inner layer c > 0: its input (the running concat) is quantized and that quantized tensor is
    what is concatenated further; layer 0 uses the (already quantized) RDB input;
  * LFF 1x1 conv input: Q(concat);
  * GFF: Q(concat of the D block outputs) -> 1x1 conv -> 3x3 conv (its input not quantized).
Quantized convs (`layers.conv`): all RDB convs, LFF, both GFF convs. Float (`layers.first_conv`):
SFENet1/2 and the up-sampling net. Feature taps (`factory.taps` of
`apply(..., mutable=["intermediates"])`): "rdb_{i}" after each residual dense block and "body"
after the global skip (the feature `return_features` returns).

Example:
  >>> model = rdn(scale=4)
  >>> student = rdn(scale=4, layers=edsr.pams_layers(bits=8))
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcompress.models import factory
from jaxcompress.models.edsr import act_quant, conv, pixel_shuffle

Array = jax.Array


class RDB(nn.Module):
  """Residual dense block: C densely connected 3x3 conv+ReLU layers, 1x1 local fusion, skip."""
  g0: int = 64
  g: int = 64
  n_layers: int = 8
  layers: factory.Layers = factory.FLOAT

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = act_quant(self.layers, "quant_act1")(x)
    out = x
    for c in range(self.n_layers):
      if c > 0:
        out = act_quant(self.layers, f"quant_act_in_{c}")(out)
      h = self.layers.act(conv(self.layers.conv, self.g, name=f"conv_{c}")(out))
      out = jnp.concatenate([out, h], axis=-1)
    out = act_quant(self.layers, "quant_act2")(out)
    return conv(self.layers.conv, self.g0, kernel=1, name="lff")(out) + x


class RDN(nn.Module):
  """RDN; `__call__(x, return_features=False)` -> sr or (sr, feature after the global skip).

  Attributes:
    scale: 2, 3 or 4.
    g0: feature width G0. d, c, g: blocks, layers per block, growth (config B: 16, 8, 64).
    n_colors: image channels.
    layers: layer factory (FLOAT teacher, `pams_layers(bits)` student).
  """
  scale: int = 4
  g0: int = 64
  d: int = 16
  c: int = 8
  g: int = 64
  n_colors: int = 3
  layers: factory.Layers = factory.FLOAT

  @nn.compact
  def __call__(self, x: Array, return_features: bool = False) -> Array | tuple[Array, Array]:
    tap = factory.tapper(self)  # feature taps by role (factory.taps)
    if self.scale not in (2, 3, 4):
      raise ValueError(f"scale must be 2, 3 or 4, got {self.scale}.")
    f1 = conv(self.layers.first_conv, self.g0, name="sfe1")(x)
    x = conv(self.layers.first_conv, self.g0, name="sfe2")(f1)
    outs = []
    for i in range(self.d):
      x = RDB(self.g0, self.g, self.c, self.layers, name=f"rdb_{i}")(x)
      tap(f"rdb_{i}", x)
      outs.append(x)
    h = act_quant(self.layers, "quant_act")(jnp.concatenate(outs, axis=-1))
    h = conv(self.layers.conv, self.g0, kernel=1, name="gff_0")(h)
    feat = conv(self.layers.conv, self.g0, name="gff_1")(h) + f1
    tap("body", feat)
    up = feat
    if self.scale == 4:
      up = pixel_shuffle(conv(self.layers.first_conv, self.g * 4, name="up_0")(up), 2)
      up = pixel_shuffle(conv(self.layers.first_conv, self.g * 4, name="up_1")(up), 2)
    else:
      r = self.scale
      up = pixel_shuffle(conv(self.layers.first_conv, self.g * r * r, name="up_0")(up), r)
    out = conv(self.layers.first_conv, self.n_colors, name="up_out")(up)
    return (out, feat) if return_features else out


def rdn(scale: int = 4, layers: factory.Layers = factory.FLOAT, **kwargs: Any) -> RDN:
  """RDN configuration B (D=16, C=8, G=64, G0=64)."""
  return RDN(scale=scale, layers=layers, **kwargs)
