"""Binarized DARTS operations for BNAS (XNOR-Net style), NHWC / HWIO.

BNAS (Chen et al., arXiv 1911.10862 / 2009.04247) searches cells whose convolutions are binarized
and trains them with XNOR-Net (Rastegari et al., arXiv 1603.05279):

* weights: W_b = a * sign(W), a = mean |W| per output filter (over kh, kw, in), recomputed from
  the real latent weights at every step; sign by `quant.ste_sign` (clipped STE, gradient where
  |W| <= 1). `a` is differentiated too, which gives XNOR-Net's d/dW = g (1/n + a 1[|W| <= 1]).
* activations (1-bit search only, `binarize_input=True`): A_b = sign(A) with the clipped STE
  (gradient where |A| <= 1). XNOR-Net's optional spatial scale K is not used (choice: the BNAS
  sheet marks it optional; most binary NAS code drops it). Zero padding is applied after
  binarisation (the padded border stays 0).

Op set (same names and order as `space.PRIMITIVES`, so alphas / genotypes are unchanged):

| name          | binarized version                                                         |
|---------------|---------------------------------------------------------------------------|
| sep_conv_kxk  | two `BinaryDilConv(dilation=1)` blocks, only the first strided             |
| dil_conv_kxk  | [ReLU] -> XNOR depthwise kxk (dilation 2) -> XNOR 1x1 -> BN                 |
| none, pools   | real-valued (unchanged)                                                   |
| skip_connect  | identity; at stride 2 the real-valued `FactorizedReduce`                   |

Choices where the paper is silent (documented in methods/bnas.py too): pooling, skip and none stay
real-valued (the sheet's reading of the paper); with weights-only binarization
(`binary_activations=False`, XNOR-BNAS search as the conference version) the ReLU is kept; with
binarized activations (1-bit BNAS) the ReLU is dropped (sign(ReLU(x)) would be constant +1) and
each binary conv binarizes its own input, as XNOR-Net's BN -> sign -> conv block (the BN of the
previous op / preprocessing precedes it).

Example:
  >>> import jax, jax.numpy as jnp
  >>> ops = binary_ops(binary_activations=True)
  >>> op = ops["sep_conv_3x3"](8, 1, False)
  >>> v = op.init(jax.random.key(0), jnp.ones((2, 8, 8, 8)), train=False)
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcompress.nas import space
from jaxcompress.quant.estimators import ste_sign


def xnor_weight(w: jax.Array, clip_value: float = 1.0) -> jax.Array:
  """a * sign(w) with a = mean |w| per output filter (last axis of an HWIO kernel)."""
  a = jnp.mean(jnp.abs(w), axis=tuple(range(w.ndim - 1)), keepdims=True)
  return a * ste_sign(w, clip_value)


def xnor_conv2d(x: jax.Array, w: jax.Array, stride: int = 1, padding: int = 0,
                dilation: int = 1, groups: int = 1, binarize_input: bool = True) -> jax.Array:
  """XNOR convolution: conv(sign(x) [or x], a * sign(w)), NHWC input, HWIO kernel.

  Args:
    x: (N, H, W, C) activations.
    w: (kh, kw, C // groups, O) real latent kernel.
    stride, padding, dilation, groups: as a PyTorch Conv2d (symmetric zero padding).
    binarize_input: sign the activations (clipped STE); False keeps real activations
      (weight-only binarization).
  """
  xb = ste_sign(x, 1.0) if binarize_input else x
  wb = xnor_weight(w).astype(xb.dtype)
  return jax.lax.conv_general_dilated(
      xb, wb, (stride, stride), ((padding, padding), (padding, padding)),
      rhs_dilation=(dilation, dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=groups)


class XNORConv(nn.Module):
  """A bias-free XNOR-binarized convolution with a real latent kernel."""
  features: int
  kernel_size: int = 3
  stride: int = 1
  padding: int = 0
  dilation: int = 1
  groups: int = 1
  binarize_input: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param("kernel", space.torch_conv_init,
                        (k, k, x.shape[-1] // self.groups, self.features))
    return xnor_conv2d(x, kernel.astype(x.dtype), self.stride, self.padding, self.dilation,
                       self.groups, self.binarize_input)


class BinaryDilConv(nn.Module):
  """[ReLU] -> XNOR depthwise k x k (dilation d, stride s) -> XNOR 1x1 -> BN."""
  features: int
  kernel_size: int
  stride: int
  padding: int
  dilation: int = 1
  affine: bool = True
  binary_activations: bool = False
  bn_epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    c_in = x.shape[-1]
    b = self.binary_activations
    y = x if b else nn.relu(x)
    y = XNORConv(c_in, self.kernel_size, self.stride, self.padding, self.dilation, c_in, b)(y)
    y = XNORConv(self.features, 1, binarize_input=b)(y)
    return space.batch_norm(train, self.affine, self.bn_epsilon)(y)


class BinarySepConv(nn.Module):
  """Two `BinaryDilConv(dilation=1)` blocks; only the first is strided."""
  features: int
  kernel_size: int
  stride: int
  padding: int
  affine: bool = True
  binary_activations: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    c_in = x.shape[-1]
    b = self.binary_activations
    y = BinaryDilConv(c_in, self.kernel_size, self.stride, self.padding, 1, self.affine, b)(
        x, train)
    return BinaryDilConv(self.features, self.kernel_size, 1, self.padding, 1, self.affine, b)(
        y, train)


OpFactory = Callable[[int, int, bool], nn.Module]


@functools.lru_cache(maxsize=None)
def binary_ops(binary_activations: bool = False) -> dict[str, OpFactory]:
  """The BNAS op registry: `space.OPS` with the sep/dil convs XNOR-binarized.

  Args:
    binary_activations: also binarize activations (1-bit BNAS); False = binary weights only.

  Returns:
    {name: factory(C, stride, affine) -> module called as op(x, train)}.
  """
  b = bool(binary_activations)
  ops: dict[str, Any] = dict(space.OPS)
  ops.update({
      "sep_conv_3x3": lambda C, stride, affine: BinarySepConv(C, 3, stride, 1, affine, b),
      "sep_conv_5x5": lambda C, stride, affine: BinarySepConv(C, 5, stride, 2, affine, b),
      "sep_conv_7x7": lambda C, stride, affine: BinarySepConv(C, 7, stride, 3, affine, b),
      "dil_conv_3x3": lambda C, stride, affine: BinaryDilConv(C, 3, stride, 2, 2, affine, b),
      "dil_conv_5x5": lambda C, stride, affine: BinaryDilConv(C, 5, stride, 4, 2, affine, b),
  })
  return ops


BINARY_OPS = binary_ops(False)       # XNOR weights, real activations
BINARY_OPS_1BIT = binary_ops(True)   # XNOR weights and sign activations
