"""MATLAB-compatible bicubic `imresize` in NumPy (how DIV2K / Set5 / ... LR images were made).

Super-resolution benchmarks build their LR inputs with MATLAB `imresize(hr, 1/scale, 'bicubic')`
on uint8 images; PIL, OpenCV and `jax.image.resize` differ from it (no antialiasing on
downscale, other kernels, other boundary rules), which shifts PSNR by tenths of a dB.

MATLAB's algorithm, reproduced here:
  * Keys cubic kernel with a = -0.5 on [-2, 2]:
      |x| <= 1: 1.5|x|^3 - 2.5|x|^2 + 1;  1 < |x| <= 2: -0.5|x|^3 + 2.5|x|^2 - 4|x| + 2.
  * Output size ceil(scale * in). Output pixel x (1-based) maps to
    u = x / scale + (1 - 1/scale) / 2 in input coordinates.
  * Downscale (scale < 1) antialiasing: kernel h(t) = scale * cubic(scale * t), width 4 / scale.
  * Taps: left = floor(u - width / 2), P = ceil(width) + 2 taps left + 0 .. P-1, weights
    h(u - index) normalised to sum 1 per output pixel.
  * Boundary: symmetric mirror including the edge pixel (index 0 -> 1, 1 - 1 -> 1, n + 1 -> n).
  * Dimensions are resized one at a time, the one with the smaller scale first (rows first on
    ties, MATLAB's stable sort).
  * Rounding: uint8 input -> each pass is clipped to [0, 255] and rounded half away from zero back
    to uint8 (MATLAB's imresizemex returns the input class), so the output is uint8; float input ->
    no rounding or clipping anywhere, float64 out.

Example:
  >>> lr = imresize(hr_uint8, 1 / 4)      # DIV2K-style bicubic x4 LR image
"""
from __future__ import annotations

import math

import numpy as np


def cubic(x: np.ndarray) -> np.ndarray:
  """MATLAB's bicubic kernel (Keys, a = -0.5)."""
  ax = np.abs(np.asarray(x, np.float64))
  ax2, ax3 = ax * ax, ax * ax * ax
  return ((1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
          + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2)))


def contributions(in_length: int, out_length: int, scale: float,
                  antialiasing: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Weights and 0-based source indices of MATLAB's `contributions` for one dimension.

  Returns:
    (weights, indices), both (out_length, taps); all-zero tap columns are dropped as in MATLAB.
  """
  kernel_width = 4.0
  if scale < 1 and antialiasing:
    h = lambda t: scale * cubic(scale * t)
    kernel_width = kernel_width / scale
  else:
    h = cubic
  x = np.arange(1, out_length + 1, dtype=np.float64)
  u = x / scale + 0.5 * (1.0 - 1.0 / scale)
  left = np.floor(u - kernel_width / 2.0)
  taps = int(math.ceil(kernel_width)) + 2
  idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]      # 1-based
  weights = h(u[:, None] - idx)
  weights = weights / np.sum(weights, axis=1, keepdims=True)
  # Symmetric padding: aux = [1 .. n, n .. 1]; 1-based i -> aux[(i - 1) mod 2n].
  aux = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
  indices = aux[np.mod(idx.astype(np.int64) - 1, 2 * in_length)]
  keep = np.any(weights != 0, axis=0)
  return weights[:, keep], indices[:, keep]


def _round_half_away(x: np.ndarray) -> np.ndarray:
  return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _resize_along(img: np.ndarray, axis: int, weights: np.ndarray, indices: np.ndarray,
                  as_uint8: bool) -> np.ndarray:
  x = np.moveaxis(np.asarray(img, np.float64), axis, 0)
  # out[i] = sum_k weights[i, k] * x[indices[i, k]]
  out = np.einsum("ok,ok...->o...", weights, x[indices])
  out = np.moveaxis(out, 0, axis)
  if as_uint8:
    out = _round_half_away(np.clip(out, 0.0, 255.0)).astype(np.uint8)
  return out


def imresize(img: np.ndarray, scale: float | None = None,
             output_shape: tuple[int, int] | None = None,
             antialiasing: bool = True) -> np.ndarray:
  """MATLAB `imresize(img, scale, 'bicubic')` (or `imresize(img, [h, w], 'bicubic')`).

  Args:
    img: (H, W) or (H, W, C) image, uint8 (MATLAB uint8 semantics, uint8 out) or float (float64
      out, no rounding or clipping).
    scale: scale factor, e.g. 1/4 for x4 LR generation; output size ceil(scale * size).
    output_shape: (H_out, W_out) instead of `scale`; per-dimension scales out / in.
    antialiasing: MATLAB's 'Antialiasing' option (default true; only matters when downscaling).

  Returns:
    The resized image, uint8 for uint8 input, else float64.

  Raises:
    ValueError: if neither or both of `scale` and `output_shape` are given.
  """
  img = np.asarray(img)
  if (scale is None) == (output_shape is None):
    raise ValueError("Give exactly one of scale or output_shape.")
  in_hw = img.shape[:2]
  if scale is not None:
    scales = (float(scale), float(scale))
    out_hw = tuple(int(math.ceil(s * n)) for s, n in zip(scales, in_hw))
  else:
    out_hw = tuple(int(v) for v in output_shape)
    scales = tuple(o / n for o, n in zip(out_hw, in_hw))
  as_uint8 = img.dtype == np.uint8
  out = img
  # Smaller scale first; stable on ties (rows first), as MATLAB's sort.
  for axis in sorted(range(2), key=lambda a: scales[a]):
    w, ind = contributions(in_hw[axis], out_hw[axis], scales[axis], antialiasing)
    out = _resize_along(out, axis, w, ind, as_uint8)
  return out
