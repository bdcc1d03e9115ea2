"""`PSNR_bt` / `SSIM_bt`: the image metrics of the CoGD sparse-coding code.

Zhuo et al., "Cogradient Descent for Bilinear Optimization", CVPR 2020, arXiv 2006.09142;
github.com/bczhangbczhang/CoGD, `CoGD-master.zip`, `CSC/PSNR_bt.m` and `CSC/SSIM_bt.m`. The
reconstruction on the padded grid is cropped to the image (`z(6:105, 6:105, :)` for 11x11
filters), then reference and reconstruction are each min-max normalised to [0, 1] per image.
PSNR has peak 1; SSIM is one global window with sample (N - 1) variances and covariance
(`std2`, `cov`). Both return one value per image; the released drivers report their mean.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _prepare(reference, reconstruction):
  x = jnp.asarray(reference)
  z = jnp.asarray(reconstruction)
  if x.ndim != 3 or z.ndim != 3 or x.shape[0] != z.shape[0]:
    raise ValueError(f"expected reference (N, h, w) and reconstruction (N, H, W), got "
                     f"{x.shape} and {z.shape}; stack one image per leading index.")
  ph, pw = z.shape[1] - x.shape[1], z.shape[2] - x.shape[2]
  if ph < 0 or pw < 0 or ph % 2 or pw % 2:
    raise ValueError(f"reconstruction {z.shape[1:]} must exceed reference {x.shape[1:]} by an "
                     "even padding per axis (the solver's grid: image + filter_size - 1).")
  z = z[:, ph // 2:z.shape[1] - ph // 2, pw // 2:z.shape[2] - pw // 2]
  dtype = jnp.result_type(x.dtype, z.dtype, jnp.float32)
  norm = lambda a: ((a - a.min((1, 2), keepdims=True))  # noqa: E731
                    / (a.max((1, 2), keepdims=True) - a.min((1, 2), keepdims=True)))
  return norm(x.astype(dtype)), norm(z.astype(dtype))


def psnr_bt(reference: jax.Array, reconstruction: jax.Array) -> jax.Array:
  """`PSNR_bt`: per-image PSNR (dB, peak 1) after cropping and min-max normalisation.

  Args:
    reference: (N, h, w) images.
    reconstruction: (N, h + 2p, w + 2p) reconstructions on the padded grid.

  Returns:
    (N,) PSNR `-10 log10(mean((z - x)^2))`.
  """
  x, z = _prepare(reference, reconstruction)
  return -10 * jnp.log10(jnp.mean((z - x) ** 2, axis=(1, 2)))


def ssim_bt(reference: jax.Array, reconstruction: jax.Array, k1: float = 0.01,
            k2: float = 0.03, dynamic_range: float = 1.0) -> jax.Array:
  """`SSIM_bt(x, z, 0.01, 0.03, 1)`: per-image single-window SSIM after the same preparation.

  `((2 mx my + c1)(2 cov + c2)) / ((mx^2 + my^2 + c1)(sx^2 + sy^2 + c2))`, `c = (k L)^2`,
  variances and covariance with the N - 1 normalisation.

  Args:
    reference: (N, h, w); reconstruction: (N, h + 2p, w + 2p).
    k1, k2, dynamic_range: constants (the released call passes 0.01, 0.03, 1).

  Returns:
    (N,) SSIM values.
  """
  x, z = _prepare(reference, reconstruction)
  c1, c2 = (k1 * dynamic_range) ** 2, (k2 * dynamic_range) ** 2
  cnt = x.shape[1] * x.shape[2]
  mx, my = x.mean((1, 2)), z.mean((1, 2))
  xc, zc = x - mx[:, None, None], z - my[:, None, None]
  vx, vy = (xc * xc).sum((1, 2)) / (cnt - 1), (zc * zc).sum((1, 2)) / (cnt - 1)
  cov = (xc * zc).sum((1, 2)) / (cnt - 1)
  return (2 * mx * my + c1) * (2 * cov + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
