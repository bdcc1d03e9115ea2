"""Video clips: temporal sampling with wrap-around, DSM's clip triplets, several clips per video.

A video source is a random-access sequence of `{"video": (F, H, W, C) uint8, "label": int}`
examples (frames decoded by the source). The transforms registered here turn a video into the
clips a method trains on:

* `video_clip`: one clip per example, `{"image": (T, h, w, C), "label"}`. Training draws the
  start uniformly and one spatial augmentation for all frames; evaluation takes the clip the
  example names (`"clip_start"`, from `MultiClipSource`) or the centre one.
* `dsm_clips`: DSM's pretraining input (Wang et al., arXiv 2009.05757, Sec. 3; official
  `src/data/dataset.py`, `get_dsm_items`): the anchor `"image"` and the `"positive"` read the
  same frames, each with its own spatial augmentation; the intra-video `"negative"` reads the
  same video from another start (`negative_start`); `inter_video=True` (the MoCo baseline) draws
  nothing extra: the method uses the other videos of the batch instead.

Clips are `clip_len` frames `stride` apart (official 16 and 4); when the next frame would pass
the end of a short video, reading continues from frame 0, as the official `DataSet.get`.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from jaxcompress.data import augment as augment_lib
from jaxcompress.data import transforms
from jaxcompress.errors import ConfigError
from jaxcompress.selfsup import warp as selfsup_warp


def max_start(num_frames: int, clip_len: int, stride: int) -> int:
  """The largest start a training clip may take: `max(F - clip_len * stride, 0)` (0-based;
  the official `randint(1, max(F - L*s, 0) + 1)` counts from 1)."""
  return max(num_frames - clip_len * stride, 0)


def clip_indices(start: int, num_frames: int, clip_len: int, stride: int) -> np.ndarray:
  """Frame indices of a clip as the official `DataSet.get` reads them.

  Frames start, start + stride, ... while they exist; the frame after the last one that fits is
  frame 0, from where reading continues with the same stride (and restarts at 0 again).

  Args:
    start: first frame (0-based, in [0, F)).
    num_frames: frames in the video (F >= 1).
    clip_len: frames per clip.
    stride: temporal stride between clip frames.

  Returns:
    (clip_len,) int array of frame indices, all in [0, F).
  """
  if num_frames < 1 or clip_len < 1 or stride < 1:
    raise ConfigError(f"Clip sampling needs frames, clip_len and stride >= 1, got {num_frames}, "
                      f"{clip_len}, {stride}; check config.data.transform_kwargs and the video.")
  out, p = [], min(max(int(start), 0), num_frames - 1)
  for _ in range(clip_len):
    out.append(p)
    p = p + stride if p + stride < num_frames else 0
  return np.asarray(out)


def sample_start(rng: np.random.Generator, num_frames: int, clip_len: int, stride: int) -> int:
  """A uniform training start in [0, max_start] (official `_sample_indices`)."""
  return int(rng.integers(0, max_start(num_frames, clip_len, stride) + 1))


def negative_start(rng: np.random.Generator, start: int, num_frames: int, clip_len: int,
                   stride: int) -> int:
  """The intra-video negative's start (official `get_dsm_items`, 0-based here).

  A start s- is drawn like the anchor's; when it is within one frame of the anchor's start
  (|s- - s| < 2, the same motion) it moves by a third of the video. The official code counts
  frames from 1: `s- <- (s- + F // 3) mod F`, and a result of 0 becomes 1. Here, with 0-based
  starts, that is `(s- + 1 + F // 3) mod F - 1`, with -1 becoming 0.

  Args:
    rng: NumPy generator.
    start: the anchor clip's start.
    num_frames, clip_len, stride: as `clip_indices`.

  Returns:
    The negative clip's start in [0, F).
  """
  s = sample_start(rng, num_frames, clip_len, stride)
  if abs(s - start) < 2:
    s = max((s + 1 + num_frames // 3) % num_frames - 1, 0)
  return s


def centre_start(num_frames: int, clip_len: int, stride: int) -> int:
  """The start of the centred clip (deterministic evaluation)."""
  return max_start(num_frames, clip_len, stride) // 2


def spaced_starts(num_frames: int, clip_len: int, stride: int, count: int) -> np.ndarray:
  """`count` starts evenly spaced over [0, max_start] (several test clips per video; one clip
  gives the centre start)."""
  last = max_start(num_frames, clip_len, stride)
  if count == 1:
    return np.asarray([last // 2])
  return np.round(np.linspace(0, last, count)).astype(int)


class MultiClipSource:
  """Each video of `source` repeated `clips_per_video` times with evenly spaced starts.

  Example j * clips_per_video + c is clip c of video j: `{"video", "label", "clip_start",
  "video_index"}`; an evaluator averages the clip predictions of one `video_index` (video-level
  accuracy, the official test of several windows per video).
  """

  def __init__(self, source: Any, clips_per_video: int, clip_len: int, stride: int):
    if clips_per_video < 1:
      raise ConfigError(f"clips_per_video must be >= 1, got {clips_per_video}.")
    self.source, self.clips = source, clips_per_video
    self.clip_len, self.stride = clip_len, stride

  def __len__(self) -> int:
    return len(self.source) * self.clips

  def __getitem__(self, index: int) -> dict[str, Any]:
    video_index, clip = divmod(int(index), self.clips)
    item = dict(self.source[video_index])
    starts = spaced_starts(len(item["video"]), self.clip_len, self.stride, self.clips)
    item["clip_start"] = int(starts[clip])
    item["video_index"] = video_index
    return item

  @property
  def labels(self) -> np.ndarray:
    return np.repeat(np.asarray(self.source.labels), self.clips)


def _augment_fn(crop_size: int | Sequence[int] | None, crop_padding: int, flip: bool
                ) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
  """One spatial augmentation of a whole clip (same draw for every frame)."""
  def apply(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if crop_size:
      clip = augment_lib.random_crop_clip(clip, rng, crop_size)
    return augment_lib.augment_clip(clip, rng, crop_padding=crop_padding, flip=flip)
  return apply


def _centre_crop(clip: np.ndarray, crop_size: int | Sequence[int] | None) -> np.ndarray:
  if not crop_size:
    return clip
  h, w = (crop_size, crop_size) if isinstance(crop_size, (int, np.integer)) else crop_size
  height, width = clip.shape[1:3]
  if h > height or w > width:
    raise ConfigError(f"Crop {(h, w)} does not fit frames of {(height, width)}; lower crop_size.")
  top, left = (height - h) // 2, (width - w) // 2
  return clip[:, top:top + h, left:left + w]


def _video(example: dict[str, Any]) -> np.ndarray:
  if "video" not in example:
    raise ConfigError(f"A video transform needs examples with a 'video' entry (F, H, W, C), got "
                      f"keys {sorted(example)}; use a video source for config.data.name.")
  video = example["video"]
  # A lazily decoded video (data.video_lazy) decodes only the frames a clip indexes.
  if not hasattr(video, "ndim"):
    video = np.asarray(video)
  if video.ndim != 4:
    raise ConfigError(f"Videos must be (frames, height, width, channels), got {video.shape}.")
  return video


def _carry(example: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
  for key in ("label", "index", "video_index", "scene"):
    if key in example:
      out[key] = example[key]
  return out


@transforms.register("video_clip")
def video_clip(train: bool, clip_len: int = 16, stride: int = 4,
               crop_size: int | Sequence[int] | None = None, crop_padding: int = 0,
               flip: bool = False) -> Callable[[dict[str, Any], np.random.Generator],
                                               dict[str, Any]]:
  """One clip per example (fine-tuning, linear probes, feature extraction).

  Args:
    train: random start and augmentation (train) or the example's `clip_start` / centre clip
      with a centre crop (eval).
    clip_len, stride: frames per clip and their spacing (official 16 and 4).
    crop_size: random (train) / centre (eval) crop side or (h, w); None keeps the frames.
    crop_padding, flip: pad-and-crop and horizontal flip, one draw per clip (train only).

  Returns:
    `fn(example, rng) -> {"image": (clip_len, h, w, C) uint8, "label", ...}`.
  """
  augment = _augment_fn(crop_size, crop_padding, flip)

  def fn(example: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    video = _video(example)
    f = len(video)
    if train:
      clip = video[clip_indices(sample_start(rng, f, clip_len, stride), f, clip_len, stride)]
      clip = augment(clip, rng)
    else:
      start = example.get("clip_start", centre_start(f, clip_len, stride))
      clip = _centre_crop(video[clip_indices(start, f, clip_len, stride)], crop_size)
    return _carry(example, {"image": clip})

  return fn


@transforms.register("dsm_clips")
def dsm_clips(train: bool, clip_len: int = 16, stride: int = 4,
              crop_size: int | Sequence[int] | None = None, crop_padding: int = 0,
              flip: bool = False, inter_video: bool = False, warp: bool = True
              ) -> Callable[[dict[str, Any], np.random.Generator], dict[str, Any]]:
  """DSM's anchor, positive and intra-video negative clips (official `get_dsm_items`).

  Args:
    train: must be True (pretraining has no evaluation split).
    clip_len, stride, crop_size, crop_padding, flip: as `video_clip`; each of the three clips
      gets its own augmentation draw.
    inter_video: no intra-video negative (the MoCo baseline, whose negatives are other videos).
    warp: apply DSM's spatial local disturbance (`selfsup.dsm_warp`'s index maps, points from
      `selfsup.sample_warp_points` scaled to the frame size) to the anchor after its
      augmentation, as the official code warps the query batch. The official draw is shared by a
      batch; here each anchor clip gets its own draw (the pipeline builds examples one by one).

  Returns:
    `fn(example, rng) -> {"image", "positive"[, "negative"], "label", ...}`, uint8 clips.
  """
  if not train:
    raise ConfigError("dsm_clips makes pretraining triplets; evaluate with the 'video_clip' "
                      "transform (config.evals.<name>.data.transform).")
  augment = _augment_fn(crop_size, crop_padding, flip)

  def fn(example: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    video = _video(example)
    f = len(video)
    start = sample_start(rng, f, clip_len, stride)
    frames = video[clip_indices(start, f, clip_len, stride)]
    anchor = augment(frames, rng)
    if warp:
      rows, cols = selfsup_warp.warp_index_maps(
          anchor.shape[1], anchor.shape[2],
          selfsup_warp.sample_warp_points(rng, anchor.shape[1], anchor.shape[2]))
      anchor = anchor[:, rows, cols]
    out = {"image": anchor, "positive": augment(frames, rng)}
    if not inter_video:
      neg = negative_start(rng, start, f, clip_len, stride)
      out["negative"] = augment(video[clip_indices(neg, f, clip_len, stride)], rng)
    return _carry(example, out)

  return fn
