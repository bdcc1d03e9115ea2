"""Tests for clip sampling (wrap-around, DSM's negative start), the video transforms and the
offline moving-square videos."""
from __future__ import annotations

import numpy as np
import pytest

from jaxcompress.data import sources, transforms, video_offline
from jaxcompress.data import video as video_lib
from jaxcompress.errors import ConfigError


def _official_read(start, frames, clip_len, stride):
  """The official reading loop on 0-based frames: next = p + stride, or 0 past the end."""
  out, p = [], start
  while len(out) < clip_len:
    out.append(p)
    p = p + stride if p + stride < frames else 0
  return out


def test_clip_indices_restart_at_frame_zero_past_the_end():
  # 16 frames x stride 4 from a 20-frame video starting at 10: 10, 14, 18, then 0, 4, ...
  idx = video_lib.clip_indices(10, 20, 16, 4)
  assert idx.tolist()[:6] == [10, 14, 18, 0, 4, 8]
  for start, frames, clip_len, stride in [(10, 20, 16, 4), (0, 3, 5, 1), (5, 7, 9, 3)]:
    assert video_lib.clip_indices(start, frames, clip_len, stride).tolist() == _official_read(
        start, frames, clip_len, stride)
  assert video_lib.clip_indices(0, 3, 5, 1).tolist() == [0, 1, 2, 0, 1]
  with pytest.raises(ConfigError, match="stride"):
    video_lib.clip_indices(0, 10, 4, 0)


def test_training_starts_cover_the_official_range():
  rng = np.random.default_rng(0)
  starts = {video_lib.sample_start(rng, 100, 16, 4) for _ in range(2000)}
  assert starts == set(range(0, 100 - 64 + 1))
  # Shorter than one clip: every clip starts at frame 0 and wraps.
  assert {video_lib.sample_start(rng, 30, 16, 4) for _ in range(50)} == {0}


def _official_negative(s_pos, s_draw, f):
  """The official rule on 1-based starts (get_dsm_items), for a given draw."""
  s = s_draw
  if abs(s - s_pos) < 2:
    s = (s + f // 3) % f
    if s == 0:
      s = 1
  return s


@pytest.mark.parametrize("frames,clip_len,stride", [(100, 16, 4), (70, 16, 4), (12, 8, 1),
                                                    (40, 16, 1)])
def test_negative_start_matches_the_official_rule(frames, clip_len, stride):
  for seed in range(300):
    rng = np.random.default_rng(seed)
    anchor = video_lib.sample_start(rng, frames, clip_len, stride)
    state = rng.bit_generator.state
    ours = video_lib.negative_start(rng, anchor, frames, clip_len, stride)
    rng.bit_generator.state = state
    draw = video_lib.sample_start(rng, frames, clip_len, stride)
    assert ours == _official_negative(anchor + 1, draw + 1, frames) - 1
    assert 0 <= ours < frames
    if video_lib.max_start(frames, clip_len, stride) >= 4:
      assert abs(ours - anchor) >= 2 or frames // 3 < 2


def test_spaced_starts_and_multi_clip_source():
  assert video_lib.spaced_starts(100, 16, 4, 1).tolist() == [18]
  assert video_lib.spaced_starts(100, 16, 4, 3).tolist() == [0, 18, 36]
  base = video_offline.moving_squares("test", num_videos=3, num_frames=10)
  multi = video_lib.MultiClipSource(base, 2, clip_len=4, stride=2)
  assert len(multi) == 6
  item = multi[3]
  assert item["video_index"] == 1 and item["clip_start"] == 2 and item["label"] == base[1]["label"]
  np.testing.assert_array_equal(item["video"], base[1]["video"])
  np.testing.assert_array_equal(multi.labels, np.repeat(base.labels, 2))


def test_moving_squares_is_deterministic_biased_in_train_and_not_in_test():
  train = sources.get("moving_squares", "train", num_videos=400, seed=3)
  test = sources.get("moving_squares", "test", num_videos=400, seed=3)
  a, b = train[5], sources.get("moving_squares", "train", num_videos=400, seed=3)[5]
  np.testing.assert_array_equal(a["video"], b["video"])
  assert a["video"].shape == (16, 32, 32, 3) and a["video"].dtype == np.uint8
  agree_train = np.mean(train.labels == train.scenes)
  agree_test = np.mean(test.labels == test.scenes)
  assert agree_train > 0.85  # 0.9 + 0.1 / 4 expected
  assert 0.1 < agree_test < 0.4  # independent: 1 / 4 expected
  assert not np.array_equal(train[0]["video"], test[0]["video"])


@pytest.mark.parametrize("label", range(4))
def test_the_square_moves_in_its_class_direction(label):
  rng = np.random.default_rng(label)
  v = video_offline.render(label, scene=0, num_frames=16, size=32, square=8, rng=rng).astype(int)
  # The square is the brightest object; between frames it moves 0..SPEED px along its
  # direction, and over the video it moves.
  bright = v.min(-1) > 180
  dr, dc = video_offline.DIRECTIONS[label]
  total = 0
  for t in range(15):
    first = {tuple(p) for p in np.argwhere(bright[t])}
    second = {tuple(p) for p in np.argwhere(bright[t + 1])}
    assert len(first) == len(second) == 64
    steps = [s for s in range(video_offline.SPEED + 1)
             if {((r + s * dr) % 32, (c + s * dc) % 32) for r, c in first} == second]
    assert len(steps) == 1
    total += steps[0]
  assert total > 0


def test_video_clip_transform_train_and_eval():
  example = {"video": np.arange(20)[:, None, None, None] * np.ones((20, 6, 6, 1), np.uint8),
             "label": 2, "index": 7}
  train_fn = transforms.get("video_clip", train=True, clip_len=4, stride=3, crop_size=4,
                            flip=True)
  out = train_fn(dict(example), np.random.default_rng(0))
  assert out["image"].shape == (4, 4, 4, 1) and out["label"] == 2 and out["index"] == 7
  frames = out["image"][:, 0, 0, 0]
  assert np.all(np.diff(frames.astype(int)) == 3)  # max start 8: no restart
  eval_fn = transforms.get("video_clip", train=False, clip_len=4, stride=3, crop_size=4)
  centre = eval_fn(dict(example), None)["image"][:, 0, 0, 0]
  assert centre.tolist() == [4, 7, 10, 13]  # max start 20 - 12 = 8, centre 4
  named = eval_fn({**example, "clip_start": 18}, None)["image"][:, 0, 0, 0]
  assert named.tolist() == [18, 0, 3, 6]


def test_dsm_clips_share_frames_and_the_negative_differs():
  video = (np.arange(40)[:, None, None, None] * np.ones((40, 8, 8, 1))).astype(np.uint8)
  fn = transforms.get("dsm_clips", train=True, clip_len=4, stride=2, crop_size=6, warp=False)
  for seed in range(20):
    out = fn({"video": video, "label": 1}, np.random.default_rng(seed))
    q, p, n = (out[k][:, 0, 0, 0].astype(int) for k in ("image", "positive", "negative"))
    np.testing.assert_array_equal(q, p)  # same frames, own crops
    assert q[0] != n[0] and abs(int(q[0]) - int(n[0])) >= 2
  out = transforms.get("dsm_clips", train=True, clip_len=4, inter_video=True)(
      {"video": video, "label": 1}, np.random.default_rng(0))
  assert set(out) == {"image", "positive", "label"}
  with pytest.raises(ConfigError, match="video_clip"):
    transforms.get("dsm_clips", train=False)
  with pytest.raises(ConfigError, match="'video' entry"):
    fn({"image": video[0], "label": 0}, np.random.default_rng(0))


def test_dsm_clips_warp_the_anchor_only():
  rng = np.random.default_rng(0)
  video = rng.integers(0, 255, (20, 64, 64, 3)).astype(np.uint8)
  for seed in range(5):
    plain = transforms.get("dsm_clips", train=True, clip_len=4, stride=2, warp=False)(
        {"video": video, "label": 0}, np.random.default_rng(seed))
    warped = transforms.get("dsm_clips", train=True, clip_len=4, stride=2, warp=True)(
        {"video": video, "label": 0}, np.random.default_rng(seed))
    np.testing.assert_array_equal(plain["positive"], warped["positive"])
    changed = np.any(plain["image"] != warped["image"], axis=(0, 3))
    # Some pixels move, each frame alike, and the warped anchor holds only pixels of the clip.
    assert 0 < changed.mean() < 0.9
    assert set(map(tuple, warped["image"][0].reshape(-1, 3))) <= set(
        map(tuple, plain["image"][0].reshape(-1, 3)))
