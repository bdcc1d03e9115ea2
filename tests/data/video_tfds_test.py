"""Tests for UCF101 read from TFDS-prepared ArrayRecord shards.

The fixture is written by TFDS itself: a builder named "ucf101" with the configs `ucf101_1` and
`ucf101_2` and the real builder's feature layout (a sequence of JPEG frames and a 101-way
label), prepared with `file_format="array_record"` into a temporary data directory. The
expected frames are PIL decodes of the JPEG bytes handed to TFDS.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from jaxcompress.data import sources, transforms, video_lazy, video_tfds
from jaxcompress.data import video as video_lib
from jaxcompress.errors import ConfigError, DatasetNotFoundError

tfds = pytest.importorskip("tensorflow_datasets")

H, W = 8, 10
# Per split: (label, frames) of each video; labels distinct so examples can be matched.
_VIDEOS = {"train": [(0, 6), (7, 9), (37, 5)], "test": [(100, 7), (3, 4)]}


def _jpeg(seed, count):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(count):
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(buf, format="JPEG")
    out.append(buf.getvalue())
  return out


def _frames(split, label):
  count = dict(_VIDEOS[split])[label]
  return _jpeg(label, count)


class _Ucf101(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  name = "ucf101"
  code_path = None  # no checksums file to look up (its lookup imports importlib_resources)
  VERSION = tfds.core.Version("2.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="ucf101_1"),
                     tfds.core.BuilderConfig(name="ucf101_2")]

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "video": tfds.features.Sequence(tfds.features.Image(shape=(H, W, 3),
                                                            encoding_format="jpeg")),
        "label": tfds.features.ClassLabel(num_classes=101)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in _VIDEOS}

  def _generate_examples(self, split):
    for label, _ in _VIDEOS[split]:
      yield f"{split}{label}", {"video": [io.BytesIO(b) for b in _frames(split, label)],
                                "label": label}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("tfds"))
  _Ucf101(config="ucf101_1", data_dir=d, file_format="array_record").download_and_prepare()
  return d


def _decode(data):
  return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_examples_labels_and_frames(data_dir):
  for split in ("train", "test"):
    src = video_tfds.ucf101(split, data_dir=data_dir)
    assert len(src) == len(_VIDEOS[split]) and src.num_classes == 101
    assert sorted(src.labels.tolist()) == sorted(label for label, _ in _VIDEOS[split])
    for i in range(len(src)):
      item = src[i]
      assert item["label"] == src.labels[i]
      jpegs = _frames(split, item["label"])
      video = item["video"]
      assert len(video) == len(jpegs) and video.shape == (len(jpegs), H, W, 3)
      order = [len(jpegs) - 1, 0, 2, 0]
      np.testing.assert_array_equal(video[np.asarray(order)],
                                    np.stack([_decode(jpegs[j]) for j in order]))


def test_only_the_indexed_frames_are_decoded(data_dir, monkeypatch):
  decoded = []
  original = video_lazy.EncodedFrames._images

  def spy(self, indices):
    decoded.extend(indices)
    return original(self, indices)

  monkeypatch.setattr(video_lazy.EncodedFrames, "_images", spy)
  video = video_tfds.ucf101("train", data_dir=data_dir)[0]["video"]
  video[video_lib.clip_indices(0, len(video), 4, 2)]
  assert sorted(decoded) == sorted(set(video_lib.clip_indices(0, len(video), 4, 2).tolist()))


def test_registered_with_short_side_and_clips(data_dir):
  transforms.load_providers()
  src = sources.get_configured("ucf101", "test", data_dir, {"short_side": 6, "clips_per_video": 2,
                                                            "clip_len": 3, "stride": 2})
  assert len(src) == 4 and src.labels.tolist()[::2] == src.source.labels.tolist()
  item = src[0]
  # Official Resize(6) of 10x8 (w x h): 6 rows, int(6 * 10 / 8) = 7 columns, bilinear.
  assert item["video"].shape[1:] == (6, 7, 3)
  jpegs = _frames("test", item["label"])
  want = np.asarray(Image.open(io.BytesIO(jpegs[1])).convert("RGB").resize((7, 6),
                                                                          Image.BILINEAR))
  np.testing.assert_array_equal(item["video"][1], want)
  clip = transforms.get("video_clip", train=False, clip_len=3, stride=2)(
      item, np.random.default_rng(0))
  start = item["clip_start"]
  assert start == video_lib.spaced_starts(len(jpegs), 3, 2, 2)[0]
  assert clip["image"].shape == (3, 6, 7, 3)


def test_not_prepared_names_the_build_command(data_dir, tmp_path):
  with pytest.raises(DatasetNotFoundError) as e:
    video_tfds.ucf101("train", split_index=2, data_dir=data_dir)
  assert f"tfds build ucf101/ucf101_2 --file_format=array_record --data_dir={data_dir}" in str(
      e.value)
  with pytest.raises(DatasetNotFoundError, match="ucf101_frames"):
    video_tfds.ucf101("test", data_dir=str(tmp_path))
  with pytest.raises(ConfigError, match="split_index"):
    video_tfds.ucf101("train", split_index=0, data_dir=data_dir)
  with pytest.raises(ConfigError, match="'train' and 'test'"):
    video_tfds.ucf101("train[:10%]", data_dir=data_dir)
