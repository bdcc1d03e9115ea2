"""UCF101 prepared by TFDS (`tfds build ucf101/ucf101_1 --file_format=array_record`), read lazily.

TFDS's `ucf101` builder (configs `ucf101_1`, `ucf101_2`, `ucf101_3`: the three official
train/test splits at the original 320x240; `ucf101_1_256`: split 1 at 256x256) stores every
video as one JPEG per frame (`tfds.features.Video(encoding_format="jpeg")`) and the label
index of `ucf101_labels.txt` (classInd order, 0-based). `tfds.data_source` gives random access
to the ArrayRecord shards, but (TFDS 4.9) its `Video` feature needs TensorFlow to be built at
all, and decoding an example decodes every frame of the video. This source therefore reads the
same shards with ArrayRecord's random-access reader and parses each record's `tf.train.Example`
with TFDS's TensorFlow-free protos: an example's "video" is a `video_lazy.EncodedFrames` that
decodes only the frames a clip indexes (DSM, arXiv 2009.05757, reads 16 frames of hundreds).
TensorFlow is only needed once, to build the data.
"""
from __future__ import annotations

import glob
import os
from typing import Any

import numpy as np

from jaxcompress.data import video as video_lib
from jaxcompress.data import video_lazy
from jaxcompress.errors import ConfigError, DatasetNotFoundError

NAME = "ucf101"
NUM_CLASSES = 101
_SPLITS = {"train": "train", "test": "test", "val": "test", "validation": "test"}


def tfds_data_dir(data_dir: str | None) -> str:
  """`data_dir`, else $TFDS_DATA_DIR, else ~/tensorflow_datasets (TFDS's own default)."""
  return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR")
                            or "~/tensorflow_datasets")


def _version(name: str) -> tuple[int, ...] | None:
  try:
    return tuple(int(p) for p in name.split("."))
  except ValueError:
    return None  # e.g. TFDS's temporary "*.incomplete*" folders


def find_shards(data_dir: str, config: str, split: str) -> list[str]:
  """The ArrayRecord shards of `<data_dir>/ucf101/<config>/<newest version>/` for `split`."""
  base = os.path.join(data_dir, NAME, config)
  versions = sorted((v, d) for d in (os.listdir(base) if os.path.isdir(base) else [])
                    if (v := _version(d)) is not None)
  for _, d in reversed(versions):
    pattern = os.path.join(glob.escape(os.path.join(base, d)),
                           f"{NAME}-{split}.array_record-*")
    shards = sorted(glob.glob(pattern))
    if shards:
      return shards
  return []


def _not_prepared(config: str, data_dir: str | None, where: str) -> DatasetNotFoundError:
  command = (f"  pip install -e .[prepare] && tfds build {NAME}/{config} "
             f"--file_format=array_record" + (f" --data_dir={data_dir}" if data_dir else ""))
  return DatasetNotFoundError(
      f"TFDS dataset '{NAME}/{config}' is not prepared in ArrayRecord format under {where}. "
      f"Prepare it once (downloads UCF101, about 6.5 GB; needs ffmpeg) with:\n{command}\n"
      f"Frame folders work too: config.data.name = 'ucf101_frames'. Offline videos: "
      f"config.data.name = 'moving_squares'.")


class Ucf101Tfds:
  """One split of a TFDS-prepared UCF101 config, examples `{"video": lazy, "label"}`.

  Args:
    split: "train" or "test" ("val" / "validation" are the test split).
    split_index: official split 1, 2 or 3 (config `ucf101_<k>`).
    config: a TFDS config name instead (e.g. "ucf101_1_256").
    data_dir: TFDS data directory (default $TFDS_DATA_DIR or ~/tensorflow_datasets).
    short_side: optional short-side resize of every frame (official `Resize`).

  Attributes:
    num_classes: 101. `labels` (read on first use: it parses every record).
  """
  num_classes = NUM_CLASSES

  def __init__(self, split: str, split_index: int = 1, config: str | None = None,
               data_dir: str | None = None, short_side: int | None = None):
    if split not in _SPLITS:
      raise ConfigError(f"TFDS ucf101 has splits 'train' and 'test', got {split!r}.")
    if config is None and split_index not in (1, 2, 3):
      raise ConfigError(f"UCF101 has official splits 1, 2 and 3, got split_index={split_index}.")
    self.config = config or f"{NAME}_{split_index}"
    self.split, self.short_side = _SPLITS[split], short_side
    directory = tfds_data_dir(data_dir)
    shards = find_shards(directory, self.config, self.split)
    if not shards:
      raise _not_prepared(self.config, data_dir, directory)
    try:
      # pylint: disable-next=g-import-not-at-top
      from array_record.python import array_record_data_source
    except ModuleNotFoundError:
      raise DatasetNotFoundError("Reading TFDS ArrayRecord shards needs the array_record "
                                 "package (installed with grain): pip install -e .") from None
    self._records = array_record_data_source.ArrayRecordDataSource(shards)
    self._labels: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self._records)

  def _parse(self, index: int) -> tuple[list[bytes], int]:
    from tensorflow_datasets.proto import tf_example_pb2  # pylint: disable=g-import-not-at-top
    features = tf_example_pb2.Example.FromString(self._records[int(index)]).features.feature
    return list(features["video"].bytes_list.value), int(features["label"].int64_list.value[0])

  def __getitem__(self, index: int) -> dict[str, Any]:
    frames, label = self._parse(index)
    return {"video": video_lazy.EncodedFrames(frames, self.short_side), "label": label}

  @property
  def labels(self) -> np.ndarray:
    if self._labels is None:
      self._labels = np.asarray([self._parse(i)[1] for i in range(len(self))], np.int64)
    return self._labels


def ucf101(split: str, split_index: int = 1, config: str | None = None,
           data_dir: str | None = None, short_side: int | None = None, clips_per_video: int = 0,
           clip_len: int = 16, stride: int = 4) -> Any:
  """The registered source "ucf101" (TFDS-prepared; `config.data.source_kwargs` holds options).

  Args:
    split, split_index, config, data_dir, short_side: as `Ucf101Tfds`.
    clips_per_video: > 0 gives that many evenly spaced `clip_len` x `stride` clips per video
      (`video.MultiClipSource`, video-level evaluation).
    clip_len, stride: the clips of `clips_per_video`.

  Raises:
    DatasetNotFoundError: not prepared; the message has the `tfds build` command.
  """
  source = Ucf101Tfds(split, split_index, config, data_dir, short_side)
  if clips_per_video:
    return video_lib.MultiClipSource(source, clips_per_video, clip_len, stride)
  return source
