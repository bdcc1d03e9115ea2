"""Robust operations of ABanditNAS: Gabor filters, denoising blocks and its conv variants.

ABanditNAS (Chen et al., "Anti-Bandit Neural Architecture Search for Model Defense",
arXiv 2008.00698, ECCV 2020) searches over weight-free ops, convolutions, Gabor filters
and denoising blocks. Definitions follow the released evaluation code
(`bczhangbczhang/ABanditNAS`: `models/filter.py`, `models/darts_ops_1.py`):

* Gabor kernel (one 3x3 pattern per output channel, repeated over the input channels):
  g(x, y) = exp(-(x'^2 / sigma^2 + y'^2 / (sigma / gamma)^2) / 2) * cos(2 pi x' / lambda + psi),
  x' = x cos(theta) + y sin(theta), y' = -x sin(theta) + y cos(theta), from raw parameters
  theta = 2 pi sigmoid(theta_r), gamma = 1 + gamma_r / 2, sigma = 0.1 + 0.4 sigmoid(sigma_r),
  lambda = 0.001 + 0.999 sigmoid(lambda_r), psi = psi_r.
* Dot-product non-local mean (Xie et al. feature denoising, no embedding, no softmax):
  y_p = (1 / (C H W)) sum_q <x_p, x_q> x_q.
* Denoising block: out = x + BN(filter(x)) with zero-initialised BN scale and bias (identity at
  init); stride 2 by bilinear resizing of `out` with align_corners=True to floor(H / 2).
* `sep_conv_kxk`: ReLU, depthwise kxk (stride s), BN, ReLU, full kxk conv, BN (no pointwise conv).
* `conv_kxk`: ReLU, full kxk conv with dilation 2 (padding 2 / 4), BN.

`ABANDIT_OPS[name](C, stride, affine)` uses the official names; batch norms use the evaluation
script's epsilon 1e-3 (`--bn_eps`, applied to every BN by `set_bn_param`).

Example:
  >>> import jax.numpy as jnp
  >>> k = gabor_kernel(*(jnp.zeros(4),) * 5, in_channels=3)  # (3, 3, 3, 4) HWIO
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress.nas import space
from jaxcompress.ops import conv as conv_ops

ABANDIT_BN_EPS = 1e-3

# The 9-op search space of the paper (K = 9, no `none`; 3 * sum_{k=2..9} k = 132 samples). The
# released `utils/genotypes_all.py` PRIMITIVES list also holds `sep_conv_m_*` (== DARTS SepConv)
# and duplicated conv entries; the released genotypes only use these nine names.
ABANDIT_PRIMITIVES: list[str] = [
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "conv_3x3",
    "conv_5x5",
    "gab_filt_3x3",
    "dtp_blok_3x3",
]


def gabor_kernel(lambd: jax.Array, theta: jax.Array, psi: jax.Array, sigma: jax.Array,
                 gamma: jax.Array, in_channels: int, size: int = 3) -> jax.Array:
  """Gabor filter bank from raw (unconstrained) per-output-channel parameters.

  Args:
    lambd: raw wavelength, shape (O,); lambda = 0.001 + 0.999 * sigmoid(lambd).
    theta: raw orientation, shape (O,); theta = 2 pi * sigmoid(theta).
    psi: phase, shape (O,); used as is.
    sigma: raw scale, shape (O,); sigma = 0.1 + 0.4 * sigmoid(sigma).
    gamma: raw aspect ratio, shape (O,); gamma = 1 + 0.5 * gamma.
    in_channels: I, the kernel is identical over input channels (as `gabor_fn` repeats it).
    size: odd spatial size; coordinates run over -size//2 .. size//2.

  Returns:
    HWIO kernel of shape (size, size, in_channels, O); kernel[i, j, :, o] is evaluated at
    x = i - size // 2 (row), y = j - size // 2 (column), in the dtype of the parameters.
  """
  lambd, theta, psi, sigma, gamma = (jnp.asarray(v) for v in (lambd, theta, psi, sigma, gamma))
  dtype = jnp.result_type(lambd, theta, psi, sigma, gamma)
  if not jnp.issubdtype(dtype, jnp.floating):
    dtype = jnp.float32
  th = 2.0 * math.pi * jax.nn.sigmoid(theta.astype(dtype))
  gm = 1.0 + 0.5 * gamma.astype(dtype)
  sg = 0.1 + 0.4 * jax.nn.sigmoid(sigma.astype(dtype))
  lm = 0.001 + 0.999 * jax.nn.sigmoid(lambd.astype(dtype))
  ps = psi.astype(dtype)
  r = size // 2
  grid = jnp.arange(-r, r + 1, dtype=dtype)
  x = grid[:, None, None]  # row coordinate, broadcast over (H, W, O)
  y = grid[None, :, None]  # column coordinate
  xr = x * jnp.cos(th) + y * jnp.sin(th)
  yr = -x * jnp.sin(th) + y * jnp.cos(th)
  sigma_y = sg / gm
  g = jnp.exp(-0.5 * (xr ** 2 / sg ** 2 + yr ** 2 / sigma_y ** 2)) * jnp.cos(
      2.0 * math.pi / lm * xr + ps)
  return jnp.broadcast_to(g[:, :, None, :], (size, size, in_channels, g.shape[-1]))


def nonlocal_mean(x: jax.Array) -> jax.Array:
  """Dot-product non-local mean without embedding or softmax (ABanditNAS denoising filter).

  Args:
    x: NHWC activations.

  Returns:
    y with y[n, p] = (1 / (C H W)) * sum_q <x[n, p], x[n, q]> x[n, q] over positions p, q.
  """
  n, h, w, c = x.shape
  f = x.reshape(n, h * w, c)
  # Same association as the official filter: (X X^T) X when C > HW, X (X^T X) otherwise; both are
  # exact rewrites, the cheaper one avoids the HW x HW matrix on large maps.
  if c > h * w:
    y = jnp.einsum("npq,nqc->npc", jnp.einsum("npc,nqc->npq", f, f), f)
  else:
    y = jnp.einsum("npc,ncd->npd", f, jnp.einsum("nqc,nqd->ncd", f, f))
  return (y / (c * h * w)).reshape(n, h, w, c)


def _align_corners_matrix(n_in: int, n_out: int, dtype) -> np.ndarray:
  """Linear-interpolation matrix (n_out, n_in) with PyTorch align_corners=True sampling."""
  scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
  m = np.zeros((n_out, n_in), dtype=np.float64)
  for i in range(n_out):
    src = i * scale
    i0 = min(int(math.floor(src)), n_in - 1)
    i1 = min(i0 + 1, n_in - 1)
    t = src - i0
    m[i, i0] += 1.0 - t
    m[i, i1] += t
  return m.astype(dtype)


def resize_bilinear_align_corners(x: jax.Array, stride: int) -> jax.Array:
  """`F.interpolate(x, scale_factor=1/stride, mode="bilinear", align_corners=True)` on NHWC.

  The output size is floor(H / stride) x floor(W / stride); with align_corners=True the sampling
  scale is (in - 1) / (out - 1), independent of the requested factor (PyTorch semantics).
  """
  _, h, w, _ = x.shape
  ho, wo = int(math.floor(h / stride)), int(math.floor(w / stride))
  mh = jnp.asarray(_align_corners_matrix(h, ho, np.float64), x.dtype)
  mw = jnp.asarray(_align_corners_matrix(w, wo, np.float64), x.dtype)
  return jnp.einsum("ih,nhwc,jw->nijc", mh, x, mw)


class GaborConv(nn.Module):
  """C -> C convolution with a learnable Gabor kernel (5 raw scalars per output channel).

  Stride 1, zero padding size//2, no bias, as `GaborFilter(C, 3, 1, 1)` in the released code.
  Raw inits: lambda_r ~ U(0, 1), theta_r ~ N(0, 1), psi_r ~ 0.02 N(0, 1), sigma_r ~ N(0, 1),
  gamma_r = 0.
  """
  size: int = 3

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train
    c = x.shape[-1]
    normal = lambda std: (lambda key, shape: std * jax.random.normal(key, shape))
    lambd = self.param("lambd", lambda key, shape: jax.random.uniform(key, shape), (c,))
    theta = self.param("theta", normal(1.0), (c,))
    psi = self.param("psi", normal(0.02), (c,))
    sigma = self.param("sigma", normal(1.0), (c,))
    gamma = self.param("gamma", nn.initializers.zeros, (c,))
    kernel = gabor_kernel(lambd, theta, psi, sigma, gamma, c, self.size).astype(x.dtype)
    p = self.size // 2
    return conv_ops.conv_general_dilated(x, kernel, (1, 1), ((p, p), (p, p)),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))


class DenoisingBlock(nn.Module):
  """x + BN(filter(x)), zero-initialised BN; stride 2 by align-corners bilinear downsampling.

  Attributes:
    stride: 1 or 2; the filter always runs at stride 1 and the sum is resized afterwards.
    filter_type: "dotp" (non-local mean, `dtp_blok_3x3`) or "gabor" (`gab_filt_3x3`).
    affine: with affine BN the block starts as the identity (scale and bias zero); without it
      (search-net BN) the filter branch is normalised and not zero at init.
    bn_epsilon: batch-norm epsilon.
    pointwise: add a 1x1 conv after the filter, as in the feature-denoising block of Xie et al.
      that the paper cites; the release (and the default here) has none.
  """
  stride: int = 1
  filter_type: str = "dotp"
  affine: bool = True
  bn_epsilon: float = ABANDIT_BN_EPS
  pointwise: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.filter_type == "dotp":
      y = nonlocal_mean(x)
    elif self.filter_type == "gabor":
      y = GaborConv(3)(x)
    else:
      raise ValueError(f"Unknown filter_type {self.filter_type!r}; use 'dotp' or 'gabor'.")
    if self.pointwise:
      y = conv_ops.Conv(x.shape[-1], (1, 1), use_bias=False, kernel_init=space.torch_conv_init)(y)
    y = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=self.bn_epsilon,
                     use_scale=self.affine, use_bias=self.affine,
                     scale_init=nn.initializers.zeros, bias_init=nn.initializers.zeros)(y)
    out = x + y
    if self.stride != 1:
      out = resize_bilinear_align_corners(out, self.stride)
    return out


class AbanditConv(nn.Module):
  """ReLU -> k x k conv (stride, padding, dilation, groups) -> BN: the released `Conv` op."""
  features: int
  kernel_size: int
  stride: int
  padding: int
  dilation: int = 1
  groups: int = 1
  affine: bool = True
  bn_epsilon: float = ABANDIT_BN_EPS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    k, s, d, p = self.kernel_size, self.stride, self.dilation, self.padding
    y = conv_ops.Conv(self.features, (k, k), strides=(s, s), padding=((p, p), (p, p)),
                      kernel_dilation=(d, d), feature_group_count=self.groups, use_bias=False,
                      kernel_init=space.torch_conv_init)(nn.relu(x))
    return space.batch_norm(train, self.affine, self.bn_epsilon)(y)


class AbanditSepConv(nn.Module):
  """ReLU, depthwise kxk (stride s), BN, ReLU, full kxk conv, BN: the released `SepConv`."""
  features: int
  kernel_size: int
  stride: int
  padding: int
  affine: bool = True
  bn_epsilon: float = ABANDIT_BN_EPS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    c = x.shape[-1]
    k, p = self.kernel_size, self.padding
    y = AbanditConv(c, k, self.stride, p, 1, c, self.affine, self.bn_epsilon)(x, train)
    return AbanditConv(self.features, k, 1, p, 1, 1, self.affine, self.bn_epsilon)(y, train)


def _dil(C, k, stride, pad, dil, affine):  # pylint: disable=invalid-name
  return space.DilConv(C, k, stride, pad, dil, affine, ABANDIT_BN_EPS)


def _sep_m(C, k, stride, pad, affine):  # pylint: disable=invalid-name
  # SepConv_M: two DilConv(dilation=1) blocks == the DARTS separable convolution.
  return space.SepConv(C, k, stride, pad, affine, ABANDIT_BN_EPS)


ABANDIT_OPS: dict[str, space.OpFactory] = {
    "none": lambda C, stride, affine: space.Zero(stride),
    "avg_pool_3x3": lambda C, stride, affine: space.Pool("avg", stride, True, affine,
                                                         ABANDIT_BN_EPS),
    "max_pool_3x3": lambda C, stride, affine: space.Pool("max", stride, True, affine,
                                                         ABANDIT_BN_EPS),
    "skip_connect": lambda C, stride, affine: (
        space.Identity() if stride == 1 else space.FactorizedReduce(C, affine, ABANDIT_BN_EPS)),
    "sep_conv_3x3": lambda C, stride, affine: AbanditSepConv(C, 3, stride, 1, affine),
    "sep_conv_5x5": lambda C, stride, affine: AbanditSepConv(C, 5, stride, 2, affine),
    "sep_conv_7x7": lambda C, stride, affine: AbanditSepConv(C, 7, stride, 3, affine),
    "sep_conv_m_3x3": lambda C, stride, affine: _sep_m(C, 3, stride, 1, affine),
    "sep_conv_m_5x5": lambda C, stride, affine: _sep_m(C, 5, stride, 2, affine),
    "conv_3x3": lambda C, stride, affine: AbanditConv(C, 3, stride, 2, 2, 1, affine),
    "conv_5x5": lambda C, stride, affine: AbanditConv(C, 5, stride, 4, 2, 1, affine),
    "dil_conv_3x3": lambda C, stride, affine: _dil(C, 3, stride, 2, 2, affine),
    "dil_conv_5x5": lambda C, stride, affine: _dil(C, 5, stride, 4, 2, affine),
    "gab_filt_3x3": lambda C, stride, affine: DenoisingBlock(stride, "gabor", affine),
    "dtp_blok_3x3": lambda C, stride, affine: DenoisingBlock(stride, "dotp", affine),
}
