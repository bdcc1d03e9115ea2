"""DSM Spatial Local Disturbance: the local warp that breaks appearance but keeps motion.

Wang et al., "Enhancing Unsupervised Video Representation Learning by Decoupling the Scene and
the Motion" (arXiv 2009.05757, AAAI 2021). DSM warps the query clip with n ~ U{1, 2, 3} local
pull-warps, one draw per batch shared by every sample, frame and channel, as the official
`GenPositive.spatial_wrap` (https://github.com/FingerRec/DSM-decoupling-scene-motion,
`src/augment/gen_positive.py`) calling `spatial_warp_torch`
(`src/augment/basic_augmentation/spatial_wrap.py`).

One warp at (p0, p1) with shift (s0, s1) moves every pixel (i, j) of the window
[p0 - 3 s0, p0 + 3 s0) x [p1 - 3 s1, p1 + 3 s1) (clipped to the frame) to read its value from
(i + d0, j + d1), clamped to the frame, where

  d = ||(i, j) - (p0 + s0, p1 + s1)||,   L = ||(s0, s1)||,   h = 0.5 / (3 (d / L)**4 + 1),
  d0 = trunc(-h s0),   d1 = trunc(-h s1)          (truncation toward zero, as Python's `int`).

p0/s0 act on the height axis, p1/s1 on the width axis. The official loop bounds the row range by
the width and the column range by the height, which only matters for non-square frames; here rows
are bounded by the height. The index maps depend on the points alone, so they are built on the
host in float64 and the clip goes through a single gather: jit-able in the clip for fixed points.

Example:
  >>> points = sample_warp_points(np.random.default_rng(0), 224, 224)   # host, once per batch
  >>> query = dsm_warp(clip, points)                                      # clip (N, T, H, W, C)
"""
from __future__ import annotations

import math
import operator
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

# The official draw (`GenPositive.spatial_wrap`) for 224x224 frames: centres U{60..139}, shifts
# U{10..19} on each axis (half-open [low, high) as `np.random.randint`), 1 to 3 warps.
_OFFICIAL_SIZE = 224
_CENTRE_RANGE = (60, 140)
_SHIFT_RANGE = (10, 20)
_NUM_WARPS_RANGE = (1, 4)


def _as_point(point, k: int) -> tuple[int, int, int, int]:
  """Returns point k as four Python ints, or raises ValueError."""
  try:
    values = tuple(operator.index(v) for v in point)
  except TypeError as e:
    raise ValueError(
        f"dsm_warp: point {k} = {point!r} must be four concrete integers (p0, p1, s0, s1); draw "
        "them on the host (e.g. with sample_warp_points) and pass Python ints, not traced "
        "arrays.") from e
  if len(values) != 4:
    raise ValueError(
        f"dsm_warp: point {k} has {len(values)} entries, expected 4: (p0, p1, s0, s1) with p0/s0 "
        "on the height axis and p1/s1 on the width axis.")
  if values[2] < 0 or values[3] < 0:
    raise ValueError(
        f"dsm_warp: point {k} has shift ({values[2]}, {values[3]}); shifts must be >= 0 (the "
        "official draw uses 10..19 for 224x224 frames). Pass non-negative shifts.")
  return values


def _one_warp_map(height: int, width: int, point: tuple[int, int, int, int]):
  """Row and column source maps (height, width) of one warp, identity outside its window."""
  p0, p1, s0, s1 = point
  rows = np.broadcast_to(np.arange(height)[:, None], (height, width)).copy()
  cols = np.broadcast_to(np.arange(width)[None, :], (height, width)).copy()
  r_lo, r_hi = max(0, p0 - 3 * s0), min(height, p0 + 3 * s0)
  c_lo, c_hi = max(0, p1 - 3 * s1), min(width, p1 + 3 * s1)
  if r_lo >= r_hi or c_lo >= c_hi:  # a zero shift (or a window off the frame) moves nothing
    return rows, cols
  ii, jj = np.meshgrid(np.arange(r_lo, r_hi), np.arange(c_lo, c_hi), indexing="ij")
  # Integer squared distances to the shifted point are exact; the displacement depends on them
  # alone, so it is evaluated once per distinct value.
  dsq = (ii - (p0 + s0)) ** 2 + (jj - (p1 + s1)) ** 2
  uniq, inverse = np.unique(dsq, return_inverse=True)
  length = math.sqrt(s0 ** 2 + s1 ** 2)
  d0 = np.empty(uniq.shape, np.int64)
  d1 = np.empty(uniq.shape, np.int64)
  for n, v in enumerate(uniq.tolist()):
    # Python float64 arithmetic in the official order. The 4th power goes through libm `pow`
    # (Python's `**`), not NumPy's SIMD power, which differs by an ulp on a few percent of
    # inputs on AVX-512 hosts and could flip a truncation to the next integer.
    h = 0.5 / (3 * (math.sqrt(v) / length) ** 4 + 1)
    d0[n] = int(-(h * s0))
    d1[n] = int(-(h * s1))
  inverse = inverse.reshape(dsq.shape)
  rows[r_lo:r_hi, c_lo:c_hi] = np.clip(ii + d0[inverse], 0, height - 1)
  cols[r_lo:r_hi, c_lo:c_hi] = np.clip(jj + d1[inverse], 0, width - 1)
  return rows, cols


def warp_index_maps(height: int, width: int,
                    points: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
  """Host-side source maps of the composed warps: out[i, j] = in[rows[i, j], cols[i, j]].

  Args:
    height: frame height H.
    width: frame width W.
    points: sequence of (p0, p1, s0, s1) integers, applied in order.

  Returns:
    (rows, cols), two int32 NumPy arrays of shape (H, W).
  """
  rows = np.broadcast_to(np.arange(height)[:, None], (height, width))
  cols = np.broadcast_to(np.arange(width)[None, :], (height, width))
  for k, point in enumerate(points):
    r, c = _one_warp_map(height, width, _as_point(point, k))
    # Each warp reads its own input, i.e. the previous output: out_k[i, j] = out_{k-1}[r, c] =
    # in[rows[r, c], cols[r, c]].
    rows, cols = rows[r, c], cols[r, c]
  return rows.astype(np.int32), cols.astype(np.int32)


def dsm_warp(clip: jax.Array, points: Sequence[Sequence[int]]) -> jax.Array:
  """Applies DSM's spatial local disturbance (official `GenPositive`) to a batch of clips.

  Args:
    clip: (N, T, H, W, C) array of any dtype.
    points: sequence of (p0, p1, s0, s1) Python ints (s0, s1 >= 0; the official draw has
      s >= 10), applied in order, each warp reading only from the previous warp's output. A shift
      of 0 or 1 on an axis leaves the clip unchanged (the window is empty or |h s| <= 0.5).

  Returns:
    The warped clip, same shape and dtype (nearest-neighbour gather; the gradient w.r.t. the clip
    is the scatter-add of the cotangent back to the source pixels).
  """
  clip = jnp.asarray(clip)
  if clip.ndim != 5:
    raise ValueError(
        f"dsm_warp expects a clip batch (N, T, H, W, C), got shape {clip.shape}; add the missing "
        "batch/time/channel axes (e.g. clip[None] for one clip).")
  n, t, height, width, c = clip.shape
  rows, cols = warp_index_maps(height, width, points)
  flat = rows.astype(np.int64) * width + cols
  if np.array_equal(flat, np.arange(height * width).reshape(height, width)):
    return clip
  gathered = jnp.take(clip.reshape(n, t, height * width, c), jnp.asarray(flat.reshape(-1)),
                      axis=2, mode="clip")
  return gathered.reshape(clip.shape)


def _scaled_range(bounds: tuple[int, int], size: int, minimum: int) -> tuple[int, int]:
  """Official half-open range at 224 pixels scaled to `size` pixels (round half up)."""
  lo = max(minimum, math.floor(bounds[0] * size / _OFFICIAL_SIZE + 0.5))
  hi = max(lo + 1, math.floor(bounds[1] * size / _OFFICIAL_SIZE + 0.5))
  return lo, hi


def sample_warp_points(rng: np.random.Generator, height: int,
                       width: int) -> list[tuple[int, int, int, int]]:
  """Draws the warps of one batch as the official `GenPositive.spatial_wrap`.

  n ~ U{1, 2, 3} warps; for each, in this order, p0 ~ U{60..139}, p1 ~ U{60..139},
  s0 ~ U{10..19}, s1 ~ U{10..19} for 224x224 frames. Other frame sizes: the official half-open
  ranges are read as fractions of 224 and scaled by the size of the axis each value acts on
  (p0, s0 by the height, p1, s1 by the width), each bound rounded half up, the upper bound kept
  above the lower one and shifts at least 1; e.g. 112 gives centres U{30..69} and shifts U{5..9}.
  For 224x224 this is exactly the official draw (not its random stream).

  Args:
    rng: NumPy generator (host-side randomness; the points must be concrete).
    height: frame height H.
    width: frame width W.

  Returns:
    A list of n (p0, p1, s0, s1) tuples of Python ints, for `dsm_warp`.
  """
  height, width = operator.index(height), operator.index(width)
  if height < 1 or width < 1:
    raise ValueError(
        f"sample_warp_points: frame size must be positive, got {height}x{width}; pass the clip's "
        "H and W.")
  c0, c1 = _scaled_range(_CENTRE_RANGE, height, 0), _scaled_range(_CENTRE_RANGE, width, 0)
  s0, s1 = _scaled_range(_SHIFT_RANGE, height, 1), _scaled_range(_SHIFT_RANGE, width, 1)
  points = []
  for _ in range(int(rng.integers(*_NUM_WARPS_RANGE))):
    points.append((int(rng.integers(*c0)), int(rng.integers(*c1)), int(rng.integers(*s0)),
                   int(rng.integers(*s1))))
  return points
