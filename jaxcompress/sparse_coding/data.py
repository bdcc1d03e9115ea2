"""Image sets of the CoGD sparse-coding experiments, prepared as the released code does.

Zhuo et al., "Cogradient Descent for Bilinear Optimization", CVPR 2020, arXiv 2006.09142;
github.com/bczhangbczhang/CoGD, `CoGD-master.zip`: `CreateImages.m` (under `CSC/`) with
`'local_cn'`, `ZERO_MEAN = 1`, `'gray'` (called by `CSC/learn_kernels_2D*.m`):

1. grayscale in [0, 1] (`rgb2gray(double(I) / 255)` for colour, `/ 255` for gray), single;
2. local contrast normalisation: 13x13 Gaussian (sigma 3 * 1.591) local mean and standard
   deviation with reflected borders (`rconv2`), the deviation floored at its median
   (`q(round(numel / 2))` of the sorted values), `(I - mean) / std`, single;
3. zero mean per image.

The padding to the (h + 10) x (w + 10) grid belongs to the solver (`ffcsc`). The edge taper of
FFCSC (`edgetaper` with an 11x11 Gaussian, sigma 11/3) is commented out in the released
`admm_learn_conv2D_weighted*.m`, so `edge_taper` defaults to False.

Sets: a local folder of 10 images of 100x100 (the paper's fruit and city sets are
`CSC/datasets/Images/fruit_100_100` and `city_100_100` of the archive), or offline photographs
bundled with scikit-image, centre-cropped and resized to 100x100.
"""
from __future__ import annotations

import os

import numpy as np

# MATLAB rgb2gray: first row of the inverse of the NTSC YIQ transform.
_RGB2GRAY = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".pgm", ".ppm")
SKIMAGE_PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "coins", "moon", "rocket", "clock",
                  "grass", "brick")


def gaussian_kernel(size: int, sigma: float) -> np.ndarray:
  """`fspecial('gaussian', [size size], sigma)`: normalised to sum 1."""
  ax = np.arange(size) - (size - 1) / 2
  g = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * sigma ** 2))
  g[g < np.finfo(np.float64).eps * g.max()] = 0
  return g / g.sum()


def rconv2(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """`rconv2`: 2-D convolution, borders reflected about the edge pixels, output of image size."""
  ky, kx = kernel.shape
  # `sy2 = floor((sy - 1) / 2)` reflected rows below, `sy - 1 - sy2` above (same for columns).
  py, px = (ky - 1) // 2, (kx - 1) // 2
  padded = np.pad(image, ((ky - 1 - py, py), (kx - 1 - px, px)), mode="reflect")
  flipped = kernel[::-1, ::-1]
  win = np.lib.stride_tricks.sliding_window_view(padded, kernel.shape)
  return np.einsum("ijkl,kl->ij", win, flipped)


def local_contrast_normalize(image: np.ndarray) -> np.ndarray:
  """`CreateImages` `'local_cn'` on one (h, w) grayscale image; float32 like MATLAB's single."""
  dim = np.asarray(image, np.float64)
  k = gaussian_kernel(13, 3 * 1.591)
  lmn = rconv2(dim, k)
  lvar = np.maximum(rconv2(dim ** 2, k) - lmn ** 2, 0)
  lstd = np.sqrt(lvar)
  q = np.sort(lstd.ravel())
  th = q[int(np.floor(q.size / 2 + 0.5)) - 1]
  if th == 0:
    q = q[q != 0]
    th = q[int(np.floor(q.size / 2 + 0.5)) - 1] if q.size else 0.0
  lstd = np.where(lstd <= th, th, lstd)
  lstd = np.where(lstd == 0, np.finfo(np.float64).eps, lstd)
  return ((dim - lmn) / lstd).astype(np.float32)


def to_gray(image: np.ndarray) -> np.ndarray:
  """`CreateImages` `'gray'`: (h, w[, 3|4]) -> float32 in [0, 1]."""
  img = np.asarray(image)
  if img.ndim == 3:
    rgb = img[..., :3].astype(np.float64) / 255.0
    return (rgb @ _RGB2GRAY).astype(np.float32)
  img = img.astype(np.float64)
  return (img / 255.0 if img.max() > 1 else img).astype(np.float32)


def edge_taper(image: np.ndarray, psf: np.ndarray) -> np.ndarray:
  """MATLAB `edgetaper(I, PSF)`: `alpha I + (1 - alpha) (I circularly blurred by PSF)`.

  alpha is the outer product of `1 - beta` per axis, beta the normalised autocorrelation of the
  PSF's projection on that axis over `size - 1` samples, its first sample repeated at the end;
  the result is clipped to the range of I.
  """
  img = np.asarray(image, np.float64)
  psf = psf / psf.sum()
  betas = []
  for axis, length in enumerate(img.shape):
    proj = psf.sum(axis=1 - axis)
    zc = np.real(np.fft.ifft(np.abs(np.fft.fft(proj, length - 1)) ** 2))
    betas.append(np.concatenate([zc, zc[:1]]) / zc.max())
  alpha = np.outer(1 - betas[0], 1 - betas[1])
  otf_psf = np.zeros_like(img)
  otf_psf[:psf.shape[0], :psf.shape[1]] = psf
  otf_psf = np.roll(otf_psf, (-(psf.shape[0] // 2), -(psf.shape[1] // 2)), axis=(0, 1))
  blurred = np.real(np.fft.ifft2(np.fft.fft2(img) * np.fft.fft2(otf_psf)))
  return np.clip(alpha * img + (1 - alpha) * blurred, img.min(), img.max())


def prepare_images(images, *, edge_taper_filter_size: int | None = None) -> np.ndarray:
  """Gray, local contrast normalisation, zero mean (and optionally edge taper), as released.

  Args:
    images: sequence of (h, w) or (h, w, 3) arrays of one size (uint8 or floats in [0, 1]).
    edge_taper_filter_size: None (as released: commented out) or s to taper with an s x s
      Gaussian of sigma s / 3 as FFCSC's original code.

  Returns:
    (N, h, w) float64 images.
  """
  out = []
  for img in images:
    x = local_contrast_normalize(to_gray(img))
    x = (x - np.float32(np.mean(x, dtype=np.float64))).astype(np.float64)
    if edge_taper_filter_size:
      s = edge_taper_filter_size
      x = edge_taper(x, gaussian_kernel(s, s / 3))
    out.append(x)
  shapes = {x.shape for x in out}
  if len(shapes) != 1:
    raise ValueError(f"images have different sizes {sorted(shapes)}; resize them to one size "
                     "(the released sets are 100x100).")
  return np.stack(out)


def load_image_folder(path: str, num_images: int | None = 10, **kwargs) -> np.ndarray:
  """Images of a folder, in file-name order (MATLAB `dir`), prepared by `prepare_images`.

  Raises:
    FileNotFoundError: with instructions when the folder or its images are missing.
  """
  how = ("put 10 images of 100x100 pixels (grayscale or RGB) in the folder, e.g. the "
         "fruit_100_100 or city_100_100 folder of the official CoGD archive "
         "(CoGD-master.zip, CSC/datasets/Images/), or use images='skimage'")
  if not os.path.isdir(path):
    raise FileNotFoundError(f"image folder {path!r} does not exist: {how}.")
  files = sorted(f for f in os.listdir(path) if f.lower().endswith(_IMAGE_EXTS))
  if not files:
    raise FileNotFoundError(f"no image files ({', '.join(_IMAGE_EXTS)}) in {path!r}: {how}.")
  from skimage import io  # local: only needed for folders
  files = files[:num_images] if num_images else files
  return prepare_images([io.imread(os.path.join(path, f)) for f in files], **kwargs)


def skimage_photos(num_images: int = 10, size: int = 100, **kwargs) -> np.ndarray:
  """Offline default: scikit-image's bundled photographs, centre-cropped, resized to size^2.

  Each photograph is cropped to its central square, resized with anti-aliasing and rounded to
  uint8 (as if saved as an image file), then prepared by `prepare_images`.
  """
  from skimage import data as skdata
  from skimage import transform
  if not 1 <= num_images <= len(SKIMAGE_PHOTOS):
    raise ValueError(f"num_images must be in 1..{len(SKIMAGE_PHOTOS)}, got {num_images}; use "
                     "an image folder for more.")
  imgs = []
  for name in SKIMAGE_PHOTOS[:num_images]:
    img = np.asarray(getattr(skdata, name)())
    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    img = transform.resize(img, (size, size) + img.shape[2:], anti_aliasing=True,
                           preserve_range=True)
    imgs.append(np.clip(np.round(img), 0, 255).astype(np.uint8))
  return prepare_images(imgs, **kwargs)


def inpainting_mask(shape, keep: float = 0.75, seed: int = 0) -> np.ndarray:
  """`MtM(rand(size(MtM)) < 0.75) = 1`: each pixel kept with probability `keep`."""
  return (np.random.default_rng(seed).random(shape) < keep).astype(np.float64)
