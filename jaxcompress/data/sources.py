"""Random-access data sources: offline sets shipped in packages, TFDS, synthetic data.

Every source is a sequence of examples `{"image": uint8 HWC, "label": int}` with `len()` and
`[i]`, which is what grain's `MapDataset.source` needs. TFDS datasets come
through `tfds.data_source` (ArrayRecord, random access, no TensorFlow at train time).
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

import numpy as np

from jaxcompress.errors import ConfigError, DatasetNotFoundError


@dataclasses.dataclass
class ArraySource:
  """Examples held in memory as NumPy arrays.

  Attributes:
    images: (N, H, W, C) uint8.
    labels: (N,) int.
    num_classes: number of classes.
  """
  images: np.ndarray
  labels: np.ndarray
  num_classes: int

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return {"image": self.images[index], "label": self.labels[index]}


def digits(split: str) -> ArraySource:
  """scikit-learn's digits: 1797 real 8x8 handwritten digits, shipped offline.

  A fixed stratified split (seed 0): 1437 train / 360 test images. Pixel values 0..16 are
  rescaled to uint8 0..255 so the usual [0, 255] pipeline applies.

  Args:
    split: "train" or "test".

  Returns:
    An ArraySource with (8, 8, 1) uint8 images and 10 classes.
  """
  from sklearn import datasets, model_selection  # pylint: disable=g-import-not-at-top
  data = datasets.load_digits()
  images = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  train_x, test_x, train_y, test_y = model_selection.train_test_split(
      images, data.target, test_size=360, random_state=0, stratify=data.target)
  if split == "train":
    return ArraySource(train_x, train_y.astype(np.int32), 10)
  if split in ("test", "validation"):
    return ArraySource(test_x, test_y.astype(np.int32), 10)
  raise ConfigError(f"digits has splits 'train' and 'test', not {split!r}.")


def synthetic(split: str, num_examples: int = 256, image_shape: tuple[int, ...] = (8, 8, 1),
              num_classes: int = 4, seed: int = 0) -> ArraySource:
  """A learnable synthetic classification set: one fixed random template per class plus noise.

  Args:
    split: any name; "train" and other splits draw different noise from the same templates.
    num_examples: number of examples.
    image_shape: (H, W, C).
    num_classes: number of classes.
    seed: template seed (the same for every split so splits share the task).

  Returns:
    An ArraySource of uint8 images.
  """
  templates = np.random.default_rng(seed).uniform(0, 255, (num_classes, *image_shape))
  rng = np.random.default_rng(seed + 1 + (split != "train"))
  labels = rng.integers(0, num_classes, num_examples).astype(np.int32)
  images = templates[labels] + rng.normal(0, 40, (num_examples, *image_shape))
  return ArraySource(np.clip(images, 0, 255).astype(np.uint8), labels, num_classes)


# TFDS names -> (number of classes, dataset builder name for the prepare command).
_TFDS = {"cifar10": 10, "cifar100": 100, "imagenet2012": 1000, "mnist": 10}


def open_tfds(name: str, split: str, data_dir: str | None = None, hint: str = "") -> Any:
  """`tfds.data_source(name, split)` without downloading; a missing dataset names the fix.

  Args:
    name: TFDS name (with config, e.g. "div2k/bicubic_x4").
    split: split (TFDS slicing allowed).
    data_dir: TFDS data directory (None: ~/tensorflow_datasets or $TFDS_DATA_DIR).
    hint: an extra line for the error message (e.g. an offline alternative).

  Raises:
    DatasetNotFoundError: with the exact `tfds build` command (and the install line when
      tensorflow-datasets itself is missing).
  """
  # The one-time preparation, named by both errors below.
  prepare = (f"  pip install -e .[prepare] && tfds build {name} --file_format=array_record"
             + (f" --data_dir={data_dir}" if data_dir else "") + (f"\n{hint}" if hint else ""))
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ModuleNotFoundError:
    raise DatasetNotFoundError(
        f"TFDS dataset {name!r} needs the tensorflow-datasets package, which is not installed. "
        f"Install the project's requirements (pip install -e .), then prepare the data once "
        f"with:\n{prepare}") from None
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # pylint: disable=broad-except
    where = f" under {data_dir}" if data_dir else " in ~/tensorflow_datasets (or $TFDS_DATA_DIR)"
    raise DatasetNotFoundError(
        f"TFDS dataset {name!r} (split {split!r}) is not prepared{where} in ArrayRecord "
        f"format ({type(e).__name__}). Prepare it once with:\n{prepare}") from None


class TfdsSource:
  """A TFDS dataset read through `tfds.data_source` (ArrayRecord; no TensorFlow needed)."""

  def __init__(self, name: str, split: str, data_dir: str | None = None):
    self.num_classes = _TFDS.get(name)
    hint = ("(imagenet2012 also needs the ILSVRC2012 tars in the manual dir, see TFDS docs)"
            if name == "imagenet2012" else "")
    self._source = open_tfds(name, split, data_dir, hint)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    example = self._source[index]
    return {"image": np.asarray(example["image"]), "label": np.int32(example["label"])}


_OFFLINE: dict[str, Callable[..., Any]] = {"digits": digits, "synthetic": synthetic}


def register(name: str, builder: Callable[..., Any]) -> None:
  """Registers `builder(split, **kwargs) -> source` under `name` (e.g. super-resolution sets)."""
  _OFFLINE[name] = builder


def names() -> list[str]:
  """Source names accepted by `get`."""
  return sorted(set(_OFFLINE) | set(_TFDS))


def _accepts(fn: Callable[..., Any], arg: str) -> bool:
  try:
    params = inspect.signature(fn).parameters
  except (TypeError, ValueError):
    return False
  return arg in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def get_configured(name: str, split: str, data_dir: str | None,
                   source_kwargs: Any = None) -> Any:
  """`get` with a config's `data_dir` and `source_kwargs`; a `data_dir` inside `source_kwargs`
  (e.g. DIV2K's prepared folder) takes precedence over the config-wide one."""
  kwargs = dict(source_kwargs or {})
  return get(name, split, data_dir=kwargs.pop("data_dir", data_dir), **kwargs)


def get(name: str, split: str, *, data_dir: str | None = None, **kwargs: Any) -> Any:
  """Returns the random-access source `name` for `split`.

  Args:
    name: "digits", "synthetic", or a TFDS name ("cifar10", "cifar100", "imagenet2012", ...).
    split: split name ("train", "test", TFDS slicing like "train[:90%]").
    data_dir: data directory (TFDS sets; registered builders that take `data_dir`).
    **kwargs: source options (synthetic sizes).

  Raises:
    ValueError: unknown name.
    DatasetNotFoundError: a TFDS dataset that is not prepared (the message has the command).
  """
  if name in _OFFLINE:
    builder = _OFFLINE[name]
    # A registered builder that reads prepared data (TFDS sets, DIV2K) takes the data directory
    # from config.data.data_dir unless its source_kwargs name one.
    if data_dir is not None and "data_dir" not in kwargs and _accepts(builder, "data_dir"):
      kwargs["data_dir"] = data_dir
    return builder(split, **kwargs)
  if name in _TFDS:
    return TfdsSource(name, split, data_dir)
  raise ConfigError(f"Unknown dataset {name!r}. Known: {', '.join(names())}. "
                   "Set config.data.name to one of them.")


class SubsetSource:
  """A contiguous fraction [start, stop) of another source (e.g. the two halves of DARTS search)."""

  def __init__(self, source: Any, start: float, stop: float):
    n = len(source)
    self._source, self._offset = source, int(round(start * n))
    self._length = int(round(stop * n)) - self._offset
    self.num_classes = getattr(source, "num_classes", None)

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not 0 <= index < self._length:
      raise IndexError(index)
    return self._source[self._offset + index]


class ConcatSource:
  """Several sources as one: identities offset per part, and each example's part as "domain".

  The multi-source re-identification setting (DDAN trains on Market-1501, DukeMTMC-reID,
  CUHK03, CUHK02 and CUHK-SYSU at once): part k's labels are shifted by the number of
  identities of parts 0..k-1 (`max label + 1` of each part, or its `num_classes`), so identities
  of different datasets never collide, and every example gains `domain = k`.

  Args:
    parts: the sources, in order.
  """

  def __init__(self, parts: list[Any]):
    if not parts:
      raise ConfigError("A concatenated source needs at least one part.")
    self._parts = list(parts)
    sizes = [len(p) for p in self._parts]
    self._starts = np.cumsum([0] + sizes)
    offsets, total = [], 0
    for part in self._parts:
      offsets.append(total)
      total += _num_labels(part)
    self.id_offsets = tuple(offsets)
    self.num_classes = total

  def __len__(self) -> int:
    return int(self._starts[-1])

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not 0 <= index < len(self):
      raise IndexError(index)
    k = int(np.searchsorted(self._starts, index, side="right") - 1)
    item = dict(self._parts[k][index - int(self._starts[k])])
    if "label" in item:
      item["label"] = int(item["label"]) + self.id_offsets[k]
    item["domain"] = k
    return item

  @property
  def labels(self) -> np.ndarray:
    """Every example's (offset) label."""
    return np.concatenate([_part_labels(p) + off for p, off in zip(self._parts,
                                                                     self.id_offsets)])


def _part_labels(source: Any) -> np.ndarray:
  if hasattr(source, "labels"):
    return np.asarray(source.labels).astype(np.int64)
  return np.asarray([int(source[i]["label"]) for i in range(len(source))], np.int64)


def _num_labels(source: Any) -> int:
  given = getattr(source, "num_classes", None)
  return int(given) if given else int(_part_labels(source).max()) + 1


def concat(split: str, parts: Any = (), data_dir: str | None = None) -> ConcatSource:
  """`config.data.name = "concat"`: `source_kwargs.parts` lists {name, split (default: this
  split), source_kwargs} entries, concatenated by `ConcatSource`."""
  built = []
  for part in parts:
    part = dict(part)
    built.append(get(part["name"], part.get("split", split), data_dir=data_dir,
                     **dict(part.get("source_kwargs", {}) or {})))
  return ConcatSource(built)


_OFFLINE["concat"] = concat
