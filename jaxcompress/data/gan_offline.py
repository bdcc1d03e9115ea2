"""Offline image-translation sets from scikit-image's sample photographs (no download).

Real photographs shipped inside scikit-image (`skimage.data`), split by photograph:
  * domain A photos: train astronaut, chelsea, immunohistochemistry; test the left view of
    `stereo_motorcycle`;
  * domain B photos: train coffee, rocket, retina; test the right view of `stereo_motorcycle`.

Examples are random square crops at several scales (side = 0.3, 0.45, 0.6 or 0.8 of the
photo's shorter side, uniformly placed, photos taken in turn), bicubic-resized (antialiased)
to `image_size` (64). Train and test crops come from disjoint photographs and seeds.

  * `unpaired` ("gan_offline_unpaired", a CycleGAN task): A = crops of the A photos; B = crops of
    the B photos passed through `winter` (a fixed colour map, so the A -> B mapping is known:
    `winter(A)` is the ideal translation of an A crop).
  * `paired` ("gan_offline_paired", an edges -> photo Pix2Pix task like edges2shoes): B = a crop
    of any of the photos (train: the A and B train photos; test: both motorcycle views),
    A = its `edge_map`.

Each (split, size, count, seed) set is built once per process (a few seconds) and held in
memory as uint8 arrays.
"""
from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from jaxcompress.data import gan
from jaxcompress.errors import ConfigError

TRAIN_A = ("astronaut", "chelsea", "immunohistochemistry")
TRAIN_B = ("coffee", "rocket", "retina")
TEST_A = ("motorcycle_left",)
TEST_B = ("motorcycle_right",)
CROP_FRACTIONS = (0.3, 0.45, 0.6, 0.8)
# Crops per domain when `num_examples` is not given.
DEFAULT_SIZES = {"train": 1024, "test": 64}

# `winter`: Rec. 601 luma weights, saturation kept, per-channel (R, G, B) gains, and the share
# of the distance to white that remains after brightening.
LUMA = (0.299, 0.587, 0.114)
WINTER_SATURATION = 0.4
WINTER_TINT = (0.9, 0.97, 1.1)
WINTER_LIFT = 0.75
EDGE_SIGMA = 1.5


def photo(name: str) -> np.ndarray:
  """A scikit-image sample photograph as (H, W, 3) uint8 ("motorcycle_left"/"_right": the
  stereo pair's views)."""
  from skimage import data as skdata  # pylint: disable=g-import-not-at-top
  if name.startswith("motorcycle_"):
    left, right, _ = skdata.stereo_motorcycle()
    return gan.to_rgb(left if name == "motorcycle_left" else right)
  return gan.to_rgb(getattr(skdata, name)())


def winter(image: np.ndarray) -> np.ndarray:
  """The fixed "winter" colour map of domain B, per pixel on x = image / 255:

    gray = 0.299 R + 0.587 G + 0.114 B            (desaturate: keep 40 % of the colour)
    x1 = gray + 0.4 (x - gray)
    x2 = x1 * (0.9, 0.97, 1.1)                     (cool tint: less red, more blue)
    y = 1 - 0.75 (1 - x2)                          (brighten: a quarter of the way to white)

  Args:
    image: (..., 3) uint8.

  Returns:
    round(255 * clip(y, 0, 1)) as uint8.
  """
  x = np.asarray(image, np.float32) / 255.0
  gray = (x @ np.asarray(LUMA, np.float32))[..., None]
  x = gray + WINTER_SATURATION * (x - gray)
  x = x * np.asarray(WINTER_TINT, np.float32)
  y = 1.0 - WINTER_LIFT * (1.0 - x)
  return np.round(255.0 * np.clip(y, 0.0, 1.0)).astype(np.uint8)


def edge_map(image: np.ndarray, sigma: float = EDGE_SIGMA) -> np.ndarray:
  """Canny edges of the grayscale image as dark lines on white, 3 channels (the look of the
  edges2shoes inputs): 0 on an edge pixel, 255 elsewhere.

  Args:
    image: (H, W, 3) uint8.
    sigma: Gaussian smoothing of `skimage.feature.canny`.

  Returns:
    (H, W, 3) uint8.
  """
  from skimage import color, feature  # pylint: disable=g-import-not-at-top
  edges = feature.canny(color.rgb2gray(image), sigma=sigma)
  return np.repeat(np.where(edges, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def random_crops(photos: tuple[str, ...], num: int, size: int, seed: list[int]) -> np.ndarray:
  """`num` crops (module docstring) of the named photos, photo i % len(photos) for crop i.

  Returns:
    (num, size, size, 3) uint8.
  """
  images = [Image.fromarray(photo(n)) for n in photos]
  rng = np.random.default_rng(seed)
  out = np.empty((num, size, size, 3), np.uint8)
  for i in range(num):
    im = images[i % len(images)]
    w, h = im.size
    side = int(round(CROP_FRACTIONS[rng.integers(len(CROP_FRACTIONS))] * min(w, h)))
    x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    out[i] = np.asarray(im.resize((size, size), Image.BICUBIC, box=(x, y, x + side, y + side)))
  return out


def _split(split: str) -> str:
  if split.startswith("train"):
    return "train"
  if split in ("test", "validation", "val"):
    return "test"
  raise ConfigError(f"The offline image-translation sets have splits 'train' and 'test', "
                    f"not {split!r}.")


def _frozen(array: np.ndarray) -> np.ndarray:
  array.setflags(write=False)
  return array


@functools.lru_cache(maxsize=8)
def _unpaired(split: str, num: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  test = split == "test"
  a = random_crops(TEST_A if test else TRAIN_A, num, size, [seed, 0, test])
  b = winter(random_crops(TEST_B if test else TRAIN_B, num, size, [seed, 1, test]))
  return _frozen(a), _frozen(b)


@functools.lru_cache(maxsize=8)
def _paired(split: str, num: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  test = split == "test"
  photos = TEST_A + TEST_B if test else TRAIN_A + TRAIN_B
  b = random_crops(photos, num, size, [seed, 2, test])
  a = np.stack([edge_map(x) for x in b])
  return _frozen(a), _frozen(b)


def _count(split: str, num_examples: int | None, num_test_examples: int | None,
           image_size: int) -> int:
  num = num_examples if split == "train" else num_test_examples
  num = DEFAULT_SIZES[split] if num is None else int(num)
  if num < 1 or image_size < 8:
    raise ConfigError(f"Offline image-translation sets need num_examples >= 1 and image_size "
                      f">= 8, got {num} and {image_size}.")
  return num


def unpaired(split: str, num_examples: int | None = None, num_test_examples: int | None = None,
             image_size: int = 64, seed: int = 0, length: str = "max") -> gan.UnpairedSource:
  """The offline unpaired photo -> winter set ("gan_offline_unpaired").

  Args:
    split: "train" or "test".
    num_examples: train crops per domain (default 1024).
    num_test_examples: test crops per domain (default 64).
    image_size: crop side in pixels.
    seed: crop seed.
    length: as `gan.UnpairedSource`.

  Returns:
    An unpaired source over uint8 (image_size, image_size, 3) crops.
  """
  split = _split(split)
  num = _count(split, num_examples, num_test_examples, image_size)
  a, b = _unpaired(split, num, int(image_size), int(seed))
  # The map from A to B is known (`winter`), so held-out A crops carry their ideal translation.
  reference = _frozen(winter(a)) if split == "test" else None
  return gan.UnpairedSource(a, b, length, reference=reference)


def paired(split: str, num_examples: int | None = None, num_test_examples: int | None = None,
           image_size: int = 64, seed: int = 0) -> gan.PairedSource:
  """The offline paired edges -> photo set ("gan_offline_paired"): A = edge map, B = photo.

  Args:
    split: "train" or "test".
    num_examples: train pairs (default 1024).
    num_test_examples: test pairs (default 64).
    image_size: crop side in pixels.
    seed: crop seed.

  Returns:
    A paired source over uint8 (image_size, image_size, 3) images.
  """
  split = _split(split)
  num = _count(split, num_examples, num_test_examples, image_size)
  a, b = _paired(split, num, int(image_size), int(seed))
  return gan.PairedSource(a, b)
