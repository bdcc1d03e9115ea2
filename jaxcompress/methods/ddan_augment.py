"""The two training augmentations of DDAN's recipe that the image pipeline lacks, as named ones.

DDAN (Chen et al., AAAI 2021, arXiv 2007.13249; official `transmem.py`, PeixianChen/DDAN)
trains with torchvision's `RandomRotation(5)` and `ColorJitter(brightness=(0.5, 2.0),
saturation=(0.5, 2.0), hue=(-0.1, 0.1))` after pad-10 random crop and flip. Registered with
`jaxcompress.data.augment` when this module is imported (the "ddan" method imports it):

  * "ddan_rotation" (`degrees`): an angle ~ U(-degrees, degrees) (or U(lo, hi) for a pair),
    PIL `rotate` counter-clockwise about the centre, nearest neighbour, same size, zero fill
    (torchvision's `F.rotate(img, angle, resample=False, expand=False)`).
  * "ddan_color_jitter" (`brightness`, `saturation`, `hue` as (lo, hi) ranges or None): one
    factor per enabled adjustment drawn in the order brightness, saturation, hue, then the
    adjustments applied in a random order (torchvision's `ColorJitter.get_params`): brightness
    and saturation are PIL `ImageEnhance.Brightness` / `Color` blends with a black and a grey
    image, the hue shift adds `factor * 255` (truncated) to the uint8 H channel of PIL's HSV
    with wrap-around (torchvision's `adjust_hue`).

Both take uint8 (H, W, 3) images (the raw images the pipeline augments before normalising).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageEnhance

from jaxcompress.data import augment
from jaxcompress.errors import ConfigError


def _check_image(image: np.ndarray, name: str) -> None:
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise ConfigError(f"Augmentation {name!r} takes uint8 (H, W, 3) images, got shape "
                      f"{image.shape} and dtype {image.dtype}; list it before normalisation.")


def _range(value: Any, name: str, centre: float | None) -> tuple[float, float] | None:
  """(lo, hi) from a pair, or from a number v as (centre - v, centre + v)."""
  if value is None:
    return None
  if isinstance(value, (int, float)):
    if value < 0 or centre is None:
      raise ConfigError(f"{name} must be a (lo, hi) pair or a non-negative number, got {value}.")
    return (centre - float(value), centre + float(value))
  lo, hi = (float(v) for v in value)
  if lo > hi:
    raise ConfigError(f"{name} range must have lo <= hi, got {value}.")
  return lo, hi


def rotate(image: np.ndarray, rng: np.random.Generator, degrees: float | Sequence[float]
           ) -> np.ndarray:
  """`RandomRotation(degrees)`: PIL nearest-neighbour rotation by an angle from `rng`."""
  _check_image(image, "ddan_rotation")
  lo, hi = _range(degrees, "ddan_rotation degrees", 0.0)
  angle = float(rng.uniform(lo, hi))
  return np.asarray(Image.fromarray(image).rotate(angle, resample=Image.NEAREST, expand=False))


def _adjust_hue(img: Image.Image, factor: float) -> Image.Image:
  h, s, v = img.convert("HSV").split()
  shifted = (np.asarray(h, np.uint8).astype(np.int64) + int(factor * 255)) % 256
  return Image.merge("HSV", (Image.fromarray(shifted.astype(np.uint8), "L"), s, v)
                     ).convert("RGB")


def color_jitter(image: np.ndarray, rng: np.random.Generator,
                 brightness: Sequence[float] | None = None,
                 saturation: Sequence[float] | None = None,
                 hue: Sequence[float] | None = None) -> np.ndarray:
  """`ColorJitter(brightness, 0, saturation, hue)` with draws from `rng` (module docstring)."""
  _check_image(image, "ddan_color_jitter")
  ops = []
  b = _range(brightness, "brightness", 1.0)
  if b is not None:
    f_b = float(rng.uniform(*b))
    ops.append(lambda im: ImageEnhance.Brightness(im).enhance(f_b))
  s = _range(saturation, "saturation", 1.0)
  if s is not None:
    f_s = float(rng.uniform(*s))
    ops.append(lambda im: ImageEnhance.Color(im).enhance(f_s))
  h = _range(hue, "hue", 0.0)
  if h is not None:
    if h[0] < -0.5 or h[1] > 0.5:
      raise ConfigError(f"hue range must lie in [-0.5, 0.5], got {hue}.")
    f_h = float(rng.uniform(*h))
    ops.append(lambda im: _adjust_hue(im, f_h))
  img = Image.fromarray(image)
  for i in rng.permutation(len(ops)):
    img = ops[i](img)
  return np.asarray(img)


@augment.register_augmentation("ddan_rotation")
def _rotation(degrees: float | Sequence[float] = 5.0) -> augment.Augmentation:
  _range(degrees, "ddan_rotation degrees", 0.0)
  return lambda x, rng: rotate(x, rng, degrees)


@augment.register_augmentation("ddan_color_jitter")
def _color_jitter(brightness=None, saturation=None, hue=None) -> augment.Augmentation:
  return lambda x, rng: color_jitter(x, rng, brightness, saturation, hue)
