"""DSM's intra-video negative: a clip of the same video at another time (temporal shift).

Wang et al., "Enhancing Unsupervised Video Representation Learning by Decoupling the Scene and
the Motion" (arXiv 2009.05757, AAAI 2021) pushes away a negative that keeps the scene of the
query but breaks its motion ("Temporal Local Disturbance", abstract). The released code
(https://github.com/FingerRec/DSM-decoupling-scene-motion, `src/data/dataset.py`,
`DataSet.get_dsm_items`, the path `train_dsm` in `src/pt.py` trains on) builds it as a temporal
shift within the same video: the anchor/positive start s and a second start c are drawn
independently by `_sample_indices`; if |c - s| < 2 then c <- (c + F // 3) mod F, and a start of
0 becomes 1 (1-based frame numbers, F frames). The clip is then read by `DataSet.get`: L frames
from c with stride `stride`, jumping back to the first frame whenever the next one would pass the
end. The frame-insert/swap EDA of `src/augment/gen_negative.py` is instantiated but never applied
by `train_dsm`; on Something-Something v1 the release takes the negative from another video
instead (pass that video to `intra_video_negative`).

Here frames are numbered from 0: a start s here is the official s + 1. The rule above becomes
c <- max((c + 1 + F // 3) mod F, 1) - 1 when |c - s| < min_gap, and the reading order
next = p + stride if p + stride < F else 0. Official behaviour kept as is: the shift is applied
once, so for videos shorter than 9 frames (F // 3 < 3) the negative can still start within 2
frames of s (for F >= 9 it never does with min_gap = 2), and a shifted start may run past the end
and wrap to frame 0.

Example:
  >>> start = sample_clip_start(k1, num_frames, 16, 4)          # anchor and positive
  >>> cand = sample_clip_start(k2, num_frames, 16, 4)
  >>> neg = intra_video_negative(videos, start, cand, 16, 4, num_frames=num_frames)
"""
from __future__ import annotations

import operator

import jax
import jax.numpy as jnp


def _static_positive(name: str, value: int) -> int:
  try:
    value = operator.index(value)
  except TypeError as e:
    raise ValueError(f"{name} must be a Python int (it sets a static shape), got {value!r}; "
                     "pass e.g. 16 frames with stride 4 as in DSM.") from e
  if value < 1:
    raise ValueError(f"{name} must be >= 1, got {value}; DSM clips use 16 frames, stride 4.")
  return value


def sample_clip_start(rng_key: jax.Array, num_frames: int | jax.Array, length: int,
                      stride: int) -> jax.Array:
  """Uniform clip start in {0, ..., max(F - L * stride, 0)} (official `_sample_indices`).

  Args:
    rng_key: JAX PRNG key.
    num_frames: F, an int or integer array (one count per video; may be traced).
    length: L, frames per clip.
    stride: temporal stride.

  Returns:
    int32 array of the shape of `num_frames`, 0-based starts.
  """
  length = _static_positive("length", length)
  stride = _static_positive("stride", stride)
  num_frames = jnp.asarray(num_frames, jnp.int32)
  high = jnp.maximum(num_frames - length * stride, 0) + 1
  return jax.random.randint(rng_key, num_frames.shape, 0, high, dtype=jnp.int32)


def shift_negative_start(start: int | jax.Array, candidate: int | jax.Array,
                         num_frames: int | jax.Array, min_gap: int = 2) -> jax.Array:
  """The official temporal-shift rule for the negative's start (`get_dsm_items`, thresh = 2).

  With 0-based starts: if |candidate - start| < min_gap, candidate <- max((candidate + 1 +
  F // 3) mod F, 1) - 1 (the official 1-based `(c + F // 3) % F`, then 0 -> 1); otherwise the
  candidate is kept.

  Args:
    start: 0-based start of the anchor/positive clip (int or integer array).
    candidate: independently drawn 0-based start (same shape, broadcastable).
    num_frames: F, frames of the video (broadcastable; may be traced).
    min_gap: the official threshold 2.

  Returns:
    int32 array of 0-based negative starts.
  """
  start = jnp.asarray(start, jnp.int32)
  candidate = jnp.asarray(candidate, jnp.int32)
  num_frames = jnp.maximum(jnp.asarray(num_frames, jnp.int32), 1)
  # Done in the official 1-based numbering, so its "0 -> 1" fix-up lands where it does there.
  shifted = jnp.maximum(jnp.mod(candidate + 1 + num_frames // 3, num_frames), 1) - 1
  return jnp.where(jnp.abs(candidate - start) < min_gap, shifted, candidate)


def clip_frame_indices(start: int | jax.Array, num_frames: int | jax.Array, length: int,
                       stride: int) -> jax.Array:
  """0-based frame indices of a clip as read by the official `DataSet.get`.

  Frames start, start + stride, ... while they exist; the frame after the last one that fits
  is frame 0, from where the reading continues with the same stride (and restarts at 0 again).
  Starts outside [0, F) are clamped into it.

  Args:
    start: 0-based start (int or integer array, may be traced).
    num_frames: F >= 1, frames of the video (broadcastable with `start`).
    length: L, frames per clip (static).
    stride: temporal stride (static).

  Returns:
    int32 array of shape broadcast(start, num_frames) + (L,).
  """
  length = _static_positive("length", length)
  stride = _static_positive("stride", stride)
  start = jnp.asarray(start, jnp.int32)
  num_frames = jnp.maximum(jnp.asarray(num_frames, jnp.int32), 1)
  start = jnp.clip(start, 0, num_frames - 1)
  start, num_frames = start[..., None], num_frames[..., None]
  i = jnp.arange(length, dtype=jnp.int32)
  # The first pass holds the frames start + m * stride <= F - 1; every later pass the
  # (F - 1) // stride + 1 frames 0, stride, ... .
  first = (num_frames - 1 - start) // stride + 1
  cycle = (num_frames - 1) // stride + 1
  later = jnp.mod(i - first, cycle) * stride
  return jnp.where(i < first, start + i * stride, later)


def intra_video_negative(videos: jax.Array, start: jax.Array, candidate: jax.Array, length: int,
                         stride: int, num_frames: jax.Array | None = None,
                         min_gap: int = 2) -> jax.Array:
  """DSM's intra-video negative clip of each video (temporal shift, official `get_dsm_items`).

  The negative's start is `shift_negative_start(start, candidate, F, min_gap)`, its frames
  `clip_frame_indices(that, F, length, stride)`.

  Args:
    videos: (B, F_max, ...) decoded frames, each video padded to F_max frames.
    start: (B,) 0-based starts of the anchor/positive clips.
    candidate: (B,) independently drawn 0-based starts (e.g. `sample_clip_start`).
    length: L, frames per clip.
    stride: temporal stride.
    num_frames: (B,) valid frames per video; F_max for every video when None.
    min_gap: the official threshold 2.

  Returns:
    (B, L, ...) clips in the dtype of `videos`.
  """
  videos = jnp.asarray(videos)
  if videos.ndim < 2:
    raise ValueError(f"intra_video_negative expects videos (B, F, ...), got shape "
                     f"{videos.shape}; stack the decoded frames of each video on axis 1.")
  batch, max_frames = videos.shape[:2]
  if num_frames is None:
    num_frames = jnp.full((batch,), max_frames, jnp.int32)
  num_frames = jnp.broadcast_to(jnp.asarray(num_frames, jnp.int32), (batch,))
  neg_start = shift_negative_start(jnp.broadcast_to(start, (batch,)),
                                   jnp.broadcast_to(candidate, (batch,)), num_frames, min_gap)
  frames = clip_frame_indices(neg_start, num_frames, length, stride)  # (B, L)
  frames = frames.reshape(frames.shape + (1,) * (videos.ndim - 2))
  return jnp.take_along_axis(videos, frames, axis=1, mode="clip")
