"""The domain-generalisation re-identification benchmark of DDAN, and its four small targets.

DDAN (Chen et al., "Dual Distribution Alignment Network for Generalizable Person
Re-Identification", AAAI 2021, arXiv 2007.13249; official code PeixianChen/DDAN):

  * "reid_dg", split "train": every image of five source datasets, concatenated in the official
    order Market-1501, DukeMTMC-reID, CUHK03, CUHK02, CUHK-SYSU (`reid/datasets/
    domain_adaptation.py`), identities offset by the identities before them (0, 1501, 3313, 4780,
    6596 on the full datasets: 18,530 in all) and `domain` = the dataset's index 0..4. CUHK-SYSU
    (index 4) is the central domain of the release.
  * "reid_dg", splits "query" / "gallery" with `target` and `trial`: one of the ten seeded trials
    of a target (`reid/evaluators.py`, seeds from `transmem.py`).

The targets are also registered on their own ("viper", "prid", "grid", "ilids"), read from their
standard layouts (as torchreid reads them):

  * VIPeR: `VIPeR/cam_a/*.bmp` (query) and `cam_b/*.bmp` (gallery); the identity is the number
    before the first "_"; 632 persons. Trials (seed 57): 316 persons, 1 query + 1 gallery image
    each; even trials draw 316 of 632, odd trials take the complement of the draw the release
    makes (and does not use) at the end of the previous trial.
  * PRID (single shot): `prid_2011/single_shot/cam_a|cam_b/person_0001.png`; persons 1..200 are
    in both views. Trials (seed 40): 100 of the 200 as queries (cam_a); gallery = their cam_b
    images followed by the cam_b persons above 200 (549 distractors).
  * GRID: `underground_reid/probe|gallery/*.jpeg`, `<id>_<camera>_...`; 250 persons, id 0 marks
    the 775 gallery distractors. Trials (seed 35): 125 of 250 as queries; gallery = all
    distractors, then one image of each chosen person.
  * i-LIDS: `i-LIDS_Pedestrian/Persons/<id:4><n:3>.jpg`, 119 persons, 476 images; the camera
    is the image number n (no cameras are given; torchreid's reading). Trials (seed 24): 60
    persons, two of their images drawn, the first as gallery, the second as query.

A trial draws with `np.random.RandomState(seed)` as the release does, replaying trials
0..trial-1; persons are indexed in ascending id (the release's ids 1..n on its prepared copies),
and the number drawn is ceil(n / 2) for n persons. The release lists i-LIDS files in file
system order; here they are in name order. Split "train" of a target is the complement of a
trial's persons (relabelled), for supervised use; the benchmark does not train on targets.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from jaxcompress.data import reid_folders, sources
from jaxcompress.errors import ConfigError, DatasetNotFoundError

NUM_TRIALS = 10
# The release's evaluation seeds (transmem.py).
SEEDS = {"viper": 57, "prid": 40, "grid": 35, "ilids": 24}
# Source order of the release, its identity offsets follow from it.
DG_SOURCES = ("market1501", "dukemtmc_reid", "cuhk03", "cuhk02", "cuhk_sysu")
CENTRAL = "cuhk_sysu"
PRID_PAIRED = 200  # persons 1..200 appear in both PRID views


def _rows(folder: str, parse) -> list[tuple[str, int, int]]:
  return [(p, *parse(os.path.basename(p))) for p in reid_folders.list_images(folder)]


def _viper_files(data_dir: str | None) -> tuple[list, list]:
  root = reid_folders.dataset_root(data_dir, "VIPeR", ("VIPeR", "viper/VIPeR", "viper"),
                                   ("cam_a", "cam_b"), "VIPeR/cam_a/, VIPeR/cam_b/ with files "
                                   "like 000_45.bmp (VIPeR.v1.0.zip unpacked)")
  return tuple(_rows(os.path.join(root, c), lambda n, v=v: (int(n.split("_")[0]), v))
               for v, c in enumerate(("cam_a", "cam_b")))


def _prid_files(data_dir: str | None) -> tuple[list, list]:
  root = reid_folders.dataset_root(
      data_dir, "PRID 2011", ("prid_2011/single_shot", "prid2011/prid_2011/single_shot",
                              "single_shot"), ("cam_a", "cam_b"),
      "prid_2011/single_shot/cam_a/, cam_b/ with files like person_0001.png")
  return tuple(_rows(os.path.join(root, c),
                     lambda n, v=v: (int(os.path.splitext(n)[0].split("_")[1]), v))
               for v, c in enumerate(("cam_a", "cam_b")))


def _grid_files(data_dir: str | None) -> tuple[list, list]:
  root = reid_folders.dataset_root(
      data_dir, "GRID", ("underground_reid", "grid/underground_reid", "GRID"),
      ("probe", "gallery"), "underground_reid/probe/, underground_reid/gallery/ with files like "
      "0001_1_25004_107_32_106_221.jpeg")

  def parse(name):
    fields = name.split("_")
    return int(fields[0]), int(fields[1]) - 1

  return tuple(_rows(os.path.join(root, c), parse) for c in ("probe", "gallery"))


def _ilids_files(data_dir: str | None) -> list:
  layout = "i-LIDS_Pedestrian/Persons/ with files like 0001001.jpg (identity, image number)"
  root = reid_folders.dataset_root(
      data_dir, "i-LIDS", ("i-LIDS_Pedestrian/Persons", "ilids/i-LIDS_Pedestrian/Persons",
                           "iLIDS/Persons"), (), layout)
  rows = _rows(root, lambda n: (int(n[:4]), int(n[4:7]) - 1))
  if not rows:
    raise DatasetNotFoundError(f"i-LIDS: no images in {root!r}; expected {layout}.")
  return rows


def _first(rows: list, pid: int) -> int:
  return next(i for i, r in enumerate(rows) if r[1] == pid)


def _trial_persons(target: str, n: int, trial: int, seed: int) -> list[np.ndarray]:
  """Positions (into the ascending person list) chosen by each trial up to `trial`; the draws
  of `reid/evaluators.py` (eval_viper / eval_prid / eval_grid) in their order."""
  rs = np.random.RandomState(seed)
  k, chosen = (n + 1) // 2, []
  extra = None
  for j in range(trial + 1):
    if target == "viper" and j % 2 == 1:
      # The complement of the release's unused draw at the end of the previous trial.
      drawn = set(extra.tolist())
      chosen.append(np.asarray([i for i in range(n) if i not in drawn]))
    else:
      chosen.append(rs.choice(n, k, replace=False))
    if target == "viper":
      extra = rs.choice(n, k, replace=False)
  return chosen


def ilids_trial(rows: list, trial: int, seed: int = SEEDS["ilids"]) -> tuple[list, list]:
  """(query, gallery) row indices of i-LIDS trial `trial` (`eval_ilids`: per chosen person two
  of its images without replacement, the first to the gallery)."""
  ids = sorted({r[1] for r in rows})
  by_id = {pid: [i for i, r in enumerate(rows) if r[1] == pid] for pid in ids}
  rs = np.random.RandomState(seed)
  for _ in range(trial + 1):
    query, gallery = [], []
    for pos in rs.choice(len(ids), (len(ids) + 1) // 2, replace=False):
      g, q = rs.choice(by_id[ids[pos]], 2, replace=False)
      gallery.append(int(g))
      query.append(int(q))
  return query, gallery


def _check_trial(trial: int | None) -> int | None:
  if trial is None:
    return None
  if isinstance(trial, bool) or not isinstance(trial, (int, np.integer)) or not (
      0 <= trial < NUM_TRIALS):
    raise ConfigError(f"trial is one of the {NUM_TRIALS} seeded trials 0..{NUM_TRIALS - 1}, got "
                      f"{trial!r}.")
  return int(trial)


def _images(rows: list, image_size: Any, relabel: bool = False) -> reid_folders.ReidImages:
  paths, ids, cams = ([r[i] for r in rows] for i in range(3))
  if relabel:
    labels, num = reid_folders.relabel(ids)
    return reid_folders.ReidImages(paths, labels, cams, image_size, num)
  return reid_folders.ReidImages(paths, ids, cams, image_size)


def target_split(target: str, split: str, data_dir: str | None = None, trial: int | None = None,
                 image_size: Sequence[int] | None = reid_folders.DEFAULT_SIZE,
                 seed: int | None = None) -> reid_folders.ReidImages:
  """A split of a small target (module docstring).

  Args:
    target: "viper", "prid", "grid" or "ilids".
    split: "query" or "gallery" (trial None: every eligible image; i-LIDS needs a trial), or
      "train" (the persons a trial does not test, relabelled; needs a trial).
    data_dir: the folder holding the target's standard folder.
    trial: 0..9, the seeded trial, or None.
    image_size: (height, width) of the decoded images.
    seed: the trial seed; None: the release's seed of `target`.
  """
  if target not in SEEDS:
    raise ConfigError(f"Unknown target {target!r}; the DG targets are {sorted(SEEDS)}.")
  if split not in ("train", "query", "gallery"):
    raise ConfigError(f"{target} has splits 'train', 'query' and 'gallery', not {split!r}.")
  trial = _check_trial(trial)
  if trial is None and (split == "train" or target == "ilids"):
    raise ConfigError(f"{target} split {split!r} is defined per trial: pass trial=0..9 in "
                      "config.data.source_kwargs.")
  seed = SEEDS[target] if seed is None else int(seed)
  if target == "ilids":
    rows = _ilids_files(data_dir)
    query, gallery = ilids_trial(rows, trial, seed)
    if split == "train":
      tested = {rows[i][1] for i in query}
      return _images([r for r in rows if r[1] not in tested], image_size, relabel=True)
    return _images([rows[i] for i in (query if split == "query" else gallery)], image_size)
  probe, gal = {"viper": _viper_files, "prid": _prid_files, "grid": _grid_files}[target](data_dir)
  gallery_ids = {r[1] for r in gal}
  persons = sorted({r[1] for r in probe if r[1] in gallery_ids
                    and not (target == "grid" and r[1] == 0)
                    and not (target == "prid" and r[1] > PRID_PAIRED)})
  # Gallery images of no tested person: PRID's cam_b persons above 200, GRID's id 0.
  if target == "prid":
    distractors = [r for r in gal if r[1] > PRID_PAIRED]
  else:
    distractors = [r for r in gal if r[1] == 0 and target == "grid"]
  if trial is None:
    if split == "query":
      return _images([r for r in probe if r[1] in set(persons)], image_size)
    kept = set(persons) | {r[1] for r in distractors}
    return _images([r for r in gal if r[1] in kept], image_size)
  chosen = [persons[i] for i in _trial_persons(target, len(persons), trial, seed)[-1]]
  if split == "train":
    rest = set(persons) - set(chosen)
    return _images([r for r in probe + gal if r[1] in rest], image_size, relabel=True)
  if split == "query":
    return _images([probe[_first(probe, pid)] for pid in chosen], image_size)
  firsts = [gal[_first(gal, pid)] for pid in chosen]
  # The release lists GRID's distractors before, PRID's after the chosen persons.
  return _images(distractors + firsts if target == "grid" else firsts + distractors, image_size)


class DGSource(sources.ConcatSource):
  """The concatenated source datasets: labels offset per dataset, `domain` per example, cameras
  offset so that no two datasets share a camera id.

  Attributes:
    names: the source datasets, in order.
    id_domains: (num_classes,) the dataset index of every identity (DDAN's identity memory).
    domains: (N,) the dataset index of every example.
    cameras: (N,) offset cameras.
    central: index of the central domain (CUHK-SYSU in the release), or None.
  """

  def __init__(self, parts: list[Any], names: Sequence[str], central: str | None = CENTRAL):
    super().__init__(parts)
    self.names = tuple(names)
    sizes = [p.num_classes for p in parts]
    self.id_domains = np.repeat(np.arange(len(parts)), sizes).astype(np.int64)
    self.domains = np.repeat(np.arange(len(parts)), [len(p) for p in parts]).astype(np.int64)
    cams = [np.asarray(p.cameras, np.int64) for p in parts]
    self.camera_offsets = tuple(np.cumsum([0] + [int(c.max()) + 1 if len(c) else 0
                                                 for c in cams])[:-1].tolist())
    self.cameras = np.concatenate([c + o for c, o in zip(cams, self.camera_offsets)])
    if central is not None and central not in self.names:
      raise ConfigError(f"The central domain {central!r} is not among the sources "
                        f"{list(self.names)}; name one of them or None.")
    self.central = None if central is None else self.names.index(central)

  def __getitem__(self, index: int) -> dict[str, Any]:
    item = super().__getitem__(index)
    item["camera"] = int(item["camera"]) + self.camera_offsets[item["domain"]]
    return item


def reid_dg(split: str, data_dir: str | None = None, target: str | None = None,
            trial: int = 0, image_size: Sequence[int] | None = reid_folders.DEFAULT_SIZE,
            cuhk03_variant: str = "detected", source_names: Sequence[str] = DG_SOURCES,
            central: str | None = CENTRAL) -> Any:
  """The DG benchmark ("reid_dg"): "train" = the sources, "query" / "gallery" = a target trial.

  Args:
    split: "train", "query" or "gallery".
    data_dir: the folder holding every dataset folder (see `reid_folders` and this module).
    target: "viper", "prid", "grid" or "ilids" (query / gallery only).
    trial: 0..9.
    image_size: (height, width) of the decoded images.
    cuhk03_variant: the CUHK03 images among the sources, "detected" (14,097 images of the
      1,467 persons) or "labeled" (14,096); the release's prepared copy does not say which.
    source_names: the source datasets, in order (the release's five by default).
    central: the central source (the release's CUHK-SYSU), exposed as `DGSource.central`.

  Returns:
    A `DGSource` for "train", a `ReidImages` of the target trial otherwise.
  """
  if split == "train":
    parts = []
    for name in source_names:
      if name not in reid_folders.BUILDERS:
        raise ConfigError(f"Unknown DG source {name!r}; known: {sorted(reid_folders.BUILDERS)}.")
      kwargs = {"variant": cuhk03_variant} if name == "cuhk03" else {}
      parts.append(reid_folders.BUILDERS[name]("all", data_dir=data_dir, image_size=image_size,
                                               **kwargs))
    return DGSource(parts, source_names, central)
  if target is None:
    raise ConfigError(f"reid_dg split {split!r} is a target's: set source_kwargs.target to one "
                      f"of {sorted(SEEDS)} (and trial 0..9).")
  return target_split(target, split, data_dir, trial, image_size)


def _target_builder(target: str):
  def build(split: str, data_dir: str | None = None, trial: int | None = None,
            image_size: Sequence[int] | None = reid_folders.DEFAULT_SIZE,
            seed: int | None = None) -> reid_folders.ReidImages:
    return target_split(target, split, data_dir, trial, image_size, seed)
  build.__doc__ = f"{target}: `target_split({target!r}, ...)`."
  return build


for _target in SEEDS:
  sources.register(_target, _target_builder(_target))
sources.register("reid_dg", reid_dg)
