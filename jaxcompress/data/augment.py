"""Per-example image augmentation in NumPy (runs inside grain workers, no TensorFlow)."""
from __future__ import annotations

import numpy as np


def random_crop(image: np.ndarray, rng: np.random.Generator, padding: int) -> np.ndarray:
  """Zero-pads `padding` pixels on each side and crops back at a random offset (CIFAR recipe).

  Args:
    image: (H, W, C) array.
    rng: NumPy generator.
    padding: pixels of zero padding per side; 0 returns the image unchanged.

  Returns:
    An (H, W, C) crop.
  """
  if padding <= 0:
    return image
  h, w = image.shape[:2]
  padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  top, left = rng.integers(0, 2 * padding + 1, size=2)
  return padded[top:top + h, left:left + w]


def random_flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Mirrors the image left-right with probability 1/2."""
  return image[:, ::-1] if rng.random() < 0.5 else image


def augment(image: np.ndarray, rng: np.random.Generator, *, crop_padding: int = 0,
            flip: bool = False) -> np.ndarray:
  """Applies the configured augmentations in the standard order (crop, then flip)."""
  image = random_crop(image, rng, crop_padding)
  if flip:
    image = random_flip(image, rng)
  return image


def normalize(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
  """uint8 [0, 255] images to float32 `(x / 255 - mean) / std` per channel."""
  x = images.astype(np.float32) / 255.0
  return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def cutout(image: np.ndarray, rng: np.random.Generator, length: int) -> np.ndarray:
  """Cutout (DeVries & Taylor, arXiv 1708.04552) as DARTS `utils.Cutout(length)`.

  A length x length square centred at a uniform pixel (y, x), clipped at the border
  (rows clip(y - length//2, 0, H) : clip(y + length//2, 0, H), same for columns), is set to 0.
  DARTS applies it after normalisation; `jaxcompress.methods.nas_eval.cutout_batch` is the
  on-device version used in training.

  Args:
    image: (H, W, C) array.
    rng: NumPy generator.
    length: side of the square; 0 returns the image unchanged.

  Returns:
    A copy of the image with the square zeroed.
  """
  if length <= 0:
    return image
  h, w = image.shape[:2]
  y, x = int(rng.integers(h)), int(rng.integers(w))
  out = np.array(image, copy=True)
  out[np.clip(y - length // 2, 0, h):np.clip(y + length // 2, 0, h),
      np.clip(x - length // 2, 0, w):np.clip(x + length // 2, 0, w)] = 0
  return out
