"""Person re-identification datasets read from their standard local folders.

Registered sources (`config.data.name`, with `config.data.data_dir` the folder that holds the
dataset folders, like torchreid's `root`):

  * "market1501": Market-1501 (Zheng et al., ICCV 2015), `Market-1501-v15.09.15/`.
  * "dukemtmc_reid": DukeMTMC-reID (Zheng et al., ICCV 2017), `DukeMTMC-reID/`.
  * "cuhk03": CUHK03 under the new protocol (Zhong et al., arXiv 1701.08398; 767 training and
    700 test identities), `variant="detected"` (default) or `"labeled"`.
  * "msmt17": MSMT17 (Wei et al., CVPR 2018), `MSMT17_V1/` (or `MSMT17_V2/`) with its lists.
  * "cuhk02": CUHK02 (Li and Wang, CVPR 2013), `cuhk02/Dataset/P1..P5/cam1|cam2/`.
  * "cuhk_sysu": the cropped persons of CUHK-SYSU (Xiao et al., CVPR 2017), a training set.

Splits follow open-reid / torchreid (github.com/Cysu/open-reid, KaiyangZhou/deep-person-reid,
`torchreid/data/datasets/image/*.py`) and MEB-Net's readers (YunpengZhai/MEB-Net,
`mebnet/datasets/`): "train" relabels identities to 0..N-1 in ascending original id; "query" and
"gallery" keep the original ids; "all" is every image with an identity (train + query +
gallery, relabelled), the form in which the domain-generalisation benchmark of DDAN
(arXiv 2007.13249, `reid/datasets/domain_adaptation.py`) uses a source dataset. Junk images
(id -1) are dropped everywhere; Market-1501's distractors (id 0) stay in the gallery as the
standard protocol keeps them, and are not identities in "all". Cameras are 0-based.

Examples are `{"image": uint8 (H, W, 3), "label": id, "camera": camera}`; images are decoded with
PIL when an example is read and resized (bicubic, torchvision's `Resize(..., interpolation=3)`)
to `image_size` = (height, width), (256, 128) by default; None keeps each file's size.
"""
from __future__ import annotations

import os
import re
from typing import Any, Sequence

import numpy as np

from jaxcompress.data import sources
from jaxcompress.errors import ConfigError, DatasetNotFoundError

DEFAULT_SIZE = (256, 128)
# Market-1501, DukeMTMC-reID and CUHK03-NP name images "<id>_c<camera>...".
MARKET_PATTERN = re.compile(r"([-\d]+)_c(\d+)")
MARKET_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


class ReidImages:
  """One split of a re-identification dataset: image files with identities and cameras.

  Attributes:
    paths: the image files.
    labels: (N,) int64 identities (relabelled or original, see the module docstring).
    cameras: (N,) int64 0-based cameras.
    num_classes: the number of identities for relabelled splits, None for query / gallery.
    image_size: (height, width) of the decoded images, or None for the files' own sizes.
  """

  def __init__(self, paths: Sequence[str], labels: Any, cameras: Any,
               image_size: Sequence[int] | None = DEFAULT_SIZE, num_classes: int | None = None):
    self.paths = list(paths)
    self.labels = np.asarray(labels, np.int64).reshape(-1)
    self.cameras = np.asarray(cameras, np.int64).reshape(-1)
    if not len(self.paths) == len(self.labels) == len(self.cameras):
      raise ValueError(f"{len(self.paths)} paths, {len(self.labels)} labels and "
                       f"{len(self.cameras)} cameras: give one of each per image.")
    self.image_size = check_size(image_size)
    self.num_classes = num_classes

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    return {"image": load_image(self.paths[index], self.image_size),
            "label": int(self.labels[index]), "camera": int(self.cameras[index])}

  def subset(self, indices: Sequence[int], relabel: bool = False) -> ReidImages:
    """The images at `indices`, in that order (identities relabelled 0..N-1 if asked)."""
    indices = np.asarray(indices, np.int64).reshape(-1)
    labels = self.labels[indices]
    num_classes = None
    if relabel:
      ids, labels = np.unique(labels, return_inverse=True)
      num_classes = len(ids)
    return ReidImages([self.paths[i] for i in indices], labels, self.cameras[indices],
                      self.image_size, num_classes)


def check_size(image_size: Sequence[int] | None) -> tuple[int, int] | None:
  """`image_size` as a (height, width) tuple of positive ints (None: keep the file's size)."""
  if image_size is None:
    return None
  size = tuple(int(s) for s in image_size)
  if len(size) != 2 or min(size) < 1:
    raise ConfigError(f"image_size is (height, width) in pixels, e.g. (256, 128); got "
                      f"{image_size!r}.")
  return size


def load_image(path: str, image_size: tuple[int, int] | None) -> np.ndarray:
  """The image file as uint8 (H, W, 3) RGB, bicubic-resized to `image_size` = (H, W)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(path) as im:
    im = im.convert("RGB")
    if image_size is not None and im.size != (image_size[1], image_size[0]):
      im = im.resize((image_size[1], image_size[0]), Image.BICUBIC)
    return np.asarray(im, np.uint8)


def relabel(keys: Sequence[Any]) -> tuple[np.ndarray, int]:
  """Identity keys -> 0..N-1 in ascending key order (open-reid's relabelling of a train split).

  Returns:
    (labels, N).
  """
  order = sorted(set(keys))
  index = {k: i for i, k in enumerate(order)}
  return np.asarray([index[k] for k in keys], np.int64), len(order)


def dataset_root(data_dir: str | None, title: str, candidates: Sequence[str],
                 required: Sequence[str], layout: str) -> str:
  """The dataset folder: the first `data_dir/<candidate>` (or `data_dir` itself) holding all of
  `required`.

  Raises:
    DatasetNotFoundError: naming the layout to put where.
  """
  fix = (f"{title} is read from its standard folder layout:\n  {layout}\nPut it under one "
         f"folder and set config.data.data_dir (or source_kwargs.data_dir) to that folder; "
         f"the dataset folder may be named " + " or ".join(f"<data_dir>/{c}" for c in candidates)
         + ".")
  if data_dir is None:
    raise DatasetNotFoundError(f"{title} needs a data directory. {fix}")
  # `data_dir` may be the dataset folder itself when the layout names what it must hold.
  for folder in [os.path.join(data_dir, c) for c in candidates] + ([data_dir] if required else []):
    if os.path.isdir(folder) and all(os.path.exists(os.path.join(folder, r)) for r in required):
      return folder
  raise DatasetNotFoundError(f"{title} was not found under {data_dir!r} (looked for "
                             f"{', '.join(required)}). {fix}")


def list_images(folder: str) -> list[str]:
  """Image files directly inside `folder`, sorted by name."""
  return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                if n.lower().endswith(IMAGE_EXTENSIONS))


def _parse(paths: Sequence[str], pattern: re.Pattern[str]) -> list[tuple[str, int, int]]:
  """(path, id, 1-based camera) for every file name matching `pattern` (id, camera groups)."""
  out = []
  for path in paths:
    match = pattern.search(os.path.basename(path))
    if match is None:
      raise ConfigError(f"Cannot read the identity and camera of {path!r}: expected a name "
                        f"matching {pattern.pattern!r}. Remove files that do not belong there.")
    out.append((path, int(match.group(1)), int(match.group(2))))
  return out


def build_split(split: str, groups: dict[str, list[tuple[Any, int, int, str]]],
                image_size: Any, distractor_ids: Sequence[int] = ()) -> ReidImages:
  """A split from `groups` = {"train" | "query" | "gallery": [(key, id, camera, path)]}.

  `key` identifies a person across groups ((group, id) where a dataset numbers its train and
  test persons separately). Junk (id -1) is dropped; `distractor_ids` stay in the gallery only.
  """
  if split == "all":
    rows = [r for g in ("train", "query", "gallery") for r in groups.get(g, [])
            if r[1] != -1 and r[1] not in distractor_ids]
  elif split in groups:
    rows = [r for r in groups[split] if r[1] != -1 and (split == "gallery" or r[1] not in
                                                        distractor_ids)]
  else:
    raise ConfigError(f"Unknown split {split!r}; this dataset has splits "
                      f"{sorted(set(groups) | {'all'})}.")
  paths = [r[3] for r in rows]
  cameras = [r[2] for r in rows]
  if split in ("train", "all"):
    labels, num = relabel([r[0] for r in rows])
    return ReidImages(paths, labels, cameras, image_size, num)
  return ReidImages(paths, [r[1] for r in rows], cameras, image_size)


def _market_style(root: str, pattern: re.Pattern[str] = MARKET_PATTERN
                  ) -> dict[str, list[tuple[Any, int, int, str]]]:
  groups = {}
  for split, sub in MARKET_DIRS.items():
    rows = _parse(list_images(os.path.join(root, sub)), pattern)
    groups[split] = [(pid, pid, cam - 1, path) for path, pid, cam in rows]
  return groups


_MARKET_LAYOUT = ("{name}/bounding_box_train/, {name}/query/, {name}/bounding_box_test/ with "
                  "files named like {example}")


def market1501(split: str, data_dir: str | None = None,
               image_size: Sequence[int] | None = DEFAULT_SIZE) -> ReidImages:
  """Market-1501: 751 train identities (12,936 images), 3,368 queries, 19,732 gallery images of
  which 2,793 distractors (id 0) and 3,819 junk (id -1, dropped: 15,913 remain).

  Args:
    split: "train", "query", "gallery" or "all".
    data_dir: the folder holding `Market-1501-v15.09.15/` (the official zip unpacked).
    image_size: (height, width) of the decoded images.
  """
  root = dataset_root(data_dir, "Market-1501", ("Market-1501-v15.09.15",
                                                "market1501/Market-1501-v15.09.15", "market1501"),
                      tuple(MARKET_DIRS.values()), _MARKET_LAYOUT.format(
                          name="Market-1501-v15.09.15", example="0002_c1s1_000451_03.jpg"))
  return build_split(split, _market_style(root), image_size, distractor_ids=(0,))


def dukemtmc_reid(split: str, data_dir: str | None = None,
                  image_size: Sequence[int] | None = DEFAULT_SIZE) -> ReidImages:
  """DukeMTMC-reID: 702 train identities (16,522 images), 2,228 queries, 17,661 gallery images
  (1,110 identities, 408 of them gallery-only distractors); 8 cameras.

  Args:
    split: "train", "query", "gallery" or "all" (1,812 identities).
    data_dir: the folder holding `DukeMTMC-reID/`.
    image_size: (height, width) of the decoded images.
  """
  root = dataset_root(data_dir, "DukeMTMC-reID", ("DukeMTMC-reID", "dukemtmc-reid/DukeMTMC-reID",
                                                  "dukemtmc-reid"),
                      tuple(MARKET_DIRS.values()), _MARKET_LAYOUT.format(
                          name="DukeMTMC-reID", example="0001_c2_f0046182.jpg"))
  return build_split(split, _market_style(root), image_size)


def _cuhk03_from_mat(root: str, variant: str) -> dict[str, list[tuple[Any, int, int, str]]]:
  """The new-protocol split file (1-based train_idx / query_idx / gallery_idx into filelist and
  labels) over the images extracted from cuhk-03.mat, named `<pair>_<id>_<view>_<n>.png`; the
  camera is the view (1 or 2) within the camera pair, as torchreid reads it."""
  from scipy import io as sio  # pylint: disable=g-import-not-at-top
  config = sio.loadmat(os.path.join(root, f"cuhk03_new_protocol_config_{variant}.mat"))
  files = [str(np.asarray(f).reshape(-1)[0]) for f in config["filelist"].reshape(-1)]
  ids = np.asarray(config["labels"]).reshape(-1).astype(np.int64)
  groups = {}
  for split in ("train", "query", "gallery"):
    rows = []
    for i in np.asarray(config[f"{split}_idx"]).reshape(-1).astype(np.int64) - 1:
      cam = int(files[i].split("_")[2]) - 1
      rows.append((int(ids[i]), int(ids[i]), cam, os.path.join(root, f"images_{variant}",
                                                                files[i])))
    groups[split] = rows
  return groups


def cuhk03(split: str, data_dir: str | None = None, variant: str = "detected",
           image_size: Sequence[int] | None = DEFAULT_SIZE) -> ReidImages:
  """CUHK03, new protocol: 767 train / 700 test identities, 1,400 queries, 2 views per pair.

  Two layouts are read (the first one found):
    * CUHK03-NP, the pre-extracted folders released with the new protocol
      (zhunzhong07/person-re-ranking; what MEB-Net reads): `cuhk03-np/<variant>/
      {bounding_box_train,query,bounding_box_test}/` with files like `0001_c1_1.png`;
    * torchreid's: `cuhk03/images_<variant>/` (images extracted from cuhk-03.mat, named
      `1_001_1_01.png`) next to `cuhk03/cuhk03_new_protocol_config_<variant>.mat`.

  Args:
    split: "train", "query", "gallery" or "all" (1,467 identities).
    data_dir: the folder holding `cuhk03-np/` or `cuhk03/`.
    variant: "detected" (DPM boxes) or "labeled" (hand-drawn boxes).
    image_size: (height, width) of the decoded images.
  """
  if variant not in ("detected", "labeled"):
    raise ConfigError(f"CUHK03 variant is 'detected' or 'labeled', got {variant!r}.")
  mat = f"cuhk03_new_protocol_config_{variant}.mat"
  layout = (f"cuhk03-np/{variant}/bounding_box_train/, query/, bounding_box_test/ with files "
            f"like 0001_c1_1.png (CUHK03-NP); or cuhk03/images_{variant}/ with files like "
            f"1_001_1_01.png next to cuhk03/{mat}")
  if data_dir is not None:
    for name in ("cuhk03-np", "cuhk03/cuhk03-np", "CUHK03-NP"):
      folder = os.path.join(data_dir, name, variant)
      if all(os.path.isdir(os.path.join(folder, d)) for d in MARKET_DIRS.values()):
        return build_split(split, _market_style(folder), image_size)
  root = dataset_root(data_dir, f"CUHK03 ({variant})", ("cuhk03",),
                      (mat, f"images_{variant}"), layout)
  return build_split(split, _cuhk03_from_mat(root, variant), image_size)


def msmt17(split: str, data_dir: str | None = None, include_val: bool = True,
           image_size: Sequence[int] | None = DEFAULT_SIZE) -> ReidImages:
  """MSMT17: 1,041 train identities (32,621 images with the validation list), 3,060 test
  identities (11,659 queries, 82,161 gallery images), 15 cameras.

  Lists hold "<id folder>/<file> <id>" lines; the camera is the third field of the file name
  (`0000_000_01_0303morning_0008_0.jpg` -> camera 0). Train and test number their persons
  separately from 0, so "all" keeps them apart.

  Args:
    split: "train", "query", "gallery" or "all".
    data_dir: the folder holding `MSMT17_V1/` (train/, test/, list_*.txt) or `MSMT17_V2/`
      (mask_train_v2/, mask_test_v2/, list_*.txt).
    include_val: "train" is list_train.txt plus list_val.txt, as MEB-Net and MMT read it (the
      32,621 training images); False: list_train.txt only.
    image_size: (height, width) of the decoded images.
  """
  layout = ("MSMT17_V1/train/, MSMT17_V1/test/, MSMT17_V1/list_{train,val,query,gallery}.txt "
            "(or MSMT17_V2/ with mask_train_v2/ and mask_test_v2/)")
  lists = ("list_train.txt", "list_query.txt", "list_gallery.txt")
  try:
    root = dataset_root(data_dir, "MSMT17", ("MSMT17_V1", "msmt17/MSMT17_V1"),
                        ("train", "test") + lists, layout)
    dirs = ("train", "test")
  except DatasetNotFoundError:
    root = dataset_root(data_dir, "MSMT17", ("MSMT17_V2", "msmt17/MSMT17_V2"),
                        ("mask_train_v2", "mask_test_v2") + lists, layout)
    dirs = ("mask_train_v2", "mask_test_v2")
  names = {"train": ["list_train.txt"] + (["list_val.txt"] if include_val else []),
           "query": ["list_query.txt"], "gallery": ["list_gallery.txt"]}
  groups = {}
  for group, files in names.items():
    folder = os.path.join(root, dirs[group != "train"])
    rows = []
    for name in files:
      with open(os.path.join(root, name)) as f:
        for line in f:
          if line.strip():
            rel, pid = line.split()
            cam = int(os.path.basename(rel).split("_")[2]) - 1
            # Query and gallery share the test numbering; train has its own.
            key = (group == "train", int(pid))
            rows.append((key, int(pid), cam, os.path.join(folder, rel)))
    groups[group] = rows
  return build_split(split, groups, image_size)


def cuhk02(split: str, data_dir: str | None = None,
           image_size: Sequence[int] | None = DEFAULT_SIZE) -> ReidImages:
  """CUHK02: five camera-view pairs P1..P5 (971, 306, 107, 193, 239 identities; 1,816 in all).

  Torchreid's protocol: P1..P4 train, P5 test with cam1 as query and cam2 as gallery. A person
  is (pair, number before the first "_"); camera of pair k (0-based) view v is 2k + v.

  Args:
    split: "train", "query", "gallery" or "all".
    data_dir: the folder holding `cuhk02/Dataset/P1..P5/cam1|cam2/*.png`.
    image_size: (height, width) of the decoded images.
  """
  pairs = ("P1", "P2", "P3", "P4", "P5")
  root = dataset_root(data_dir, "CUHK02", ("cuhk02/Dataset", "Dataset", "cuhk02"),
                      tuple(f"{p}/cam{v}" for p in pairs for v in (1, 2)),
                      "cuhk02/Dataset/P1..P5/cam1/, cam2/ with files like 001_1.png")
  groups: dict[str, list[tuple[Any, int, int, str]]] = {"train": [], "query": [], "gallery": []}
  for k, pair in enumerate(pairs):
    for v in (0, 1):
      for path in list_images(os.path.join(root, pair, f"cam{v + 1}")):
        pid = int(os.path.basename(path).split("_")[0])
        group = "train" if pair != "P5" else ("query", "gallery")[v]
        groups[group].append(((k, pid), pid, 2 * k + v, path))
  return build_split(split, groups, image_size)


CUHK_SYSU_PATTERN = re.compile(r"p(\d+)_s(\d+)")


def cuhk_sysu(split: str, data_dir: str | None = None,
              image_size: Sequence[int] | None = DEFAULT_SIZE) -> ReidImages:
  """The person crops of CUHK-SYSU (11,934 identities, 34,574 images), training data only.

  Files `p<id>_s<scene>....jpg` in `cropped_images/` (the layout torchreid and fast-reid read,
  and the prepared copy the DDAN README links); one dummy camera 0.

  Args:
    split: "train" or "all" (the same images).
    data_dir: the folder holding `cuhksysu/cropped_images/` (or `cuhk_sysu/`, `CUHK-SYSU/`).
    image_size: (height, width) of the decoded images.
  """
  if split not in ("train", "all"):
    raise ConfigError(f"The CUHK-SYSU crops are a training set (splits 'train' / 'all'), not "
                      f"{split!r}; evaluate on another dataset.")
  root = dataset_root(data_dir, "CUHK-SYSU", ("cuhksysu", "cuhk_sysu", "CUHK-SYSU"),
                      ("cropped_images",), "cuhksysu/cropped_images/ with files like "
                      "p10001_s15183.jpg")
  rows = _parse(list_images(os.path.join(root, "cropped_images")), CUHK_SYSU_PATTERN)
  return build_split("train", {"train": [(pid, pid, 0, path) for path, pid, _ in rows]},
                     image_size)


BUILDERS = {"market1501": market1501, "dukemtmc_reid": dukemtmc_reid, "cuhk03": cuhk03,
            "msmt17": msmt17, "cuhk02": cuhk02, "cuhk_sysu": cuhk_sysu}
for _name, _builder in BUILDERS.items():
  sources.register(_name, _builder)
