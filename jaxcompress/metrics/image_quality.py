"""PSNR / SSIM for super-resolution, following the protocol behind the tables of EDSR, RDN, PAMS.

The numbers papers report come from a MATLAB script (PAMS: `metrics/calculate_PSNR_SSIM.m`):
  1. the SR output is saved as a uint8 PNG: `round(clip(sr * 255 / rgb_range, 0, 255))`;
  2. both images go through `rgb2ycbcr(im2double(img))`, Y channel, kept in double (not rounded),
     then multiplied by 255;
  3. a border of `scale` pixels is removed;
  4. PSNR = 10 log10(255^2 / MSE); SSIM = Zhou Wang's `ssim_index` (Gaussian 11x11, sigma 1.5,
     K = (0.01, 0.03), L = 255, 'valid' filtering), averaged over channels if more than one.
`edsr_psnr` is the in-training variant of EDSR-PyTorch / PAMS `utility.calc_psnr` (Y weights
/256 applied to the difference, no offset), for reproducing training logs.

Plain NumPy (float64): evaluation runs on host on uint8 images.

Example:
  >>> psnr(sr, hr, scale=4)              # Set5 x4 protocol, Y channel
"""
from __future__ import annotations

import math

import numpy as np

# MATLAB rgb2ycbcr's first row (ITU-R BT.601, studio swing), for RGB in [0, 255].
_Y_COEFFS = np.array([65.481, 128.553, 24.966])


def rgb2ycbcr_y(img: np.ndarray) -> np.ndarray:
  """Y of MATLAB `rgb2ycbcr(im2double(img)) * 255`, for RGB images in [0, 255] (..., H, W, 3).

  `Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`, float64, NOT rounded (MATLAB only rounds
  when the input is uint8 and the output class is uint8; the evaluation script converts to double
  first, so its Y is unrounded).

  Args:
    img: array (..., 3), RGB order, values in [0, 255] (uint8 or float).

  Returns:
    float64 array (...) in [16, 235].
  """
  img = np.asarray(img, np.float64)
  if img.shape[-1] != 3:
    raise ValueError(f"rgb2ycbcr_y expects 3 channels last, got shape {img.shape}.")
  return 16.0 + img @ _Y_COEFFS / 255.0


def quantize_to_uint8_grid(img: np.ndarray, rgb_range: float = 255) -> np.ndarray:
  """`round(clip(img * 255 / rgb_range, 0, 255))` as float64, i.e. the saved uint8 PNG values.

  Rounds half away from zero like MATLAB / uint8 conversion; `torch.round` (half to even, used by
  `utility.quantize`) differs only on exact .5 values.
  """
  x = np.clip(np.asarray(img, np.float64) * (255.0 / rgb_range), 0.0, 255.0)
  return np.floor(x + 0.5)


def _prepare(img: np.ndarray, rgb_range: float, y_channel: bool) -> np.ndarray:
  """uint8 grid -> (H, W, C) float64 in [0, 255] (Y only if asked and the image is RGB)."""
  x = quantize_to_uint8_grid(img, rgb_range)
  if x.ndim == 2:
    x = x[..., None]
  if y_channel and x.shape[-1] == 3:
    x = rgb2ycbcr_y(x)[..., None]
  return x


def _shave(x: np.ndarray, border: int) -> np.ndarray:
  return x[border:x.shape[0] - border, border:x.shape[1] - border] if border > 0 else x


def _per_image(fn, sr, hr):
  """Applies `fn` per image when given batches (N, H, W, C); returns the mean over images."""
  sr, hr = np.asarray(sr), np.asarray(hr)
  if sr.shape != hr.shape:
    raise ValueError(f"SR and HR shapes differ: {sr.shape} vs {hr.shape}. Crop HR to the SR size.")
  if sr.ndim == 4:
    return float(np.mean([fn(s, h) for s, h in zip(sr, hr)]))
  return float(fn(sr, hr))


def psnr(sr: np.ndarray, hr: np.ndarray, scale: int, rgb_range: float = 255,
         y_channel: bool = True) -> float:
  """PSNR in dB with the MATLAB protocol of the PAMS / EDSR tables (see module docstring).

  Args:
    sr: super-resolved image (H, W, C) or (H, W), or a batch (N, H, W, C), values in [0, rgb_range].
    hr: ground truth, same shape and range as `sr`.
    scale: upscaling factor; also the border shaved on each side.
    rgb_range: the images' value range (255, or 1 for [0, 1] images).
    y_channel: evaluate the Y channel of MATLAB's rgb2ycbcr (RGB inputs only) instead of all
      channels.

  Returns:
    PSNR (mean over images for a batch); inf for identical images.
  """
  def one(s, h):
    a = _shave(_prepare(s, rgb_range, y_channel), scale)
    b = _shave(_prepare(h, rgb_range, y_channel), scale)
    mse = np.mean((a - b) ** 2)
    return math.inf if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)
  return _per_image(one, sr, hr)


def _gaussian_window_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
  """1-D factor of fspecial('gaussian', size, sigma) (the 2-D window is its outer product)."""
  r = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
  g = np.exp(-(r ** 2) / (2.0 * sigma ** 2))
  return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
  """MATLAB filter2(g g^T, img, 'valid') by two separable 1-D correlations."""
  k = g.size
  rows = sum(g[i] * img[i:img.shape[0] - k + 1 + i, :] for i in range(k))
  return sum(g[j] * rows[:, j:rows.shape[1] - k + 1 + j] for j in range(k))


def ssim_index(img1: np.ndarray, img2: np.ndarray, k1: float = 0.01, k2: float = 0.03,
               data_range: float = 255.0) -> float:
  """Zhou Wang's `ssim_index.m` on two 2-D float images: mean SSIM over the 'valid' map."""
  img1 = np.asarray(img1, np.float64)
  img2 = np.asarray(img2, np.float64)
  if min(img1.shape) < 11:
    raise ValueError(f"SSIM needs images of at least 11x11 after shaving, got {img1.shape}.")
  c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
  g = _gaussian_window_1d()
  mu1, mu2 = _filter_valid(img1, g), _filter_valid(img2, g)
  mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
  s1 = _filter_valid(img1 * img1, g) - mu1_sq
  s2 = _filter_valid(img2 * img2, g) - mu2_sq
  s12 = _filter_valid(img1 * img2, g) - mu1_mu2
  ssim_map = ((2 * mu1_mu2 + c1) * (2 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s1 + s2 + c2))
  return float(np.mean(ssim_map))


def ssim(sr: np.ndarray, hr: np.ndarray, scale: int, rgb_range: float = 255,
         y_channel: bool = True) -> float:
  """SSIM with the MATLAB protocol of the PAMS / EDSR tables (see module docstring).

  Args: as `psnr`.

  Returns:
    SSIM in [-1, 1] (mean over channels, and over images for a batch).
  """
  def one(s, h):
    a = _shave(_prepare(s, rgb_range, y_channel), scale)
    b = _shave(_prepare(h, rgb_range, y_channel), scale)
    return np.mean([ssim_index(b[..., c], a[..., c]) for c in range(a.shape[-1])])
  return _per_image(one, sr, hr)


def edsr_psnr(sr: np.ndarray, hr: np.ndarray, scale: int, rgb_range: float = 255,
              benchmark: bool = True) -> float:
  """In-training PSNR of EDSR-PyTorch / PAMS `utility.calc_psnr` (for comparing training logs).

  SR is quantized to the 255 grid first (`utility.quantize`); HR is used as given. The difference
  is divided by rgb_range; for benchmark sets it is converted to gray with
  (65.738, 129.057, 25.064) / 256 (no offset) and `scale` pixels are shaved; otherwise (DIV2K
  validation) it stays RGB and `scale + 6` pixels are shaved; then
  PSNR = -10 log10(MSE) on the [0, 1] scale.

  Args:
    sr, hr: (H, W, 3) or (N, H, W, 3) in [0, rgb_range].
    scale: upscaling factor.
    rgb_range: value range.
    benchmark: shave `scale` (True) or `scale + 6` (False).
  """
  def one(s, h):
    # torch.round: half to even, like np.round.
    s = np.round(np.clip(np.asarray(s, np.float64) * (255.0 / rgb_range), 0, 255))
    diff = (s * (rgb_range / 255.0) - np.asarray(h, np.float64)) / rgb_range
    shave = scale if benchmark else scale + 6
    if benchmark and diff.ndim == 3 and diff.shape[-1] > 1:
      # Only benchmark sets are converted to gray in the official code; DIV2K val stays RGB.
      diff = diff @ (np.array([65.738, 129.057, 25.064]) / 256.0)
    valid = diff[shave:-shave, shave:-shave]
    mse = np.mean(valid ** 2)
    return math.inf if mse == 0 else -10.0 * math.log10(mse)
  return _per_image(one, sr, hr)
