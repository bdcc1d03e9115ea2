"""Per-example image augmentation in NumPy (runs inside grain workers, no TensorFlow).

Images are channel-last (H, W, C); video clips are (T, H, W, C) and every clip augmentation
applies the same random decision (crop offset, flip, erased rectangle) to all frames. Every
function draws from the `np.random.Generator` it is given, so the pipeline's per-position
generator makes each example's augmentation a pure function of its stream position.
`get_augmentation` and `compose` build named augmentations from config entries such as
`[("crop", {"padding": 4}), ("flip", {}), ("random_erasing", {"probability": 0.5})]`.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from jaxcompress.errors import ConfigError


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


def random_erasing(image: np.ndarray, rng: np.random.Generator, probability: float = 0.5,
                   area: tuple[float, float] = (0.02, 0.4), aspect: float = 0.3,
                   value: float | Sequence[float] = (0.4914, 0.4822, 0.4465)) -> np.ndarray:
  """Random Erasing (Zhong et al., arXiv:1708.04896, Alg. 1) as the re-identification code runs it.

  Follows `RandomErasing` of open-reid / MEB-Net (`mebnet/utils/data/transforms.py`): with
  probability `probability`, up to 100 attempts draw a target area S_e ~ U(sl, sh) * H * W and
  an aspect ratio r_e ~ U(r1, 1 / r1), set h = round(sqrt(S_e * r_e)), w = round(sqrt(S_e / r_e))
  and accept the first with w < W and h < H; the top-left corner is uniform over the positions
  where the h x w rectangle fits, and the rectangle is filled with `value` per channel. When no
  attempt fits, the image is returned unchanged.

  Units: `value` is in [0, 1] pixel units (the default is the CIFAR-10 mean). Float images are
  filled with `value` as given, so they must be in the same units as `value`; integer images are
  taken as [0, 255] pixels (the raw images the pipeline augments before `normalize`) and filled
  with round(255 * value). The re-identification recipes erase after `Normalize` with
  value = the ImageNet mean, i.e. a fill v_c in normalised units; the same pixels come out of
  passing value_c = mean_c + v_c * std_c here for a raw image.

  A leading time axis (T, H, W, C) erases the same rectangle in every frame.

  Args:
    image: (H, W, C) or (T, H, W, C) array.
    rng: NumPy generator.
    probability: chance of erasing at all.
    area: (sl, sh), the erased fraction of the image area.
    aspect: r1, the smallest aspect ratio h / w (the largest is 1 / r1).
    value: one fill value for every channel, or one per channel; a 1-channel image uses the
      first entry (as the reference does).

  Returns:
    The image, or a copy with one rectangle erased.
  """
  _check_erasing(probability, area, aspect)
  # The reference erases when U(0, 1) < probability.
  if rng.random() >= probability:
    return image
  height, width, channels = image.shape[-3:]
  fill = _fill_value(value, channels, image.dtype)
  for _ in range(100):
    target = rng.uniform(area[0], area[1]) * height * width
    ratio = rng.uniform(aspect, 1.0 / aspect)
    h = int(round(math.sqrt(target * ratio)))
    w = int(round(math.sqrt(target / ratio)))
    if w < width and h < height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      out = np.array(image, copy=True)
      out[..., top:top + h, left:left + w, :] = fill
      return out
  return image


def _check_erasing(probability: float, area: Sequence[float], aspect: float) -> None:
  if not 0.0 <= probability <= 1.0:
    raise ConfigError(f"random_erasing probability must be in [0, 1], got {probability}.")
  if len(area) != 2 or not 0.0 < area[0] <= area[1] <= 1.0:
    raise ConfigError(f"random_erasing area must be (sl, sh) with 0 < sl <= sh <= 1, got {area}.")
  if not 0.0 < aspect <= 1.0:
    raise ConfigError(f"random_erasing aspect (r1, the smallest h/w ratio) must be in (0, 1], "
                      f"got {aspect}.")


def _fill_value(value: float | Sequence[float], channels: int, dtype: np.dtype) -> np.ndarray:
  """Per-channel fill in the image's units (integer images are [0, 255] pixels)."""
  values = np.atleast_1d(np.asarray(value, np.float64))
  if values.size == 1 or channels == 1:
    values = np.full(channels, values[0])
  elif values.size != channels:
    raise ConfigError(f"random_erasing value has {values.size} entries for a {channels}-channel "
                      "image; give one value or one per channel.")
  if np.issubdtype(dtype, np.integer):
    values = np.round(values * 255.0)
  return values.astype(dtype)


def _size_pair(size: int | Sequence[int]) -> tuple[int, int]:
  if isinstance(size, (int, np.integer)):
    return int(size), int(size)
  h, w = size
  return int(h), int(w)


def random_crop_clip(clip: np.ndarray, rng: np.random.Generator,
                     size: int | Sequence[int]) -> np.ndarray:
  """Crops every frame to `size` at one random offset (no padding; C3D/TSM-style clip crops).

  Args:
    clip: (T, H, W, C) clip, or a single (H, W, C) image.
    rng: NumPy generator.
    size: output side, or (height, width).

  Returns:
    The (T, h, w, C) crop (same offsets in every frame).

  Raises:
    ConfigError: the crop is larger than the frames.
  """
  h, w = _size_pair(size)
  height, width = clip.shape[-3:-1]
  if not (0 < h <= height and 0 < w <= width):
    raise ConfigError(f"Random crop size {(h, w)} does not fit frames of {(height, width)}; "
                      "lower the crop size.")
  top = int(rng.integers(0, height - h + 1))
  left = int(rng.integers(0, width - w + 1))
  return clip[..., top:top + h, left:left + w, :]


def _pad_crop_clip(clip: np.ndarray, rng: np.random.Generator, padding: int) -> np.ndarray:
  """`random_crop` on every frame with one offset (the same draws as `random_crop`)."""
  if padding <= 0:
    return clip
  h, w = clip.shape[-3:-1]
  pad = [(0, 0)] * (clip.ndim - 3) + [(padding, padding), (padding, padding), (0, 0)]
  padded = np.pad(clip, pad)
  top, left = rng.integers(0, 2 * padding + 1, size=2)
  return padded[..., top:top + h, left:left + w, :]


def _flip_clip(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """`random_flip` on every frame with one decision."""
  return clip[..., ::-1, :] if rng.random() < 0.5 else clip


def augment_clip(clip: np.ndarray, rng: np.random.Generator, crop_padding: int = 0,
                 flip: bool = False) -> np.ndarray:
  """`augment` for a (T, H, W, C) clip: one crop offset and one flip decision for all frames.

  The draws are those of `augment`, so a one-frame clip is augmented exactly like its frame.

  Args:
    clip: (T, H, W, C) array.
    rng: NumPy generator.
    crop_padding: zero padding per side before the random crop (0 = no crop).
    flip: mirror left-right with probability 1/2.

  Returns:
    The augmented (T, H, W, C) clip.
  """
  clip = _pad_crop_clip(clip, rng, crop_padding)
  if flip:
    clip = _flip_clip(clip, rng)
  return clip


def _cutout_clip(clip: np.ndarray, rng: np.random.Generator, length: int) -> np.ndarray:
  """`cutout` with one square (the same draws) in every frame."""
  if length <= 0:
    return clip
  h, w = clip.shape[-3:-1]
  y, x = int(rng.integers(h)), int(rng.integers(w))
  out = np.array(clip, copy=True)
  out[..., np.clip(y - length // 2, 0, h):np.clip(y + length // 2, 0, h),
      np.clip(x - length // 2, 0, w):np.clip(x + length // 2, 0, w), :] = 0
  return out


Augmentation = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _by_rank(image_fn: Augmentation, clip_fn: Augmentation, name: str) -> Augmentation:
  """Dispatches (H, W, C) images to `image_fn` and (T, H, W, C) clips to `clip_fn`."""
  def apply(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
      return image_fn(x, rng)
    if x.ndim == 4:
      return clip_fn(x, rng)
    raise ConfigError(f"Augmentation {name!r} takes (H, W, C) images or (T, H, W, C) clips, got "
                      f"shape {x.shape}; remove it from the stream's augment list.")
  return apply


def _nonnegative_int(name: str, key: str, v: Any) -> int:
  if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
    raise ConfigError(f"Augmentation {name!r}: {key} must be a non-negative integer, got {v!r}.")
  return int(v)


def _crop(padding: int = 0) -> Augmentation:
  padding = _nonnegative_int("crop", "padding", padding)
  return _by_rank(lambda x, rng: random_crop(x, rng, padding),
                  lambda x, rng: _pad_crop_clip(x, rng, padding), "crop")


def _random_crop(size: int | Sequence[int]) -> Augmentation:
  fn = lambda x, rng: random_crop_clip(x, rng, size)  # noqa: E731  (rank-agnostic)
  return _by_rank(fn, fn, "random_crop")


def _flip() -> Augmentation:
  return _by_rank(random_flip, _flip_clip, "flip")


def _random_erasing(**kwargs: Any) -> Augmentation:
  defaults = dict(probability=0.5, area=(0.02, 0.4), aspect=0.3)
  merged = {**defaults, **kwargs}
  _check_erasing(merged["probability"], tuple(merged["area"]), merged["aspect"])
  fn = lambda x, rng: random_erasing(x, rng, **kwargs)  # noqa: E731  (rank-agnostic)
  return _by_rank(fn, fn, "random_erasing")


def _cutout(length: int) -> Augmentation:
  length = _nonnegative_int("cutout", "length", length)
  return _by_rank(lambda x, rng: cutout(x, rng, length),
                  lambda x, rng: _cutout_clip(x, rng, length), "cutout")


_AUGMENTATIONS: dict[str, Callable[..., Augmentation]] = {
    "crop": _crop, "random_crop": _random_crop, "flip": _flip,
    "random_erasing": _random_erasing, "cutout": _cutout}


def register_augmentation(name: str) -> Callable[[Callable[..., Augmentation]],
                                                 Callable[..., Augmentation]]:
  """Registers a factory `(**kwargs) -> (image, rng) -> image` under `name`."""
  def wrap(factory: Callable[..., Augmentation]) -> Callable[..., Augmentation]:
    _AUGMENTATIONS[name] = factory
    return factory
  return wrap


def augmentation_names() -> list[str]:
  """All augmentation names known to the registry."""
  return sorted(_AUGMENTATIONS)


def get_augmentation(name: str, **kwargs: Any) -> Augmentation:
  """The named per-example augmentation, built with `kwargs`.

  Known names: "crop" (`padding`: zero-pad and crop back, the CIFAR recipe), "random_crop"
  (`size`: crop to a smaller size), "flip", "random_erasing" (the `random_erasing` arguments),
  "cutout" (`length`). The result maps (H, W, C) images and (T, H, W, C) clips; clips get one
  random decision for all frames.

  Args:
    name: augmentation name.
    **kwargs: its parameters.

  Returns:
    A function `(image, rng) -> image`.

  Raises:
    ConfigError: unknown name or bad parameters.
  """
  if name not in _AUGMENTATIONS:
    raise ConfigError(f"Unknown augmentation {name!r}; known: {augmentation_names()}.")
  try:
    return _AUGMENTATIONS[name](**kwargs)
  except TypeError as e:
    raise ConfigError(f"Augmentation {name!r} does not accept arguments {sorted(kwargs)}: "
                      f"{e}.") from e


AugmentationConfig = str | tuple[str, Mapping[str, Any]] | Mapping[str, Any]


def compose(names_or_configs: Sequence[AugmentationConfig] | None) -> Augmentation:
  """Chains named augmentations in the order listed.

  `compose([("crop", {"padding": 4}), ("flip", {})])` draws exactly what
  `augment(image, rng, crop_padding=4, flip=True)` draws.

  Args:
    names_or_configs: entries that are a name ("flip"), a (name, kwargs) pair, or a mapping
      with a "name" key and the kwargs beside it ({"name": "cutout", "length": 16}); None or
      empty = identity.

  Returns:
    A function `(image, rng) -> image`.

  Raises:
    ConfigError: a malformed entry, unknown name or bad parameters.
  """
  fns = []
  for entry in names_or_configs or ():
    if isinstance(entry, str):
      fns.append(get_augmentation(entry))
    elif isinstance(entry, Mapping):
      kwargs = dict(entry)
      if "name" not in kwargs:
        raise ConfigError(f"Augmentation entry {entry!r} has no 'name'; write e.g. "
                          "{'name': 'flip'}.")
      fns.append(get_augmentation(kwargs.pop("name"), **kwargs))
    elif (isinstance(entry, Sequence) and len(entry) == 2 and isinstance(entry[0], str)
          and isinstance(entry[1], Mapping)):
      fns.append(get_augmentation(entry[0], **dict(entry[1])))
    else:
      raise ConfigError(f"Augmentation entry {entry!r} is not a name, a (name, kwargs) pair or a "
                        "mapping with a 'name'.")

  def apply(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    for fn in fns:
      image = fn(image, rng)
    return image
  return apply
