"""Tests for the UCF101 / HMDB51 / Kinetics-400 frame-folder sources and the lazy videos.

Fixtures are tiny real layouts written per test: frame folders with the official names
(`frame000001.jpg`, `img_00001.jpg`, `image_00001.jpg`), official split files and DSM-style list
files. Expected frames are decoded independently with PIL from the file the official loader
would open (frame i -> file i + 1), so the checks cover which file, in which order, exactly.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from jaxcompress.data import sources, transforms, video_folders, video_lazy
from jaxcompress.data import video as video_lib
from jaxcompress.errors import ConfigError, DatasetNotFoundError

H, W = 8, 10


def _write_frames(folder, count, template, seed):
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  for n in range(1, count + 1):
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(
        os.path.join(folder, template.format(n)), quality=90)


def _decode(folder, template, number):
  return np.asarray(Image.open(os.path.join(folder, template.format(number))).convert("RGB"))


# UCF101: class, list name (as the split files spell it), folder name, frame files.
_UCF = [("ApplyEyeMakeup", "v_ApplyEyeMakeup_g01_c01", 9), ("Archery", "v_Archery_g01_c01", 6),
        ("HandstandPushups", "v_HandStandPushups_g01_c01", 7),
        ("ApplyEyeMakeup", "v_ApplyEyeMakeup_g08_c02", 12), ("Archery", "v_Archery_g09_c01", 5)]
_UCF_CLASSES = {"ApplyEyeMakeup": 1, "Archery": 3, "HandstandPushups": 37}


@pytest.fixture
def ucf(tmp_path):
  data = tmp_path / "ucf101"
  for i, (_, name, count) in enumerate(_UCF):
    folder = name.replace("HandStand", "Handstand")  # the videos' spelling
    _write_frames(str(data / "frames" / folder), count, "frame{:06d}.jpg", i)
  splits = data / "ucfTrainTestlist"
  splits.mkdir()
  (splits / "classInd.txt").write_text(
      "".join(f"{n} {c}\n" for c, n in _UCF_CLASSES.items()))
  for k, (train, test) in {1: ([0, 1, 2], [3, 4]), 2: ([3, 4, 2], [0, 1]),
                           3: ([0, 4], [1, 2, 3])}.items():
    (splits / f"trainlist{k:02d}.txt").write_text("".join(
        f"{_UCF[i][0]}/{_UCF[i][1]}.avi {_UCF_CLASSES[_UCF[i][0]]}\n" for i in train))
    (splits / f"testlist{k:02d}.txt").write_text("".join(
        f"{_UCF[i][0]}/{_UCF[i][1]}.avi\n" for i in test))
  return str(data)


def test_ucf101_official_splits_labels_and_frame_counts(ucf):
  expect = {1: ([0, 1, 2], [3, 4]), 2: ([3, 4, 2], [0, 1]), 3: ([0, 4], [1, 2, 3])}
  for k, (train, test) in expect.items():
    for split, ids in (("train", train), ("test", test)):
      src = video_folders.ucf101_frames(split, data_dir=ucf, split_index=k)
      assert len(src) == len(ids) and src.num_classes == 101
      # classInd is 1-based; the official lists' labels are 0-based.
      want = [_UCF_CLASSES[_UCF[i][0]] - 1 for i in ids]
      assert src.labels.tolist() == want
      for j, i in enumerate(ids):
        item = src[j]
        assert item["label"] == want[j]
        # Official VideoRecord.num_frames: N frame files -> N - 1 frames.
        assert len(item["video"]) == _UCF[i][2] - 1
        assert item["video"].shape == (_UCF[i][2] - 1, H, W, 3)
  full = video_folders.ucf101_frames("val", data_dir=ucf, skip_last_frame=False)
  assert [len(full[j]["video"]) for j in range(2)] == [12, 5]


def test_lazy_frames_are_the_official_files_in_order(ucf):
  src = video_folders.ucf101_frames("train", data_dir=ucf)
  video = src[2]["video"]  # listed as v_HandStandPushups_*, stored as v_HandstandPushups_*
  folder = os.path.join(ucf, "frames", "v_HandstandPushups_g01_c01")
  order = [3, 0, 5, 3, 1]
  got = video[np.asarray(order)]
  assert got.dtype == np.uint8 and got.shape == (5, H, W, 3)
  for row, i in zip(got, order):
    np.testing.assert_array_equal(row, _decode(folder, "frame{:06d}.jpg", i + 1))
  np.testing.assert_array_equal(video[4], _decode(folder, "frame{:06d}.jpg", 5))
  np.testing.assert_array_equal(video[-1], _decode(folder, "frame{:06d}.jpg", 6))
  np.testing.assert_array_equal(video[1:3], np.stack(
      [_decode(folder, "frame{:06d}.jpg", n) for n in (2, 3)]))
  np.testing.assert_array_equal(np.asarray(video), np.stack(
      [_decode(folder, "frame{:06d}.jpg", n) for n in range(1, 7)]))
  with pytest.raises(IndexError):
    video[np.asarray([6])]


def test_only_the_indexed_frames_are_decoded(ucf, monkeypatch):
  opened = []
  original = video_lazy.FrameFiles._open

  def spy(self, index):
    opened.append(index)
    return original(self, index)

  monkeypatch.setattr(video_lazy.FrameFiles, "_open", spy)
  video = video_folders.ucf101_frames("train", data_dir=ucf)[0]["video"]
  opened.clear()
  video[video_lib.clip_indices(1, len(video), 6, 3)]  # 1, 4, 7, 0, 3, 6
  assert sorted(opened) == [0, 1, 3, 4, 6, 7]


def test_list_files_official_names_counts_and_base_name_paths(ucf):
  lists = os.path.join(ucf, "lists")
  os.makedirs(lists)
  # The official lists hold paths of another machine: only the base name is used.
  with open(os.path.join(lists, "ucf101_rgb_train_split_1.txt"), "w") as f:
    f.write("/elsewhere/UCF101/jpegs_256/v_Archery_g01_c01 6 2\n"
            "v_ApplyEyeMakeup_g01_c01 9 0\n")
  src = video_folders.ucf101_frames("train", data_dir=ucf)
  assert src.labels.tolist() == [2, 0] and [len(src[i]["video"]) for i in range(2)] == [5, 8]
  # A count larger than the folder: missing frames read frame 1 (official _load_image).
  with open(os.path.join(lists, "long.txt"), "w") as f:
    f.write("v_Archery_g01_c01 9 2\n")
  video = video_folders.ucf101_frames("train", data_dir=ucf, list_file=os.path.join(
      lists, "long.txt"))[0]["video"]
  folder = os.path.join(ucf, "frames", "v_Archery_g01_c01")
  assert len(video) == 8
  np.testing.assert_array_equal(video[np.asarray([7, 5])], np.stack(
      [_decode(folder, "frame{:06d}.jpg", 1), _decode(folder, "frame{:06d}.jpg", 6)]))
  per_split = {"train": os.path.join(lists, "long.txt"),
               "test": os.path.join(lists, "ucf101_rgb_train_split_1.txt")}
  assert len(video_folders.ucf101_frames("test", data_dir=ucf, list_file=per_split)) == 2


def test_read_list_file_rows(tmp_path):
  p = tmp_path / "l.txt"
  p.write_text("a/b 10 3\n\nair drumming/x y 7 1\n")
  assert video_folders.read_list_file(str(p)) == [("a/b", 10, 3), ("air drumming/x y", 7, 1)]
  p.write_text("abseiling/v1.mp4 0\nair drumming/v2.mp4 3\n")
  assert video_folders.read_list_file(str(p)) == [("abseiling/v1.mp4", None, 0),
                                                  ("air drumming/v2.mp4", None, 3)]
  p.write_text("a 10 3\nb 4\n")
  with pytest.raises(ConfigError, match="mixes"):
    video_folders.read_list_file(str(p))
  p.write_text("a b c\n")
  with pytest.raises(ConfigError, match="<num frames>"):
    video_folders.read_list_file(str(p))


# HMDB51: class -> [(video, split-1 id, split-2 id, frame files)]; 1 train, 2 test, 0 unused.
_HMDB = {"brush_hair": [("April_brush_hair_u_nm_np1_ba_goo_0", 1, 2, 6),
                        ("Blonde_brush_hair_f_nm_np2_le_med_1", 2, 1, 5)],
         "kick_ball": [("Goal_kick_ball_f_cm_np1_ba_bad_0", 0, 1, 7)],
         "kick": [("Karate_kick_f_cm_np1_fr_goo_2", 1, 0, 4),
                  ("Fight_kick_f_cm_np1_fr_med_3", 2, 2, 8)]}


@pytest.fixture
def hmdb(tmp_path):
  data = tmp_path / "hmdb51"
  splits = data / "testTrainMulti_7030_splits"
  splits.mkdir(parents=True)
  for c, (cls, videos) in enumerate(_HMDB.items()):
    for v, (name, _, _, count) in enumerate(videos):
      # Class sub-folders (the official extraction script's layout before flattening).
      _write_frames(str(data / "frames" / cls / name), count, "img_{:05d}.jpg", 10 * c + v)
    for k in (1, 2, 3):
      (splits / f"{cls}_test_split{k}.txt").write_text("".join(
          f"{name}.avi {v[min(k, 2) - 1]} \n" for name, *v in videos))
  return str(data)


# Labels of TSN's class_list.txt (the generator of the official list names): kick_ball is 20,
# kick 21 (not alphabetical).
_HMDB_LABELS = {"brush_hair": 0, "kick_ball": 20, "kick": 21}


def test_hmdb51_official_splits(hmdb):
  classes = ["brush_hair", "kick_ball", "kick"]
  for k in (1, 2):
    for split, wanted in (("train", 1), ("test", 2)):
      src = video_folders.hmdb51_frames(split, data_dir=hmdb, split_index=k)
      expect = [(name, cls, count) for cls in classes
                for name, *ids, count in _HMDB[cls] if ids[k - 1] == wanted]
      assert src.num_classes == 51 and len(src) == len(expect)
      assert src.labels.tolist() == [_HMDB_LABELS[e[1]] for e in expect]
      for j, (name, cls, count) in enumerate(expect):
        item = src[j]
        assert item["label"] == _HMDB_LABELS[cls] and len(item["video"]) == count - 1
        folder = os.path.join(hmdb, "frames", cls, name)
        np.testing.assert_array_equal(item["video"][np.asarray([count - 2, 0])], np.stack(
            [_decode(folder, "img_{:05d}.jpg", count - 1), _decode(folder, "img_{:05d}.jpg", 1)]))


def test_kinetics_frame_folders_detect_the_extraction_scripts_names(tmp_path):
  data = tmp_path / "k400"
  _write_frames(str(data / "frames" / "air drumming" / "abc_000010_000020"), 6,
                "image_{:05d}.jpg", 0)
  _write_frames(str(data / "frames" / "abseiling" / "xyz_000000_000010"), 4, "image_{:05d}.jpg", 1)
  (data / "lists").mkdir()
  (data / "lists" / "kinetics400_val_list.txt").write_text(
      "air drumming/abc_000010_000020 6 3\nabseiling/xyz_000000_000010 4 0\n")
  src = video_folders.kinetics400_frames("test", data_dir=str(data), short_side=6)
  assert src.num_classes == 400 and src.labels.tolist() == [3, 0]
  video = src[0]["video"]
  # Official Resize(6) on 10x8 (w x h) PIL frames: short side 6, long int(6 * 10 / 8) = 7.
  assert video.shape == (5, 6, 7, 3)
  folder = str(data / "frames" / "air drumming" / "abc_000010_000020")
  want = np.asarray(Image.open(os.path.join(folder, "image_00003.jpg")).convert("RGB").resize(
      (7, 6), Image.BILINEAR))
  np.testing.assert_array_equal(video[2], want)
  with pytest.raises(DatasetNotFoundError, match="kinetics400_train_list"):
    video_folders.kinetics400_frames("train", data_dir=str(data))


def test_clip_transforms_read_the_clip_frames(ucf):
  src = video_folders.ucf101_frames("test", data_dir=ucf)
  example = src[0]  # _UCF[3]: 12 files -> 11 frames
  folder = os.path.join(ucf, "frames", _UCF[3][1])
  fn = transforms.get("video_clip", train=False, clip_len=4, stride=3)
  clip = fn(example, np.random.default_rng(0))
  start = video_lib.centre_start(11, 4, 3)
  np.testing.assert_array_equal(clip["image"], np.stack(
      [_decode(folder, "frame{:06d}.jpg", i + 1) for i in video_lib.clip_indices(start, 11, 4, 3)]))
  assert clip["label"] == 0
  dsm = transforms.get("dsm_clips", train=True, clip_len=4, stride=3, warp=False)
  out = dsm(example, np.random.default_rng(1))
  assert {"image", "positive", "negative"} <= set(out)
  assert out["image"].shape == out["negative"].shape == (4, H, W, 3)
  np.testing.assert_array_equal(out["image"], out["positive"])  # no augmentation, same frames


def test_clips_per_video(hmdb):
  src = video_folders.hmdb51_frames("test", data_dir=hmdb, clips_per_video=3, clip_len=2,
                                    stride=1)
  assert isinstance(src, video_lib.MultiClipSource) and len(src) == 6
  assert src.labels.tolist() == [0, 0, 0, 21, 21, 21]
  starts = [src[i]["clip_start"] for i in range(3)]
  frames = len(src[0]["video"])
  assert starts == video_lib.spaced_starts(frames, 2, 1, 3).tolist()
  assert [src[i]["video_index"] for i in range(6)] == [0, 0, 0, 1, 1, 1]


def test_registered_sources(ucf, hmdb):
  transforms.load_providers()
  assert {"ucf101_frames", "hmdb51_frames", "kinetics400_frames", "ucf101"} <= set(
      sources.names())
  src = sources.get_configured("ucf101_frames", "train", ucf, {"split_index": 2})
  assert len(src) == 3
  src = sources.get("hmdb51_frames", "train", data_dir=hmdb, split_index=2)
  assert src.labels.tolist() == [0, 20]


def test_missing_data_messages(tmp_path, ucf):
  with pytest.raises(DatasetNotFoundError) as e:
    video_folders.ucf101_frames("train", data_dir=str(tmp_path / "nowhere"))
  msg = str(e.value)
  assert "frame000001.jpg" in msg and "ucfTrainTestlist" in msg and "ffmpeg" in msg
  assert "ucf101_rgb_{train,val}_split_{1,2,3}.txt" in msg and "UCF101.rar" in msg
  with pytest.raises(DatasetNotFoundError, match="testTrainMulti_7030_splits"):
    video_folders.hmdb51_frames("train", data_dir=ucf)  # frames exist, no HMDB51 lists
  with pytest.raises(ConfigError, match="split_index"):
    video_folders.ucf101_frames("train", data_dir=ucf, split_index=4)
  with pytest.raises(ConfigError, match="'train' and 'test'"):
    video_folders.ucf101_frames("unlabelled", data_dir=ucf)
  with pytest.raises(DatasetNotFoundError, match="image_tmpl"):
    video_folders.ucf101_frames("train", data_dir=ucf, image_tmpl="x_{:03d}.png")
  os.rename(os.path.join(ucf, "frames", "v_Archery_g01_c01"), os.path.join(ucf, "moved"))
  src = video_folders.ucf101_frames("train", data_dir=ucf)  # the first video is still there
  with pytest.raises(DatasetNotFoundError, match="v_Archery_g01_c01"):
    src[1]


def _write_video(path, frames, codec, pix_fmt):
  av = pytest.importorskip("av")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with av.open(path, "w") as container:
    stream = container.add_stream(codec, rate=25)
    stream.width, stream.height, stream.pix_fmt = W, H, pix_fmt
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())


def test_kinetics_video_files_decoded_with_pyav(tmp_path):
  pytest.importorskip("av")
  rng = np.random.default_rng(0)
  a, b = (rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8) for n in (7, 5))
  data = tmp_path / "k400"
  # Lossless codecs so decoded frames equal the written ones; the .mkv stores no frame count.
  _write_video(str(data / "frames" / "abseiling" / "a.avi"), a, "png", "rgb24")
  _write_video(str(data / "frames" / "air drumming" / "b.mkv"), b, "ffv1", "bgr0")
  (data / "lists").mkdir()
  (data / "lists" / "kinetics400_train_list.txt").write_text(
      "abseiling/a.avi 0\nair drumming/b.mkv 5\n")
  src = video_folders.kinetics400_frames("train", data_dir=str(data))
  assert src.labels.tolist() == [0, 5]
  for i, frames in enumerate((a, b)):
    video = src[i]["video"]
    # Video files keep every frame (the official -1 applies to listed frame counts).
    assert len(video) == len(frames) and video.shape == frames.shape
    order = np.asarray([len(frames) - 1, 2, 0, 2])
    np.testing.assert_array_equal(video[order], frames[order])
