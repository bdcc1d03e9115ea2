"""ImageNet-style crops as a named per-example transform ("imagenet_crop").

Train: Inception random-resized crop (area 8-100 %, aspect 3/4-4/3, 10 tries then a centre
crop), resized to `size` with bilinear filtering (with `config.data.flip` for the horizontal flip:
torchvision's `RandomResizedCrop` + `RandomHorizontalFlip`), which the official PyTorch recipes of RBNN and the
ImageNet ResNets use. Eval: resize the shorter side to `resize` (256), centre crop `size` (224).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image

from jaxcompress.data import transforms


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  pil = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
  out = np.asarray(pil.resize((width, height), Image.BILINEAR))
  return out[..., None] if out.ndim == 2 else out


def random_resized_crop(image: np.ndarray, rng: np.random.Generator, size: int,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
  """torchvision's RandomResizedCrop on an (H, W, C) uint8 array."""
  h, w = image.shape[:2]
  area = h * w
  for _ in range(10):
    target = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
    if 0 < cw <= w and 0 < ch <= h:
      top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
      return _resize(image[top:top + ch, left:left + cw], size, size)
  # Fallback: the largest centre crop within the aspect-ratio bounds.
  in_ratio = w / h
  if in_ratio < ratio[0]:
    cw, ch = w, int(round(w / ratio[0]))
  elif in_ratio > ratio[1]:
    ch, cw = h, int(round(h * ratio[1]))
  else:
    cw, ch = w, h
  top, left = (h - ch) // 2, (w - cw) // 2
  return _resize(image[top:top + ch, left:left + cw], size, size)


def resize_center_crop(image: np.ndarray, size: int, resize: int) -> np.ndarray:
  """Resize the shorter side to `resize`, then take the central `size` x `size` crop."""
  h, w = image.shape[:2]
  scale = resize / min(h, w)
  nh, nw = max(size, int(round(h * scale))), max(size, int(round(w * scale)))
  image = _resize(image, nh, nw)
  top, left = (nh - size) // 2, (nw - size) // 2
  return image[top:top + size, left:left + size]


@transforms.register("imagenet_crop")
def imagenet_crop(train: bool, size: int = 224, resize: int = 256):
  """Factory of the ImageNet crop transform (see module docstring)."""
  def apply(example: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    image = np.asarray(example["image"])
    if train:
      image = random_resized_crop(image, rng, size)  # flips come from config.data.flip
    else:
      image = resize_center_crop(image, size, resize)
    return {**example, "image": np.ascontiguousarray(image)}
  return apply
