"""Image-to-image translation data: CycleGAN (unpaired) and Pix2Pix (paired) sources and the
`gan_resize_crop` transform, as in the official pytorch-CycleGAN-and-pix2pix `data/` package.
DMAD (arXiv 2011.08382) trains and compresses both on these sets.

Batches (with `config.data.transform = "gan_resize_crop"`): "A" and "B", float32 NHWC images in
[-1, 1] (the official `ToTensor` + `Normalize((0.5,) * 3, (0.5,) * 3)`), plus the engine's keys
("index" in training, "mask" in eval). Pix2Pix: "A" is the input, "B" the target.

Sources (registered with `sources.register`; `config.data.source_kwargs` holds their options.
`sources.get` keeps `config.data.data_dir` for its built-in TFDS sets, so the TFDS directory of
`cycle_gan` is $TFDS_DATA_DIR (default ~/tensorflow_datasets) and folder sets take
`source_kwargs.root`; the builders' `data_dir` argument serves direct calls):
  * `cycle_gan` (unpaired): TFDS `cycle_gan/<task>` (`task` = horse2zebra,
    summer2winter_yosemite, apple2orange, monet2photo, ...), split "train" = trainA + trainB,
    "test" = testA + testB, read through `tfds.data_source` (ArrayRecord, no TensorFlow).
  * `cyclegan_folder` (unpaired): the official unaligned layout under `root`:
        <root>/trainA/*.jpg  <root>/trainB/*.jpg  <root>/testA/*.jpg  <root>/testB/*.jpg
  * `pix2pix_folder` (paired): a dataset as distributed by the pix2pix authors (facades,
    cityscapes, maps, edges2shoes, edges2handbags, night2day):
        <root>/<split>/<name>.jpg    (split: train, val, test; searched recursively)
    each image the A|B concatenation side by side, cut at `w // 2` (official
    `aligned_dataset.py`). Cityscapes is stored photo|label: train it with `direction="BtoA"`.
  * `gan_offline_unpaired`, `gan_offline_paired`: scikit-image photographs, no download
    (`jaxcompress.data.gan_offline`).

Unpaired sources follow `unaligned_dataset.py`: length max(|A|, |B|), "A" = A[i % |A|]; "B" is
resolved by the transform: a uniformly random B image per example in training (its own crop
and flip), B[i % |B|] in eval or with `serial_batches`.

Example:
  >>> src = sources.get("cycle_gan", "train", task="horse2zebra")
  >>> fn = transforms.get("gan_resize_crop", train=True)
  >>> ex = fn(src[0], np.random.default_rng(0))  # {"A": (256, 256, 3), "B": (256, 256, 3)}
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from jaxcompress.data import sources, transforms
from jaxcompress.errors import ConfigError, DatasetNotFoundError

# TFDS `cycle_gan` configs (tensorflow_datasets/image_classification/cycle_gan.py).
CYCLE_GAN_TASKS = ("apple2orange", "summer2winter_yosemite", "horse2zebra", "monet2photo",
                   "cezanne2photo", "ukiyoe2photo", "vangogh2photo", "maps", "facades",
                   "iphone2dslr_flower")
# Official `data/image_folder.py` IMG_EXTENSIONS (lower case; matched case-insensitively).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")
_CYCLEGAN_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/datasets/{}.zip"
_PIX2PIX_URL = "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/{}.tar.gz"


def to_rgb(image: Any) -> np.ndarray:
  """(H, W) or (H, W, 1|3|4) uint8 -> (H, W, 3) uint8 (official `Image.convert('RGB')`)."""
  image = np.asarray(image, dtype=np.uint8)
  if image.ndim == 2:
    image = image[..., None]
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  return image[..., :3]


def read_rgb(path: str) -> np.ndarray:
  """An image file as (H, W, 3) uint8."""
  with Image.open(path) as im:
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def list_images(folder: str) -> list[str]:
  """Image files under `folder`, recursively and sorted (official `make_dataset`)."""
  found = [os.path.join(d, f) for d, _, files in os.walk(folder) for f in files
           if f.lower().endswith(IMAGE_EXTENSIONS)]
  return sorted(found)


class ImageFiles:
  """A sequence of image files read on access as (H, W, 3) uint8."""

  def __init__(self, paths: Sequence[str]):
    self.paths = list(paths)

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int) -> np.ndarray:
    return read_rgb(self.paths[index])


class TfdsImages:
  """The "image" feature of one TFDS split (`tfds.data_source`) as (H, W, 3) uint8."""

  def __init__(self, name: str, split: str, data_dir: str | None = None, hint: str = ""):
    self._source = sources.open_tfds(name, split, data_dir, hint)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> np.ndarray:
    return to_rgb(self._source[index]["image"])


class OtherDomain:
  """The "B" entry of an unpaired example before the transform: domain B and the serial index.

  The `gan_resize_crop` transform replaces it by an image (random in training, official
  `index_B = random.randint(0, B_size - 1)`); it cannot become an array by itself.
  """
  __slots__ = ("images", "serial_index")

  def __init__(self, images: Sequence[Any], serial_index: int):
    self.images, self.serial_index = images, serial_index

  def image(self, rng: np.random.Generator | None = None) -> np.ndarray:
    """B[serial_index] (rng None) or a uniformly random B image."""
    index = self.serial_index if rng is None else int(rng.integers(0, len(self.images)))
    return to_rgb(self.images[index])

  def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
    raise ConfigError("Unpaired image-translation examples need config.data.transform = "
                      "'gan_resize_crop' (it draws the B image of every example).")


class UnpairedSource:
  """Two unaligned domains (official `unaligned_dataset.py`): {"A": image, "B": OtherDomain}.

  Args:
    a, b: sequences of images of domains A and B.
    length: "max" (official: max(|A|, |B|)), "A" or "B" (e.g. every test A image once).
    reference: optional, one image per A image: its ideal translation into domain B, where the
      data knows it (the offline sets: the fixed colour map of A). Examples then carry it as
      "B_ref" and the CycleGAN evaluation scores G_A(A) against it.
  """

  def __init__(self, a: Sequence[Any], b: Sequence[Any], length: str = "max",
               reference: Sequence[Any] | None = None):
    if not len(a) or not len(b):
      raise DatasetNotFoundError(f"An unpaired set needs images in both domains (|A| = {len(a)}, "
                                 f"|B| = {len(b)}).")
    sizes = {"max": max(len(a), len(b)), "A": len(a), "B": len(b)}
    if length not in sizes:
      raise ConfigError(f"Unpaired source length {length!r}: use 'max', 'A' or 'B'.")
    if reference is not None and len(reference) != len(a):
      raise ConfigError(f"An unpaired set's reference translations must match A one to one "
                        f"({len(reference)} vs {len(a)}).")
    self.a, self.b, self._length = a, b, sizes[length]
    self.reference = reference

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not 0 <= index < self._length:
      raise IndexError(index)
    out = {"A": to_rgb(self.a[index % len(self.a)]),
           "B": OtherDomain(self.b, index % len(self.b))}
    if self.reference is not None:
      out["B_ref"] = to_rgb(self.reference[index % len(self.a)])
    return out


class PairedSource:
  """Aligned pairs held as two equally long image sequences: {"A": a[i], "B": b[i]}."""

  def __init__(self, a: Sequence[Any], b: Sequence[Any]):
    if len(a) != len(b):
      raise ConfigError(f"Paired domains differ in length: {len(a)} vs {len(b)}.")
    self.a, self.b = a, b

  def __len__(self) -> int:
    return len(self.a)

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not 0 <= index < len(self):
      raise IndexError(index)
    return {"A": to_rgb(self.a[index]), "B": to_rgb(self.b[index])}


class AlignedFolderSource:
  """Side-by-side A|B image files (official `aligned_dataset.py`: cut at w // 2)."""

  def __init__(self, paths: Sequence[str]):
    self.paths = list(paths)

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int) -> dict[str, Any]:
    ab = read_rgb(self.paths[index])
    w2 = ab.shape[1] // 2
    return {"A": ab[:, :w2], "B": ab[:, w2:]}


# ---------------------------------------------------------------------------------------------
# Registered sources.

_OFFLINE_HINT = "Or train on the offline photographs: config.data.name = {!r}."


def _domain_splits(split: str) -> tuple[str, str]:
  if split.startswith("train"):
    return "trainA", "trainB"
  if split in ("test", "validation", "val"):
    return "testA", "testB"
  raise ConfigError(f"Unpaired sets have splits 'train' and 'test', not {split!r}.")


def cycle_gan(split: str, task: str = "horse2zebra", data_dir: str | None = None,
              length: str = "max") -> UnpairedSource:
  """TFDS `cycle_gan/<task>` as an unpaired source (see the module docstring).

  Args:
    split: "train" (trainA + trainB) or "test" (testA + testB).
    task: a `CYCLE_GAN_TASKS` config, e.g. "horse2zebra".
    data_dir: TFDS data directory (None: $TFDS_DATA_DIR or ~/tensorflow_datasets).
    length: as `UnpairedSource`.

  Raises:
    ConfigError: unknown task or split.
    DatasetNotFoundError: not prepared; the message has the `tfds build` command.
  """
  if task not in CYCLE_GAN_TASKS:
    raise ConfigError(f"cycle_gan task {task!r} is not a TFDS cycle_gan config; known: "
                      f"{', '.join(CYCLE_GAN_TASKS)}. Others: config.data.name = "
                      f"'cyclegan_folder' on the official archive.")
  name = f"cycle_gan/{task}"
  hint = (_OFFLINE_HINT.format("gan_offline_unpaired") + " Or unzip "
          + _CYCLEGAN_URL.format(task) + " and use config.data.name = 'cyclegan_folder'.")
  sa, sb = _domain_splits(split)
  return UnpairedSource(TfdsImages(name, sa, data_dir, hint), TfdsImages(name, sb, data_dir, hint),
                        length)


def _root(root: str | None, data_dir: str | None, kind: str, example: str, layout: str,
          download: str, offline: str) -> str:
  root = root or data_dir
  if root and os.path.isdir(root):
    return root
  name = os.path.basename(os.path.normpath(root)) if root else example
  raise DatasetNotFoundError(
      f"{kind} folder {root!r} not found. Expected the layout:\n{layout}\nDownload one (the "
      f"official pytorch-CycleGAN-and-pix2pix datasets/ scripts fetch the same archive):\n"
      f"  wget {download.format(name)}   # then extract it\nand set "
      f"config.data.source_kwargs.root to the extracted folder. "
      + _OFFLINE_HINT.format(offline))


def cyclegan_folder(split: str, root: str | None = None, data_dir: str | None = None,
                    length: str = "max") -> UnpairedSource:
  """An unpaired set in the official layout `<root>/{train,test}{A,B}/` (e.g. horse2zebra).

  Args:
    split: "train" or "test".
    root: the dataset folder (official `--dataroot`); default `data_dir`.
    data_dir: used when `root` is not given.
    length: as `UnpairedSource`.
  """
  layout = "  <root>/trainA/*.jpg  <root>/trainB/*.jpg  <root>/testA/*.jpg  <root>/testB/*.jpg"
  root = _root(root, data_dir, "CycleGAN", "horse2zebra", layout, _CYCLEGAN_URL,
               "gan_offline_unpaired")
  domains = []
  for sub in _domain_splits(split):
    paths = list_images(os.path.join(root, sub))
    if not paths:
      raise DatasetNotFoundError(f"No images in {os.path.join(root, sub)}. Expected:\n{layout}")
    domains.append(ImageFiles(paths))
  return UnpairedSource(*domains, length=length)


def pix2pix_folder(split: str, root: str | None = None,
                   data_dir: str | None = None) -> AlignedFolderSource:
  """A Pix2Pix set as distributed by its authors: `<root>/<split>/*.jpg`, each image A|B.

  Args:
    split: "train", "val" or "test" (the sub-folder; "validation" means "val").
    root: the dataset folder (official `--dataroot`, e.g. datasets/facades); default `data_dir`.
    data_dir: used when `root` is not given.

  Raises:
    DatasetNotFoundError: no folder or no images; the message has the layout and download URL.
  """
  layout = ("  <root>/train/<name>.jpg  <root>/val/<name>.jpg  <root>/test/<name>.jpg\n"
            "  (each image: A and B side by side, A on the left)")
  root = _root(root, data_dir, "Pix2Pix", "facades", layout, _PIX2PIX_URL, "gan_offline_paired")
  split = "val" if split == "validation" else split
  paths = list_images(os.path.join(root, split))
  if not paths:
    present = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    raise DatasetNotFoundError(f"No images in {os.path.join(root, split)} (sub-folders: "
                               f"{present}). Expected:\n{layout}\nSet config.data.eval_split "
                               f"to an existing split.")
  return AlignedFolderSource(paths)


def gan_offline_unpaired(split: str, **kwargs: Any) -> UnpairedSource:
  """`gan_offline.unpaired` (scikit-image is imported only when used)."""
  from jaxcompress.data import gan_offline  # pylint: disable=g-import-not-at-top
  return gan_offline.unpaired(split, **kwargs)


def gan_offline_paired(split: str, **kwargs: Any) -> PairedSource:
  """`gan_offline.paired` (scikit-image is imported only when used)."""
  from jaxcompress.data import gan_offline  # pylint: disable=g-import-not-at-top
  return gan_offline.paired(split, **kwargs)


sources.register("cycle_gan", cycle_gan)
sources.register("cyclegan_folder", cyclegan_folder)
sources.register("pix2pix_folder", pix2pix_folder)
sources.register("gan_offline_unpaired", gan_offline_unpaired)
sources.register("gan_offline_paired", gan_offline_paired)


# ---------------------------------------------------------------------------------------------
# The transform.


def resize(image: np.ndarray, size: int) -> np.ndarray:
  """Bicubic resize to (size, size) with PIL (official `transforms.Resize([s, s], BICUBIC)`)."""
  if image.shape[0] == size and image.shape[1] == size:
    return image
  return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))


def to_unit_range(image: np.ndarray) -> np.ndarray:
  """uint8 -> float32 in [-1, 1]: `ToTensor` then `Normalize((0.5,) * 3, (0.5,) * 3)`."""
  return (image.astype(np.float32) / np.float32(255.0) - np.float32(0.5)) / np.float32(0.5)


def crop_params(rng: np.random.Generator, load_size: int,
                crop_size: int) -> tuple[int, int, bool]:
  """Official `get_params`: crop origin (x, y) in [0, load - crop] and a coin for the flip."""
  x = int(rng.integers(0, load_size - crop_size + 1))
  y = int(rng.integers(0, load_size - crop_size + 1))
  return x, y, bool(rng.random() > 0.5)


def resize_and_crop(image: np.ndarray, load_size: int, crop_size: int, x: int, y: int,
                    flip: bool) -> np.ndarray:
  """Resize to `load_size`, crop `crop_size` at (x, y), flip horizontally, map to [-1, 1]."""
  image = resize(to_rgb(image), load_size)[y:y + crop_size, x:x + crop_size]
  return to_unit_range(image[:, ::-1] if flip else image)


@transforms.register("gan_resize_crop")
def gan_resize_crop(train: bool, load_size: int = 286, crop_size: int = 256,
                    no_flip: bool = False, direction: str = "AtoB",
                    serial_batches: bool = False) -> Callable[[dict[str, Any],
                                                               np.random.Generator],
                                                              dict[str, Any]]:
  """The official `--preprocess resize_and_crop` (`data/base_dataset.py get_transform`).

  Train: bicubic resize to `load_size` squared, random `crop_size` crop, random horizontal flip
  (unless `no_flip`); a paired example uses one crop and flip for A and B (`get_params`), an
  unpaired one draws B at random (unless `serial_batches`) and crops and flips each image on
  its own. Eval (official test options: load_size = crop_size, no_flip, serial_batches): resize
  to `crop_size`, serial B. Images become float32 in [-1, 1].

  Args:
    train: training (random) or eval (deterministic) transform.
    load_size, crop_size: official defaults 286 and 256 (quick configs: e.g. 72 and 64).
    no_flip: no horizontal flips.
    direction: "AtoB", or "BtoA" to swap A and B (the official `--direction`; cityscapes).
    serial_batches: unpaired B = B[i % |B|] in training too.

  Returns:
    `fn(example, rng) -> {"A", "B"}` (plus "index" when present, and in eval "B_ref" when the
    source knows the ideal translation of A).
  """
  if crop_size < 1 or load_size < crop_size:
    raise ConfigError(f"gan_resize_crop needs load_size >= crop_size >= 1, got load_size "
                      f"{load_size} and crop_size {crop_size}.")
  if direction not in ("AtoB", "BtoA"):
    raise ConfigError(f"gan_resize_crop direction {direction!r}: use 'AtoB' or 'BtoA'.")

  def finish(example: dict[str, Any], a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    out = {"A": a, "B": b} if direction == "AtoB" else {"A": b, "B": a}
    if "index" in example:
      out["index"] = example["index"]
    return out

  def params(rng: np.random.Generator) -> tuple[int, int, bool]:
    x, y, flip = crop_params(rng, load_size, crop_size)  # the coin is drawn even with no_flip
    return x, y, flip and not no_flip

  def train_fn(example: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    a, b = example["A"], example["B"]
    if isinstance(b, OtherDomain):  # unpaired: independent B image, crop and flip
      b = b.image(None if serial_batches else rng)
      pa, pb = params(rng), params(rng)
    else:
      pa = pb = params(rng)
    return finish(example, resize_and_crop(a, load_size, crop_size, *pa),
                  resize_and_crop(b, load_size, crop_size, *pb))

  def eval_fn(example: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    del rng
    a, b = example["A"], example["B"]
    if isinstance(b, OtherDomain):
      b = b.image()
    out = finish(example, to_unit_range(resize(to_rgb(a), crop_size)),
                 to_unit_range(resize(to_rgb(b), crop_size)))
    if "B_ref" in example and direction == "AtoB":  # the known ideal G_A(A), for scoring
      out["B_ref"] = to_unit_range(resize(to_rgb(example["B_ref"]), crop_size))
    return out

  return train_fn if train else eval_fn
