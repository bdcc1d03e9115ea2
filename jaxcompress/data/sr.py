"""Super-resolution data: paired LR/HR sources and the `sr_patch` transform (PAMS, EDSR, RDN).

Every source is a random-access sequence of `{"lr": uint8 (h, w, 3), "hr": uint8 (h*s, w*s, 3)}`
examples (`len()`, `[i]`), registered with `sources.register` so configs name them:

  * `div2k` (TFDS `div2k/bicubic_x{2,3,4}`, splits "train" = DIV2K 1-800, "validation" =
    801-900): read through `tfds.data_source` (ArrayRecord). When it is not prepared, the
    `DatasetNotFoundError` carries the `tfds build` command. The TFDS directory is
    `config.data.source_kwargs.data_dir` (`sources.get` forwards `config.data.data_dir` only to
    its built-in TFDS sets).
  * `sr_benchmark` (Set5, Set14, B100, Urban100, or any folder of the same layout; the split is
    the set name). Layout under `root`, as
    EDSR-PyTorch's `benchmark/` folder:
        <root>/<name>/HR/<image>.png
        <root>/<name>/LR_bicubic/X<scale>/<image>x<scale>.png     (optional)
    `root` is `source_kwargs.root` (or `source_kwargs.data_dir`, then $SR_BENCHMARK_DIR).
    HR images are modcropped to a multiple of the scale; without the LR folder the LR images are
    made with the MATLAB bicubic `imresize(hr, 1/scale)` (as the published LR sets were).
    Grayscale images are repeated to 3 channels (EDSR-PyTorch `set_channel`).
  * `sr_offline` (the offline default): real photographs shipped inside scikit-image
    (`skimage.data`), split by image: train = astronaut, rocket, immunohistochemistry,
    hubble_deep_field, motorcycle (left view of `stereo_motorcycle`); test = chelsea, coffee.
    HR = the photo modcropped to the scale; LR = MATLAB bicubic `imresize(hr, 1/scale)` computed
    once per (image, scale) and cached in memory for the process.

`repeat` (train sources): each image appears `repeat` times per epoch, as EDSR-PyTorch's
`--test_every` repetition of DIV2K (an "epoch" = `repeat * n_images / batch` steps).

Transform `sr_patch` (`config.data.transform = "sr_patch"`):
  * train: a random LR patch of `patch_size // scale` pixels and the aligned HR patch of
    `patch_size` pixels (HR origin = scale * LR origin), then random horizontal flip, vertical
    flip and transpose (together: the 8 flips/90-degree rotations of EDSR-PyTorch `augment`).
    The paper's patch sizes: EDSR 192 HR (48 LR at x4), RDN 96 HR at x4.
  * eval: a deterministic center crop of `eval_patch_size` HR pixels (default `patch_size`), so
    eval examples share one shape and batch. The in-training eval PSNR is therefore measured on
    these crops; the paper-protocol full-image PSNR/SSIM (MATLAB Y channel, shave = scale) is
    computed by `jaxcompress.evals.sr.evaluate_sr`.

Example:
  >>> src = sources.get("sr_offline", "train", scale=2)
  >>> fn = transforms.get("sr_patch", train=True, patch_size=96)
  >>> ex = fn(src[0], np.random.default_rng(0))   # {"lr": (48, 48, 3), "hr": (96, 96, 3)}
"""
from __future__ import annotations

import functools
import glob
import os
from typing import Any, Callable

import numpy as np

from jaxcompress.data import sources, transforms
from jaxcompress.data.imresize import imresize
from jaxcompress.errors import ConfigError, DatasetNotFoundError

OFFLINE_TRAIN = ("astronaut", "rocket", "immunohistochemistry", "hubble_deep_field", "motorcycle")
OFFLINE_TEST = ("chelsea", "coffee")
BENCHMARKS = ("Set5", "Set14", "B100", "Urban100")


def to_rgb(img: np.ndarray) -> np.ndarray:
  """(H, W) or (H, W, 1|3|4) uint8 -> (H, W, 3) (gray repeated, alpha dropped)."""
  img = np.asarray(img)
  if img.ndim == 2:
    img = img[..., None]
  if img.shape[-1] == 1:
    img = np.repeat(img, 3, axis=-1)
  return np.ascontiguousarray(img[..., :3])


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
  """Crops H and W down to multiples of `scale` (top-left kept, as MATLAB `modcrop`)."""
  h, w = img.shape[:2]
  return img[:h - h % scale, :w - w % scale]


def make_pair(hr: np.ndarray, scale: int) -> dict[str, np.ndarray]:
  """{"lr", "hr"} from an HR image: modcrop, then MATLAB bicubic `imresize(hr, 1/scale)`."""
  hr = modcrop(to_rgb(hr), scale)
  return {"lr": imresize(hr, 1.0 / scale), "hr": hr}


class PairSource:
  """LR/HR examples held in memory (a list of pairs), optionally repeated per epoch.

  Attributes:
    pairs: list of {"lr", "hr"} uint8 arrays.
    scale: the upscaling factor.
    names: image names (same order).
    repeat: times each pair appears in one pass.
  """

  def __init__(self, pairs: list[dict[str, np.ndarray]], scale: int,
               names: list[str] | None = None, repeat: int = 1):
    self.pairs, self.scale, self.repeat = pairs, scale, max(1, int(repeat))
    self.names = list(names) if names is not None else [str(i) for i in range(len(pairs))]

  def __len__(self) -> int:
    return len(self.pairs) * self.repeat

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not 0 <= index < len(self):
      raise IndexError(index)
    return dict(self.pairs[index % len(self.pairs)])


# ---------------------------------------------------------------------------------------------
# Offline: scikit-image's sample photographs.


def _skimage_photo(name: str) -> np.ndarray:
  from skimage import data as skdata  # pylint: disable=g-import-not-at-top
  if name == "motorcycle":
    return skdata.stereo_motorcycle()[0]
  return getattr(skdata, name)()


@functools.lru_cache(maxsize=None)
def _offline_pair(name: str, scale: int) -> dict[str, np.ndarray]:
  pair = make_pair(_skimage_photo(name), scale)
  for v in pair.values():
    v.setflags(write=False)
  return pair


def sr_offline(split: str, scale: int = 4, repeat: int = 1,
               images: tuple[str, ...] | None = None) -> PairSource:
  """scikit-image's real photographs as an SR set (see the module docstring for the split).

  Args:
    split: "train" or "test" ("validation" is an alias of "test").
    scale: upscaling factor (2, 3, 4, ...).
    repeat: repetitions per pass (train; lets a batch exceed the 5 training images).
    images: override the image names (any `skimage.data` RGB photo, or "motorcycle").

  Returns:
    A PairSource.
  """
  if images is None:
    if split == "train":
      images = OFFLINE_TRAIN
    elif split in ("test", "validation"):
      images = OFFLINE_TEST
    else:
      raise ConfigError(f"sr_offline has splits 'train' and 'test', not {split!r}.")
  images = tuple(images)
  return PairSource([_offline_pair(n, int(scale)) for n in images], int(scale), list(images),
                    repeat if split == "train" else 1)


# ---------------------------------------------------------------------------------------------
# Local benchmark folders (Set5, Set14, B100, Urban100).


def _read_image(path: str) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(path) as im:
    if im.mode not in ("RGB", "L"):
      im = im.convert("RGB")
    return to_rgb(np.asarray(im, dtype=np.uint8))


_IMAGE_EXTS = ("png", "bmp", "jpg", "jpeg", "tif", "tiff")


def _list_images(folder: str) -> list[str]:
  files = [f for ext in _IMAGE_EXTS for f in glob.glob(os.path.join(folder, f"*.{ext}"))]
  return sorted(set(files))


def _layout_error(root: str | None, name: str, scale: int, what: str) -> DatasetNotFoundError:
  return DatasetNotFoundError(
      f"Super-resolution benchmark {name!r} not found ({what}). Expected the EDSR-PyTorch layout:\n"
      f"  <root>/{name}/HR/<image>.png\n"
      f"  <root>/{name}/LR_bicubic/X{scale}/<image>x{scale}.png   (optional; made with MATLAB "
      f"bicubic imresize when absent)\nwith root = {root!r}. Set config.data.data_dir (or "
      f"config.data.source_kwargs.root) to the folder holding {', '.join(BENCHMARKS)}.")


def sr_benchmark(split: str, scale: int = 4, root: str | None = None,
                 data_dir: str | None = None) -> PairSource:
  """A benchmark set from a local folder (layout in the module docstring); split = set name.

  Args:
    split: the set's folder name ("Set5", "Set14", "B100", "Urban100", ...).
    scale: upscaling factor.
    root: folder holding the sets (default `data_dir`, then $SR_BENCHMARK_DIR).
    data_dir: `config.data.data_dir`, used when `root` is not given.

  Raises:
    DatasetNotFoundError: the folder or its HR images are missing (the message shows the layout);
      an LR image is missing or has the wrong size.
  """
  root = root or data_dir or os.environ.get("SR_BENCHMARK_DIR")
  if not root:
    raise _layout_error(root, split, scale, "no root folder given")
  hr_dir = os.path.join(root, split, "HR")
  hr_files = _list_images(hr_dir) if os.path.isdir(hr_dir) else []
  if not hr_files:
    raise _layout_error(root, split, scale, f"no images in {hr_dir}")
  lr_dir = os.path.join(root, split, "LR_bicubic", f"X{scale}")
  pairs, names = [], []
  for path in hr_files:
    stem, ext = os.path.splitext(os.path.basename(path))
    hr = modcrop(_read_image(path), scale)
    if os.path.isdir(lr_dir):
      candidates = [os.path.join(lr_dir, f"{stem}x{scale}{ext}"), os.path.join(lr_dir, stem + ext)]
      lr_path = next((c for c in candidates if os.path.exists(c)), None)
      if lr_path is None:
        raise _layout_error(root, split, scale, f"{candidates[0]} missing")
      lr = _read_image(lr_path)
      if lr.shape[0] * scale != hr.shape[0] or lr.shape[1] * scale != hr.shape[1]:
        raise DatasetNotFoundError(
            f"{lr_path} has shape {lr.shape[:2]}, expected HR {hr.shape[:2]} / {scale}. Delete "
            f"{lr_dir} to let the MATLAB bicubic imresize generate the LR images.")
    else:
      lr = imresize(hr, 1.0 / scale)
    pairs.append({"lr": lr, "hr": hr})
    names.append(stem)
  return PairSource(pairs, scale, names)


# ---------------------------------------------------------------------------------------------
# DIV2K through TFDS.


class Div2kSource:
  """DIV2K bicubic pairs from TFDS (`div2k/bicubic_x{scale}`), read with `tfds.data_source`.

  Args:
    split: "train" (800 images) or "validation" (100), or TFDS slicing ("train[:10]").
    scale: 2, 3 or 4.
    data_dir: TFDS data directory.
    repeat: repetitions per pass (EDSR-PyTorch: 1000 batches of 16 per "epoch" -> repeat 20).
  """

  def __init__(self, split: str, scale: int = 4, data_dir: str | None = None, repeat: int = 1):
    if scale not in (2, 3, 4):
      raise ConfigError(f"div2k has bicubic scales 2, 3 and 4, not {scale}.")
    name = f"div2k/bicubic_x{scale}"
    self.scale, self.repeat = scale, max(1, int(repeat))
    self._source = sources.open_tfds(
        name, split, data_dir,
        hint="Or train on the offline photographs: config.data.name = 'sr_offline'.")

  def __len__(self) -> int:
    return len(self._source) * self.repeat

  def __getitem__(self, index: int) -> dict[str, Any]:
    ex = self._source[index % len(self._source)]
    lr, hr = to_rgb(np.asarray(ex["lr"])), to_rgb(np.asarray(ex["hr"]))
    s = self.scale
    return {"lr": lr, "hr": hr[:lr.shape[0] * s, :lr.shape[1] * s]}


def div2k(split: str, scale: int = 4, data_dir: str | None = None, repeat: int = 1) -> Div2kSource:
  """`Div2kSource` builder registered as the `div2k` source."""
  return Div2kSource(split, scale=scale, data_dir=data_dir, repeat=repeat if split.startswith(
      "train") else 1)


sources.register("div2k", div2k)
sources.register("sr_benchmark", sr_benchmark)
sources.register("sr_offline", sr_offline)


# ---------------------------------------------------------------------------------------------
# Transforms.


def _scale_of(lr: np.ndarray, hr: np.ndarray) -> int:
  s = hr.shape[0] // lr.shape[0]
  if s < 1 or lr.shape[0] * s != hr.shape[0] or lr.shape[1] * s != hr.shape[1]:
    raise ConfigError(f"LR {lr.shape} and HR {hr.shape} are not an integer-scale pair.")
  return s


def _check_patch(patch_size: int, scale: int, lr_shape: tuple[int, ...]) -> int:
  if patch_size % scale:
    raise ConfigError(f"sr_patch patch_size {patch_size} is not a multiple of the scale {scale}.")
  lp = patch_size // scale
  if lr_shape[0] < lp or lr_shape[1] < lp:
    raise ConfigError(f"Image with LR size {lr_shape[:2]} is smaller than the LR patch {lp} "
                      f"(patch_size {patch_size} / scale {scale}); lower the patch size.")
  return lp


@transforms.register("sr_patch")
def sr_patch(train: bool, patch_size: int = 192, eval_patch_size: int | None = None,
             augment: bool = True) -> Callable[[dict[str, Any], np.random.Generator],
                                               dict[str, Any]]:
  """Aligned LR/HR patches (see the module docstring).

  Args:
    train: random patches and augmentation (True) or a center crop (False).
    patch_size: HR patch side (192 for EDSR, 96 for RDN at x4 in PAMS).
    eval_patch_size: HR side of the eval center crop (default `patch_size`).
    augment: random flips / transposes in training.

  Returns:
    `fn(example, rng) -> {"lr", "hr"}` (other keys dropped).
  """
  eval_size = int(eval_patch_size or patch_size)

  def train_fn(example: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    lr, hr = np.asarray(example["lr"]), np.asarray(example["hr"])
    s = _scale_of(lr, hr)
    lp = _check_patch(patch_size, s, lr.shape)
    iy = int(rng.integers(0, lr.shape[0] - lp + 1))
    ix = int(rng.integers(0, lr.shape[1] - lp + 1))
    lr = lr[iy:iy + lp, ix:ix + lp]
    hr = hr[iy * s:(iy + lp) * s, ix * s:(ix + lp) * s]
    if augment:
      hflip, vflip, rot = rng.random(3) < 0.5
      if hflip:
        lr, hr = lr[:, ::-1], hr[:, ::-1]
      if vflip:
        lr, hr = lr[::-1], hr[::-1]
      if rot:
        lr, hr = lr.transpose(1, 0, 2), hr.transpose(1, 0, 2)
    return {"lr": np.ascontiguousarray(lr), "hr": np.ascontiguousarray(hr)}

  def eval_fn(example: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    del rng
    lr, hr = np.asarray(example["lr"]), np.asarray(example["hr"])
    s = _scale_of(lr, hr)
    lp = _check_patch(eval_size, s, lr.shape)
    iy, ix = (lr.shape[0] - lp) // 2, (lr.shape[1] - lp) // 2
    return {"lr": np.ascontiguousarray(lr[iy:iy + lp, ix:ix + lp]),
            "hr": np.ascontiguousarray(hr[iy * s:(iy + lp) * s, ix * s:(ix + lp) * s])}

  return train_fn if train else eval_fn
