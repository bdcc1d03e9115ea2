"""UCF101, HMDB51 and Kinetics-400 from local frame folders, as DSM's official code reads them.

DSM (Wang et al., "Enhancing Unsupervised Video Representation Learning by Decoupling the Scene
and the Motion", arXiv 2009.05757) pretrains and fine-tunes on UCF101 / HMDB51 (three official
train/test splits each) and pretrains on Kinetics-400. Its loader
(`FingerRec/DSM-decoupling-scene-motion`, `src/data/dataset.py` and `src/data/base.py`) reads
one folder of JPEG frames per video, listed by rows `<video path> <num frames> <label>`
(`datasets/lists/ucf101/ucf101_rgb_{train,val}_split_1.txt`, ...), with the frame names of
`src/data/config.py`: UCF101 `frame000001.jpg`, HMDB51 and Kinetics `img_00001.jpg` (the
official ffmpeg script `src/utils/data_process/gen_hmdb51_frames.py` writes `image_00001.jpg`).
Official details kept here:

* `VideoRecord.num_frames` is the listed count minus one: of N frame files, frames 1..N-1 are
  read (`skip_last_frame=True`); example frame i (0-based) is file i + 1.
* A listed frame missing on disk reads frame 1 (`_load_image`).
* Kinetics is read from video files, rows `<video path> <label>` (`src/data/video_dataset.py`);
  such rows are decoded here with PyAV (optional) without the frame-count correction.

Without list files the sources read the official split files themselves: UCF101's
`ucfTrainTestlist/{classInd,trainlist0k,testlist0k}.txt` (label = classInd index - 1) and
HMDB51's `testTrainMulti_7030_splits/<class>_test_split<k>.txt` (1 = train, 2 = test, 0 =
unused), counting each video's frame files on first use. HMDB51 labels follow `HMDB51_CLASSES`,
the class list of the list generator whose file names DSM's lists carry (TSN,
`yjxiong/temporal-segment-networks`, `data/hmdb51_splits/class_list.txt`, used by
`tools/build_file_list.py`): alphabetical except kick_ball / kick and sword_exercise / sword.

Each source is a random-access sequence of `{"video": lazy (F, H, W, 3) uint8, "label": int}`
(`video_lazy`: only the frames a clip indexes are decoded); `clips_per_video` > 0 wraps it in
`video.MultiClipSource`. Registered sources: "ucf101_frames", "hmdb51_frames",
"kinetics400_frames", and "ucf101" (TFDS, `video_tfds`).
"""
from __future__ import annotations

import glob
import os
import re
from typing import Any, Mapping, Sequence

import numpy as np

from jaxcompress.data import sources, video_lazy, video_tfds
from jaxcompress.data import video as video_lib
from jaxcompress.errors import ConfigError, DatasetNotFoundError

# Frame-name templates: the official ones first, then the official extraction script's.
TEMPLATES = ("frame{:06d}.jpg", "img_{:05d}.jpg", "image_{:05d}.jpg")
_OFFICIAL_TEMPLATE = {"ucf101": "frame{:06d}.jpg", "hmdb51": "img_{:05d}.jpg",
                      "kinetics400": "img_{:05d}.jpg"}
_NUM_CLASSES = {"ucf101": 101, "hmdb51": 51, "kinetics400": 400}
_TEST_NAMES = ("test", "val", "validation")
HMDB51_CLASSES = (
    "brush_hair", "cartwheel", "catch", "chew", "clap", "climb", "climb_stairs", "dive",
    "draw_sword", "dribble", "drink", "eat", "fall_floor", "fencing", "flic_flac", "golf",
    "handstand", "hit", "hug", "jump", "kick_ball", "kick", "kiss", "laugh", "pick", "pour",
    "pullup", "punch", "push", "pushup", "ride_bike", "ride_horse", "run", "shake_hands",
    "shoot_ball", "shoot_bow", "shoot_gun", "sit", "situp", "smile", "smoke", "somersault",
    "stand", "swing_baseball", "sword_exercise", "sword", "talk", "throw", "turn", "walk", "wave")

# (path, listed frame count or None, label); None: count the folder's files / a video file.
Record = tuple[str, "int | None", int]


def _split_kind(split: str) -> str:
  if split == "train":
    return "train"
  if split in _TEST_NAMES:
    return "test"
  raise ConfigError(f"Video folder sets have splits 'train' and 'test' (or 'val'), got "
                    f"{split!r}; set config.data.split / the eval split.")


def read_list_file(path: str) -> list[Record]:
  """Rows `<video path> <num frames> <label>` (frame folders) or `<video path> <label>`.

  The numbers are taken from the right, so a path may contain spaces (Kinetics class folders).

  Raises:
    DatasetNotFoundError: no such file. ConfigError: a malformed row or mixed row kinds.
  """
  if not os.path.isfile(path):
    raise DatasetNotFoundError(f"List file {path} not found.")
  records, kinds = [], set()
  with open(path) as f:
    for n, line in enumerate(f, 1):
      tokens = line.split()
      if not tokens:
        continue
      numeric = [t.lstrip("-").isdigit() for t in tokens]
      if len(tokens) >= 3 and numeric[-1] and numeric[-2]:
        path_part = line.strip().rsplit(None, 2)[0]
        records.append((path_part, int(tokens[-2]), int(tokens[-1])))
        kinds.add(3)
      elif len(tokens) >= 2 and numeric[-1]:
        records.append((line.strip().rsplit(None, 1)[0], None, int(tokens[-1])))
        kinds.add(2)
      else:
        raise ConfigError(f"{path}:{n}: expected '<video path> <num frames> <label>' or "
                          f"'<video path> <label>', got {line.strip()!r}.")
  if len(kinds) > 1:
    raise ConfigError(f"{path} mixes '<path> <frames> <label>' and '<path> <label>' rows; "
                      "use one kind per list.")
  return records


def ucf101_split(splits_dir: str, split_index: int, split: str
                 ) -> tuple[list[Record], list[str]]:
  """UCF101's official split `split_index` (1..3) from `ucfTrainTestlist`.

  Returns:
    Records `("<Class>/<video name>", None, classInd - 1)` in list order, and the class names.
  """
  _check_index(split_index)
  class_file = os.path.join(splits_dir, "classInd.txt")
  kind = "trainlist" if _split_kind(split) == "train" else "testlist"
  list_path = os.path.join(splits_dir, f"{kind}{split_index:02d}.txt")
  for p in (class_file, list_path):
    if not os.path.isfile(p):
      raise DatasetNotFoundError(f"UCF101 split file {p} not found.")
  names = {}
  with open(class_file) as f:
    for line in f:
      if line.strip():
        number, name = line.split()
        names[name] = int(number) - 1
  classes = sorted(names, key=names.get)
  records = []
  with open(list_path) as f:
    for line in f:
      if line.strip():
        entry = line.split()[0]  # trainlist rows also carry the 1-based label: classInd wins
        cls = entry.split("/")[0]
        records.append((os.path.splitext(entry)[0], None, names[cls]))
  return records, classes


def hmdb51_split(splits_dir: str, split_index: int, split: str
                 ) -> tuple[list[Record], list[str]]:
  """HMDB51's official split `split_index` (1..3) from `<class>_test_split<k>.txt` files.

  Returns:
    Records `("<class>/<video name>", None, HMDB51_CLASSES index)`, classes in label order,
    videos in file order; and the class names of the files found, in label order.
  """
  _check_index(split_index)
  suffix = f"_test_split{split_index}.txt"
  files = glob.glob(os.path.join(glob.escape(splits_dir), "*" + suffix))
  if not files:
    raise DatasetNotFoundError(f"No HMDB51 split files *{suffix} in {splits_dir}.")
  by_class = {os.path.basename(p)[:-len(suffix)]: p for p in files}
  unknown = sorted(set(by_class) - set(HMDB51_CLASSES))
  if unknown:
    raise ConfigError(f"{splits_dir} has split files of classes outside HMDB51: {unknown}.")
  wanted = "1" if _split_kind(split) == "train" else "2"
  classes = [c for c in HMDB51_CLASSES if c in by_class]
  records = []
  for cls in classes:
    with open(by_class[cls]) as f:
      for line in f:
        tokens = line.split()
        if len(tokens) >= 2 and tokens[1] == wanted:
          records.append((f"{cls}/{os.path.splitext(tokens[0])[0]}", None,
                          HMDB51_CLASSES.index(cls)))
  return records, classes


def _check_index(split_index: int) -> None:
  if split_index not in (1, 2, 3):
    raise ConfigError(f"UCF101 and HMDB51 have official splits 1, 2 and 3, got split_index="
                      f"{split_index}.")


def _template_regex(template: str) -> re.Pattern[str]:
  head, _, rest = template.partition("{")
  tail = rest.partition("}")[2]
  return re.compile(re.escape(head) + r"\d+" + re.escape(tail) + "$")


class VideoFolderSource:
  """Videos of a list: frame folders (or video files) under `root`, decoded lazily.

  A record's folder is `root/<path>`, else `root/<basename(path)>` (the official loader keeps
  only the base name), each also tried with `name_fixes` applied.

  Args:
    records: (path, listed frames or None, label) per video.
    root: folder holding the frame folders / video files.
    num_classes: classes of the set.
    image_tmpl: frame-name template; None detects one of `templates` on the first video.
    templates: candidates for detection (the set's official template first).
    short_side: optional short-side resize of every frame (official `Resize`).
    skip_last_frame: expose frames 1..N-1 of N (official `VideoRecord.num_frames`).
    name_fixes: (old, new) substrings tried when a folder is missing.
  """

  def __init__(self, records: Sequence[Record], root: str, num_classes: int,
               image_tmpl: str | None = None, templates: Sequence[str] = TEMPLATES,
               short_side: int | None = None, skip_last_frame: bool = True,
               name_fixes: Sequence[tuple[str, str]] = ()):
    if not records:
      raise DatasetNotFoundError(f"The video list for {root} is empty.")
    self._records, self.root, self.num_classes = list(records), root, num_classes
    self.labels = np.asarray([r[2] for r in self._records], np.int64)
    self.image_tmpl, self._templates = image_tmpl, tuple(templates)
    self.short_side, self.skip_last_frame = short_side, skip_last_frame
    self._fixes, self._counts = tuple(name_fixes), {}
    # Fail now, naming the folder, rather than in a data worker (reads one frame header).
    self.video(0).shape  # pylint: disable=expression-not-assigned

  def __len__(self) -> int:
    return len(self._records)

  def _candidates(self, path: str) -> list[str]:
    names = [path, os.path.basename(path)]
    for old, new in self._fixes:
      names += [n.replace(old, new) for n in names if old in n]
    return [os.path.join(self.root, n) for n in names]

  def _locate(self, path: str, folder: bool) -> str:
    exists = os.path.isdir if folder else os.path.isfile
    for candidate in self._candidates(path):
      if exists(candidate):
        return candidate
    raise DatasetNotFoundError(
        f"Video {path!r} not found under {self.root} (tried {self._candidates(path)}); check "
        f"config.data.source_kwargs.root and the list file.")

  def _template(self, folder: str) -> str:
    if self.image_tmpl is None:
      for template in self._templates:
        if os.path.isfile(os.path.join(folder, template.format(1))):
          self.image_tmpl = template
          break
      else:
        raise DatasetNotFoundError(
            f"No frame named like {', '.join(t.format(1) for t in self._templates)} in {folder}; "
            f"set config.data.source_kwargs.image_tmpl to the frame-name template.")
    return self.image_tmpl

  def _frame_count(self, folder: str, template: str) -> int:
    if folder not in self._counts:
      pattern = _template_regex(template)
      self._counts[folder] = sum(1 for n in os.listdir(folder) if pattern.match(n))
      if not self._counts[folder]:
        raise DatasetNotFoundError(f"No frame named like {template.format(1)} in {folder}; set "
                                   f"config.data.source_kwargs.image_tmpl to the frame names.")
    return self._counts[folder]

  def video(self, index: int) -> video_lazy.LazyVideo:
    """The lazily decoded video `index`."""
    path, listed, _ = self._records[index]
    if listed is None and os.path.splitext(path)[1].lower() in (".mp4", ".avi", ".mkv", ".webm",
                                                                ".mov", ".mpeg", ".mpg"):
      return video_lazy.VideoFile(self._locate(path, folder=False), self.short_side)
    folder = self._locate(path, folder=True)
    template = self._template(folder)
    count = listed if listed is not None else self._frame_count(folder, template)
    frames = max(count - 1, 1) if self.skip_last_frame else count
    return video_lazy.FrameFiles(folder, template, frames, short_side=self.short_side)

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    return {"video": self.video(index), "label": int(self._records[index][2])}


def _layout(dataset: str) -> str:
  splits = {"ucf101": "ucfTrainTestlist/{classInd,trainlist01,testlist01,...}.txt",
            "hmdb51": "testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt"}.get(dataset)
  lists = (f"lists/{dataset}_{{train,val}}_list.txt" if dataset == "kinetics400" else
           f"lists/{dataset}_rgb_{{train,val}}_split_{{1,2,3}}.txt")
  tmpl = _OFFICIAL_TEMPLATE[dataset]
  text = (f"  <data_dir>/frames/<video>/{tmpl.format(1)}, {tmpl.format(2)}, ...  (one folder per "
          f"video; {', '.join(t.format(1) for t in TEMPLATES if t != tmpl)} also read)\n"
          f"  <data_dir>/{lists}  (rows '<video> <num frames> <label>'"
          + (", or '<video file> <label>' read with PyAV)" if dataset == "kinetics400" else ")"))
  if splits:
    text += f"\n  or the official split files <data_dir>/{splits}"
  return text


_HOW = {
    "ucf101": "https://www.crcv.ucf.edu/data/UCF101/UCF101.rar and "
              "UCF101TrainTestSplits-RecognitionTask.zip from the same page",
    "hmdb51": "hmdb51_org.rar and test_train_splits.rar from "
              "https://serre-lab.clps.brown.edu/resource/hmdb-a-large-human-motion-database/",
    "kinetics400": "https://github.com/cvdfoundation/kinetics-dataset (Kinetics-400)",
}


def _not_found(dataset: str, why: str) -> DatasetNotFoundError:
  tmpl = _OFFICIAL_TEMPLATE[dataset].replace("{:0", "%0").replace("d}", "d")
  return DatasetNotFoundError(
      f"{dataset} frames not prepared: {why}. Expected the layout:\n{_layout(dataset)}\n"
      f"Download {_HOW[dataset]}, then extract frames once per video, e.g.\n"
      f"  ffmpeg -i <video>.avi -vf scale=-1:256 -q:v 2 <data_dir>/frames/<video>/{tmpl}\n"
      f"and set config.data.data_dir (or config.data.source_kwargs root / list_file / "
      f"splits_dir)." + (" UCF101 also comes through TFDS: config.data.name = 'ucf101'."
                         if dataset == "ucf101" else "")
      + " Offline videos: config.data.name = 'moving_squares'.")


def _list_path(list_file: str | Mapping[str, str], split: str, split_index: int) -> str:
  if isinstance(list_file, Mapping):
    if split not in list_file:
      raise ConfigError(f"list_file names the splits {sorted(list_file)}, not {split!r}.")
    list_file = list_file[split]
  return list_file.format(split=split, split_index=split_index)


def folder_source(dataset: str, split: str, data_dir: str | None = None, root: str | None = None,
                  list_file: str | Mapping[str, str] | None = None,
                  splits_dir: str | None = None, split_index: int = 1,
                  image_tmpl: str | None = None, short_side: int | None = None,
                  skip_last_frame: bool = True, clips_per_video: int = 0, clip_len: int = 16,
                  stride: int = 4) -> Any:
  """The source of `dataset` ("ucf101", "hmdb51", "kinetics400") for `split`.

  The video list is, in order: `list_file`; the official list name under `<data_dir>/lists`
  (`ucf101_rgb_train_split_1.txt` / `..._val_...`; Kinetics `kinetics400_{train,val}_list.txt`);
  the official split files in `splits_dir` (default `<data_dir>/ucfTrainTestlist` or
  `<data_dir>/testTrainMulti_7030_splits`).

  Args:
    dataset: "ucf101", "hmdb51" or "kinetics400".
    split: "train" or "test" ("val" / "validation" are the test split).
    data_dir: the dataset folder (`config.data.data_dir`).
    root: the frame folders (default `<data_dir>/frames`).
    list_file: a list path (may contain `{split}` and `{split_index}`) or {split: path}.
    splits_dir: the official split files' folder.
    split_index: official split 1, 2 or 3 (UCF101, HMDB51).
    image_tmpl, short_side, skip_last_frame: as `VideoFolderSource`.
    clips_per_video: > 0 gives that many evenly spaced `clip_len` x `stride` clips per video
      (`video.MultiClipSource`, video-level evaluation).
    clip_len, stride: the clips of `clips_per_video`.

  Raises:
    DatasetNotFoundError: missing folders or lists (the message has the layout and how to
      prepare it). ConfigError: bad split or split index.
  """
  _check_index(split_index)
  kind = _split_kind(split)
  official = "train" if kind == "train" else "val"
  root = root or (os.path.join(data_dir, "frames") if data_dir else None)
  if not root or not os.path.isdir(root):
    raise _not_found(dataset, f"frame folder root {root!r} does not exist")
  default_list = (f"{dataset}_{official}_list.txt" if dataset == "kinetics400" else
                  f"{dataset}_rgb_{official}_split_{split_index}.txt")
  default_splits = {"ucf101": "ucfTrainTestlist",
                    "hmdb51": "testTrainMulti_7030_splits"}.get(dataset)
  fixes = ()
  if list_file:
    records = read_list_file(_list_path(list_file, split, split_index))
  elif data_dir and os.path.isfile(os.path.join(data_dir, "lists", default_list)):
    records = read_list_file(os.path.join(data_dir, "lists", default_list))
  elif default_splits and (splits_dir or data_dir):
    splits_dir = splits_dir or os.path.join(data_dir, default_splits)
    if not os.path.isdir(splits_dir):
      raise _not_found(dataset, f"no list file and no split folder {splits_dir}")
    parse = ucf101_split if dataset == "ucf101" else hmdb51_split
    records = parse(splits_dir, split_index, split)[0]
    # The UCF101 split lists spell v_HandStandPushups_*, the videos v_HandstandPushups_*.
    fixes = (("HandStandPushups", "HandstandPushups"),) if dataset == "ucf101" else ()
  else:
    where = os.path.join(data_dir, "lists", default_list) if data_dir else default_list
    raise _not_found(dataset, f"no list_file given and no {where}")
  templates = (_OFFICIAL_TEMPLATE[dataset],) + tuple(
      t for t in TEMPLATES if t != _OFFICIAL_TEMPLATE[dataset])
  source = VideoFolderSource(records, root, _NUM_CLASSES[dataset], image_tmpl, templates,
                             short_side, skip_last_frame, fixes)
  if clips_per_video:
    return video_lib.MultiClipSource(source, clips_per_video, clip_len, stride)
  return source


def ucf101_frames(split: str, **kwargs: Any) -> Any:
  """The registered source "ucf101_frames": `folder_source("ucf101", split, **kwargs)`."""
  return folder_source("ucf101", split, **kwargs)


def hmdb51_frames(split: str, **kwargs: Any) -> Any:
  """The registered source "hmdb51_frames": `folder_source("hmdb51", split, **kwargs)`."""
  return folder_source("hmdb51", split, **kwargs)


def kinetics400_frames(split: str, **kwargs: Any) -> Any:
  """The registered source "kinetics400_frames": `folder_source("kinetics400", split, ...)`
  (frame folders or, for `<video> <label>` rows, video files read with PyAV)."""
  return folder_source("kinetics400", split, **kwargs)


sources.register("ucf101_frames", ucf101_frames)
sources.register("hmdb51_frames", hmdb51_frames)
sources.register("kinetics400_frames", kinetics400_frames)
sources.register("ucf101", video_tfds.ucf101)
