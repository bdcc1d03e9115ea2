"""3-D (video) convolutions on CPU: kernel taps that only ever read padding are dropped.

A video backbone halves its clip in time stage by stage: R3D-18 on 8-frame clips runs its stage-3
and stage-4 3x3x3 convolutions on 1-frame inputs (2-frame ones for the first conv of stage 3),
with temporal padding 1. Two of the three temporal taps then multiply zero padding at every
output position; the convolution is exactly the one with the kernel cut to its middle tap (a
2-D convolution per frame). `trim_taps` cuts every kernel axis to the taps that read the input
at some output position and shifts the padding to match, so the forward pass and both gradients
do only the work that can be non-zero: the gradient of the cut taps is zero, which the slice's
own transpose supplies. `jaxcompress.ops.conv.conv_general_dilated` applies it to every 3-D
channel-last convolution on CPU, before choosing kernels for the parts (oneDNN forward and input
gradient, the native weight gradient of `native_conv3d`).

Measured on the R3D-18 training step at batch 2 of 8x112x112 clips: `benchmarks/video_step.py`.
"""
from __future__ import annotations

from typing import Sequence

import jax
from jax import lax


def _used_taps(size: int, out: int, k: int, s: int, d: int, lo: int) -> tuple[int, int] | None:
  """First and last tap of one kernel axis that read a real input position, or None if none.

  Tap t reads input index p*s + t*d - lo at output position p; it is used when some p in
  [0, out) lands in [0, size).
  """
  used = []
  for t in range(k):
    p_lo = max(0, -(-(lo - t * d) // s))
    p_hi = min(out - 1, (size - 1 + lo - t * d) // s)
    if p_lo <= p_hi:
      used.append(t)
  return (used[0], used[-1]) if used else None


def trim_taps(in_spatial: Sequence[int], kshape: Sequence[int], strides: Sequence[int],
              pads: Sequence[tuple[int, int]], rhs_dil: Sequence[int]
              ) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]:
  """The kernel taps worth computing per axis and the padding that keeps the output in place.

  For each spatial axis the kept taps are [first, last], the first and last that read the
  input at some output position (taps between them that do not are kept: they are rare and
  cost only zeros). The new padding puts tap `first` where it was, low' = low - first * d, and
  ends the input at the last window, so the output has the same positions with the same
  values. An axis keeps all its taps when nothing is cut, when no tap reads the input at all
  or when the new padding would be negative.

  Args:
    in_spatial: input spatial shape.
    kshape: kernel spatial shape.
    strides: window strides.
    pads: explicit non-negative (low, high) padding.
    rhs_dil: kernel dilation.

  Returns:
    ((first, stop) per axis, the kernel slice [first, stop)), (new (low, high) per axis).
  """
  taps, new_pads = [], []
  for size, k, s, d, (lo, hi) in zip(in_spatial, kshape, strides, rhs_dil, pads):
    out = (size + lo + hi - (k - 1) * d - 1) // s + 1
    used = _used_taps(size, out, k, s, d, lo) if out > 0 else None
    keep = ((0, k), (lo, hi))
    if used is not None and used != (0, k - 1):
      first, last = used
      new_lo = lo - first * d
      # The smallest high padding that still gives `out` windows; up to s - 1 more also would.
      exact_hi = (out - 1) * s + (last - first) * d + 1 - size - new_lo
      new_hi = max(exact_hi, 0)
      if new_lo >= 0 and new_hi <= exact_hi + s - 1:
        keep = ((first, last + 1), (new_lo, new_hi))
    taps.append(keep[0])
    new_pads.append(keep[1])
  return tuple(taps), tuple(new_pads)


def trimmed_kernel(lhs_spatial: Sequence[int], rhs: jax.Array, strides: Sequence[int],
                   pads: Sequence[tuple[int, int]], rhs_dil: Sequence[int]
                   ) -> tuple[jax.Array, tuple[tuple[int, int], ...]]:
  """`rhs` ([*kshape, in, out]) cut to `trim_taps`'s taps, and the matching padding.

  Args:
    lhs_spatial: the input's spatial shape.
    rhs: channel-last kernel [*kshape, in, out].
    strides, pads, rhs_dil: the convolution's strides, non-negative padding and dilation.

  Returns:
    (kernel, pads): `rhs` itself and `pads` when no tap is cut.
  """
  nsp = len(lhs_spatial)
  taps, new_pads = trim_taps(lhs_spatial, rhs.shape[:nsp], strides, pads, rhs_dil)
  if all(t == (0, k) for t, k in zip(taps, rhs.shape[:nsp])):
    return rhs, tuple(pads)
  start = [t[0] for t in taps] + [0, 0]
  limit = [t[1] for t in taps] + list(rhs.shape[nsp:])
  return lax.slice(rhs, start, limit), new_pads
