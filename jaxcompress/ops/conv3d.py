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
gradient, the native weight gradient of `native_conv3d`). A kernel left with one temporal tap
runs as the 2-D convolution of the frames it reads (`frames_as_images`): XLA:CPU's own 3-D
convolution took 147 ms for the (1, 3, 3) kernel of a 2x2-pixel stage-4 layer (batch 2, 512
channels) where its 2-D convolution, like the full 3x3x3 one, takes a few ms.

Measured on the R3D-18 training step at batch 2 of 8x112x112 clips: `benchmarks/video_step.py`.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
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


def frames_as_images(lhs: jax.Array, stride: int, pads: tuple[int, int]) -> jax.Array:
  """The input frames that a one-tap temporal kernel reads, as a batch of images.

  With one temporal tap, output frame p reads (padded) input frame p * stride, so the 3-D
  convolution is a 2-D convolution of those frames with the kernel's only tap.

  Args:
    lhs: input clips [n, t, h, w, c].
    stride: temporal stride.
    pads: temporal (low, high) padding (non-negative; padded frames are zero).

  Returns:
    [n * t_out, h, w, c], clip-major (`images_as_frames` inverts the reshape).
  """
  lo, hi = pads
  if lo or hi:
    lhs = lax.pad(lhs, jnp.zeros((), lhs.dtype),
                  [(0, 0, 0), (lo, hi, 0)] + [(0, 0, 0)] * 3)
  frames = (lhs.shape[1] - 1) // stride + 1
  if stride > 1:
    lhs = lax.slice_in_dim(lhs, 0, (frames - 1) * stride + 1, stride, axis=1)
  return lhs.reshape((-1,) + lhs.shape[2:])


def images_as_frames(out: jax.Array, clips: int) -> jax.Array:
  """[n * t_out, h', w', o] per-frame outputs back to clips [n, t_out, h', w', o]."""
  return out.reshape((clips, -1) + out.shape[1:])


# Layers with fewer output pixels (batch x frames x height x width) than this are "weight bound":
# a 3x3 kernel of 512 channels (9.4 MB) does 2 x pixels FLOPs per weight. Measured at R3D-18's
# stage-4 shapes (batch 2, 4x4 pixels, 512 -> 512; ms, best of 7, one process): forward
# XLA 1.6, oneDNN 2.2-13.7 (it reorders the kernel on every call); input gradient col2im 1.7,
# XLA 4.4-4.9, oneDNN 19-35. With 256 channels (2.4 MB) oneDNN kept up with XLA, and from 784
# pixels on (stage 2) it was 3-4x faster than XLA in both parts.
_FEW_PIXELS = 256
_COL2IM_PIXELS = 128
_ONEDNN_MAX_WEIGHT_BYTES = 4 << 20


def adjust_plan(plan: Any, lhs_shape: Sequence[int], rhs_shape: Sequence[int],
                strides: Sequence[int], pads: Sequence[tuple[int, int]],
                rhs_dil: Sequence[int]) -> Any:
  """The CPU plan (`conv._Plan`) of a video convolution, fitted to layers with few pixels.

  A clip's deep layers have a few dozen output pixels and kernels of several MB, unlike any
  2-D layer the plan was measured on (`conv._cpu_plan`); there
    * oneDNN's per-call kernel reorder outweighs the convolution for kernels over 4 MB under
      256 output pixels: XLA's convolution instead;
    * under 128 pixels the input gradient is col2im (one matmul and a scatter of its rows);
    * an input smaller than the kernel's window made XLA:CPU's convolution take 155-320 ms
      instead of 1 ms (2x2 pixels, 3x3 kernel, 512 channels): the forward pass is im2col.
  The weight gradient keeps its plan (the native kernel reads the kernel-sized result once per
  group of frames).

  Args:
    plan: the plan `conv` chose from the 2-D rules (a NamedTuple with `onednn`, `matmul_fwd`,
      `matmul_dx`).
    lhs_shape: input shape [n, *spatial, c] (per-frame images for a one-tap temporal kernel).
    rhs_shape: kernel shape [*kshape, in, out].
    strides, pads, rhs_dil: strides, non-negative padding, dilation.

  Returns:
    The plan, with those parts moved.
  """
  kshape = rhs_shape[:-2]
  out_sp = [(x + lo + hi - (k - 1) * d - 1) // s + 1 for x, k, s, d, (lo, hi)
            in zip(lhs_shape[1:-1], kshape, strides, rhs_dil, pads)]
  pixels = lhs_shape[0] * math.prod(out_sp)
  if pixels >= _FEW_PIXELS:
    return plan
  weight_bytes = 4 * math.prod(rhs_shape)
  if plan.onednn and weight_bytes > _ONEDNN_MAX_WEIGHT_BYTES:
    plan = plan._replace(onednn=False)
  if pixels < _COL2IM_PIXELS:
    plan = plan._replace(matmul_dx=True)
  if any(x < (k - 1) * d + 1 for x, k, d in zip(lhs_shape[1:-1], kshape, rhs_dil)):
    plan = plan._replace(matmul_fwd=True)
  return plan
