"""A drop-in `lax.conv_general_dilated` whose CPU forward and gradients use the fastest formulation.

On CPU each channel-last convolution gets a plan (`_cpu_plan`): the forward pass, the input
gradient and the weight gradient each run either as XLA's convolution or as matmuls, whichever
was measured faster for that kind of shape. Which XLA kernels run convolutions matters: jaxlib
0.10's default, YNNPACK, is slow for gradients, so `jaxcompress.ops.xla_cpu` switches XLA:CPU to
its own (Eigen) convolutions at import, and the plan is tuned for that regime:

  * unpadded 1x1 kernels: all three parts are plain matmuls;
  * strided convolutions: the input gradient as col2im (the transpose of an im2col dot),
    1.3-2.5x faster than XLA's transposed convolution;
  * everything else: XLA's convolution, with the gradients written as canonical channel-last
    convolutions (`_canonical_input_grad`, `_canonical_weight_grad`): `jax.vjp`'s own
    gradient convolutions run as a naive loop nest inside `lax.scan`/`fori_loop` bodies on
    XLA:CPU (50-90x slower), because its canonicalization pass only rewrites the entry
    computation. The weight gradient runs in a loop over strided batch blocks
    (`_blocked_weight_grad`, `_batch_block`): the loop stops XLA from fusing the batch-norm /
    ReLU chain that produced the input into the gradient's batch-minor transposes (1.11x on
    the float ResNet-20 step), and strided blocks keep a sharded batch local.

On one CPU device with float32 operands, the parts that would be XLA convolutions in the
forward pass and the stride-1 input gradient run on oneDNN instead (`jaxcompress.ops.
onednn_conv`: XLA:CPU's `__onednn$convolution` custom call, the kernels PyTorch uses on CPU;
1.4-2.0x XLA's at ResNet-20 shapes). oneDNN's forward kernel is the only one behind that call
(a weight gradient written as a forward convolution has the whole image as its window: 1.3-2.6 s
per layer), so the 2-D float32 weight gradient runs on jaxcompress's own C++ kernel instead
(`jaxcompress.ops.native_conv`, built for the host CPU on first use; 2.4-5.5x faster than XLA's
blocked gradient, 0.76-1.34x PyTorch's oneDNN kernel's time) where a C++ compiler is available, and
on XLA's blocked convolution otherwise. Several CPU devices keep XLA's convolutions: neither
call has an SPMD partitioning rule. Float ResNet-20 training step, one interleaved run
(together with batch norm's recomputed normalised input, `ops.batch_norm`): 394 -> 464 img/s; RBNN
ResNet-20 307 -> 339 (BENCHMARKS.md). 3-D (video) convolutions follow the same plan, with their
float32 weight gradient on `native_conv3d`'s kernel and, first, the kernel taps that read only
padding cut off (`conv3d`; R3D-18 training step: `benchmarks/video_step.py`).

If YNNPACK convolutions are in use (the flag could not be set), the weight gradient is always
the matmul formulation, which is what that regime needs. ResNet-20 training step, batch 128,
same run: 380 img/s with this plan, Eigen convolutions and `ops.BatchNorm`, 323 with the previous
defaults (YNNPACK-tuned plan), 323 with plain flax (BENCHMARKS.md).

Measurements from the YNNPACK regime that chose the weight-gradient formulation:

Weight gradient alone, batch 128, 3x3, ms (best of 9-11, interleaved in one run; the machine
is shared, so compare within a row):

  ======================  =====  =======================  ========================
  layer                   lax    chunked im2col           chunked separable
  ======================  =====  =======================  ========================
  32x32, 16->16           23.4   20.3                     9.6
  16x16, 32->32           20.0   11.6                     8.4
  8x8, 64->64             9.9    7.2                      6.8
  32x32, 64->64           305    117                      92
  32x32, 16->32, s2       16.6   7.3 (chosen: fewer bytes) 5.8-8.9
  16x16, 32->64, s2       7.3    4.3 (chosen)             4.2-5.1
  ======================  =====  =======================  ========================

Other weight-gradient candidates measured and dropped: one batch-wide im2col matrix and one
dot (15-70 GFLOP/s: the 9x-activation patch matrix streams through DRAM twice), nine shifted
dots (10-50 GFLOP/s), channel-major (CNHW) patches (1.5-2x slower than channel-last),
taps-major patches (XLA transposes the block before the dot), `lax.scan` over reshaped chunks
(XLA copies both operands to a new layout), XLA flags routing convolutions to oneDNN or
XNNPACK (no gain). Forward-pass candidates (im2col: 16-113 GFLOP/s, nine shifted matmuls:
21-105, vs lax 110-150) lost to lax, except unpadded 1x1 kernels, which are plain matmuls here
(forward + gradients 2.8x faster than lax at 128x32x32, 64->64).

On GPU/TPU (checked at trace time with `jax.default_backend()`) this is exactly
`lax.conv_general_dilated`; so are grouped (other than depthwise), batch-grouped, lhs-dilated
(transposed) and non-channel-last convolutions on CPU. Depthwise convolutions (one input channel
per group, any channel multiplier) run on CPU as tap sums of shifted inputs (`_depthwise_conv`):
XLA:CPU's grouped convolution is 24x slower forward and 3.5x slower with gradients (60x inside
a loop body). `set_conv_impl` / the environment variable
`JAXCOMPRESS_CONV_IMPL` select "auto" (default: the above), "lax" (always lax) or "matmul"
(forward and input gradient as im2col matmuls too, on any backend; for debugging/benchmarks).
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import itertools
import math
import os
from typing import Any, Iterator, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxcompress.ops import conv3d, depthwise_conv, native_conv, native_conv3d, onednn_conv, xla_cpu
from jaxcompress.ops import padding as padding_lib

_IMPLS = ("auto", "lax", "matmul")
_impl: str = os.environ.get("JAXCOMPRESS_CONV_IMPL", "auto").lower()
if _impl not in _IMPLS:
  raise ValueError(f"JAXCOMPRESS_CONV_IMPL={_impl!r}; expected one of {_IMPLS}.")

# Bytes of one patch block in the weight gradient's loop. Measured on batch 128: blocks of
# 0.6-2 MB (a few images) ran 1.3-2x faster than 5-10 MB blocks and 2-3x faster than one
# batch-wide patch matrix (the block is produced and consumed from cache); 256-512 KB blocks
# were slower again for 32x32 inputs (per-iteration overhead of the loop).
_PATCH_BLOCK_BYTES = 1 << 20


def set_conv_impl(impl: str) -> None:
  """Selects the convolution implementation used by `conv_general_dilated`.

  Takes effect for functions traced afterwards (jitted functions already compiled keep theirs).

  Args:
    impl: "auto" (matmul weight gradient on CPU, lax elsewhere), "lax" or "matmul".
  """
  global _impl
  impl = impl.lower()
  if impl not in _IMPLS:
    raise ValueError(f"Unknown conv impl {impl!r}; expected one of {_IMPLS}.")
  _impl = impl


def get_conv_impl() -> str:
  """Returns the implementation selected by `set_conv_impl` / `JAXCOMPRESS_CONV_IMPL`."""
  return _impl


def _channel_last_dn(nsp: int) -> lax.ConvDimensionNumbers:
  """Dimension numbers of N(spatial)C inputs, (spatial)IO kernels and N(spatial)C outputs."""
  lhs = (0, nsp + 1) + tuple(range(1, nsp + 1))
  rhs = (nsp + 1, nsp) + tuple(range(nsp))
  return lax.ConvDimensionNumbers(lhs, rhs, lhs)


def _lax_conv(lhs: jax.Array, rhs: jax.Array, strides: tuple[int, ...],
              pads: tuple[tuple[int, int], ...], rhs_dil: tuple[int, ...], precision: Any,
              pet: Any) -> jax.Array:
  return lax.conv_general_dilated(lhs, rhs, strides, pads, rhs_dilation=rhs_dil,
                                  dimension_numbers=_channel_last_dn(lhs.ndim - 2),
                                  precision=precision, preferred_element_type=pet)


def _canonical_input_grad(g: jax.Array, rhs: jax.Array, pads: tuple[tuple[int, int], ...],
                          rhs_dil: tuple[int, ...], precision: Any, pet: Any,
                          onednn: bool = False) -> jax.Array:
  """dL/dinput of a stride-1 channel-last convolution, as a channel-last convolution.

  The transposed convolution written out: the cotangent convolved with the spatially flipped
  kernel whose in/out axes are swapped, padded by `(k - 1) * d - pad`. `jax.vjp` of
  `lax.conv_general_dilated` emits the same convolution with a window reversal and swapped
  kernel dimension labels instead. XLA:CPU's `ConvCanonicalization` rewrites that form into
  one its Eigen kernels take, but only in the entry computation: inside a `lax.scan` /
  `fori_loop` / `while_loop` body (`data.on_device` epochs, PGD attacks) the non-canonical form
  fell to a naive loop nest, measured 96.8 ms instead of 2.2 ms for 128x16x16, 32->32 (jaxlib
  0.10.2). Written out like this it runs as Eigen's convolution everywhere (1.9 ms in either).

  Args:
    g: output cotangent [n, *out_spatial, o].
    rhs: kernel [*kshape, c, o].
    pads: the forward's non-negative explicit padding; every `(k - 1) * d - pad` must be >= 0.
    rhs_dil: kernel dilation.
    precision, pet: as in the forward.
    onednn: run the convolution on oneDNN (`onednn_conv`; float32 only) instead of XLA.

  Returns:
    [n, *spatial, c].
  """
  nsp = g.ndim - 2
  kshape = rhs.shape[:nsp]
  flipped = jnp.swapaxes(jnp.flip(rhs, tuple(range(nsp))), -1, -2)
  grad_pads = tuple(((k - 1) * d - lo, (k - 1) * d - hi)
                    for k, d, (lo, hi) in zip(kshape, rhs_dil, pads))
  if onednn:
    return onednn_conv.onednn_conv(g, flipped, (1,) * nsp, grad_pads, rhs_dil)
  return _lax_conv(g, flipped, (1,) * nsp, grad_pads, rhs_dil, precision, pet)


def _canonical_weight_grad(lhs: jax.Array, g: jax.Array, kshape: tuple[int, ...],
                           strides: tuple[int, ...], pads: tuple[tuple[int, int], ...],
                           rhs_dil: tuple[int, ...], precision: Any, pet: Any) -> jax.Array:
  """dL/dkernel of a channel-last convolution, as a channel-last convolution.

  dW[k, c, o] = sum_{n, p} xpad[n, s*p + d*k, c] g[n, p, o] is a convolution of the input
  with batch and channel axes swapped ([c, *spatial, n]) by the cotangent as kernel
  ([*out_spatial, n, o]), window stride d (the forward's kernel dilation) and kernel dilation s
  (the forward's stride). The explicit transposes are what XLA:CPU's `ConvCanonicalization`
  inserts for `jax.vjp`'s weight-gradient convolution in the entry computation; written out,
  the same Eigen kernel also runs inside loop bodies, where that pass does not (see
  `_canonical_input_grad`: 199 ms vs 18.8 ms for 128x16x16, 32->32 inside a `lax.scan`).

  Args:
    lhs: convolution input [n, *spatial, c].
    g: output cotangent [n, *out_spatial, o].
    kshape: kernel spatial shape.
    strides, pads, rhs_dil: the forward's stride, non-negative padding and kernel dilation.
    precision, pet: as in the forward.

  Returns:
    [*kshape, c, o].
  """
  nsp = lhs.ndim - 2
  lhs_t = jnp.moveaxis(lhs, (0, lhs.ndim - 1), (lhs.ndim - 1, 0))   # [c, *spatial, n]
  g_t = jnp.moveaxis(g, 0, -2)                                      # [*out_spatial, n, o]
  out = lax.conv_general_dilated(lhs_t, g_t, rhs_dil, pads, rhs_dilation=strides,
                                 dimension_numbers=_channel_last_dn(nsp), precision=precision,
                                 preferred_element_type=pet)        # [c, >= *kshape, o]
  # Rows past the last tap exist when the forward's stride skipped trailing padded rows.
  out = out[(slice(None),) + tuple(slice(0, k) for k in kshape)]
  return jnp.moveaxis(out, 0, -2)


# Images per block of `_blocked_weight_grad` (per device of a sharded batch). Measured, float
# ResNet-20 step, batch 128, one interleaved run: 2 / 4 / 8 / 16 loop steps 1.056 / 1.086 /
# 1.107 / 1.128x the unblocked step; 32 and 64 steps 1.03 / 0.92x (per-iteration overhead).
_XLA_WEIGHT_GRAD_BLOCK_IMAGES = 8


def _blocked_weight_grad(lhs: jax.Array, g: jax.Array, kshape: tuple[int, ...],
                         strides: tuple[int, ...], pads: tuple[tuple[int, int], ...],
                         rhs_dil: tuple[int, ...], precision: Any, pet: Any) -> jax.Array:
  """`_canonical_weight_grad` summed over batch blocks in a `fori_loop`: a fusion barrier.

  The XLA weight-gradient convolution needs the input transposed to [c, *spatial, n]. In a
  training step that input is the output of an elementwise chain (batch norm, ReLU, residual
  add), and XLA:CPU fuses the chain into the transpose, recomputing it from the previous
  convolutions' outputs, often two blocks deep, in a fusion that writes batch-minor: 65 ms of
  a ~300 ms float ResNet-20 step in the profile, the transposed activation itself being ~4 MB.
  `lax.optimization_barrier` does not stop it (XLA:CPU expands barriers before fusion). A loop
  body cannot fuse producers from outside the loop, so the transposes read the activation
  already materialised for the forward convolution, one cache-sized block at a time. The
  blocks are strided (`_batch_block`) so that a sharded batch stays local. Activations under
  `_PATCH_BLOCK_BYTES` per device, or batches too small for two blocks, skip the loop.

  Args:
    lhs, g, kshape, strides, pads, rhs_dil, precision, pet: as `_canonical_weight_grad`.

  Returns:
    [*kshape, c, o] in `pet` (or the inputs' promoted dtype); accumulated in float32 for
    half-precision inputs.
  """
  n = lhs.shape[0]
  shards = _batch_shards()
  chunk = _chunk_images(n, _XLA_WEIGHT_GRAD_BLOCK_IMAGES, shards)
  operand_bytes = (lhs.size * lhs.dtype.itemsize + g.size * g.dtype.itemsize) // shards
  if n // chunk < 2 or operand_bytes < _PATCH_BLOCK_BYTES:
    # Small activations: the recomputed chain costs little, a loop step's overhead more.
    return _canonical_weight_grad(lhs, g, kshape, strides, pads, rhs_dil, precision, pet)
  out_t = jnp.result_type(lhs.dtype, g.dtype) if pet is None else pet
  acc_t = _acc_dtype(out_t)

  def block(i: jax.Array | int, acc: jax.Array) -> jax.Array:
    part = _canonical_weight_grad(_batch_block(lhs, i, chunk), _batch_block(g, i, chunk),
                                  kshape, strides, pads, rhs_dil, precision, acc_t)
    return acc + part

  dw = lax.fori_loop(0, n // chunk, block,
                     jnp.zeros(tuple(kshape) + (lhs.shape[-1], g.shape[-1]), acc_t))
  return dw.astype(out_t)


def _patch_slices(xp: jax.Array, kshape: Sequence[int], out_sp: Sequence[int],
                  strides: Sequence[int], rhs_dil: Sequence[int]) -> list[jax.Array]:
  """The kernel-offset views of a padded channel-last input, one per kernel tap.

  Args:
    xp: padded input [batch, *spatial, channels].
    kshape: kernel spatial shape.
    out_sp: output spatial shape.
    strides: window strides.
    rhs_dil: kernel dilation.

  Returns:
    prod(kshape) arrays [batch, *out_sp, channels], taps in row-major kernel order.
  """
  views = []
  for off in itertools.product(*[range(k) for k in kshape]):
    start = [0] + [o * d for o, d in zip(off, rhs_dil)] + [0]
    limit = ([xp.shape[0]]
             + [st + (n - 1) * s + 1 for st, n, s in zip(start[1:], out_sp, strides)]
             + [xp.shape[-1]])
    views.append(lax.slice(xp, start, limit, [1] + list(strides) + [1]))
  return views


def _pad_input(x: jax.Array, pads: Sequence[tuple[int, int]]) -> jax.Array:
  # lax.pad also crops for negative padding, which lax.conv_general_dilated allows.
  cfg = [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in pads] + [(0, 0, 0)]
  return lax.pad(x, jnp.zeros((), x.dtype), cfg)


def _acc_dtype(dtype: Any) -> Any:
  # Sums over a whole batch: accumulate half precision in float32 (as PyTorch/oneDNN do).
  return jnp.promote_types(dtype, jnp.float32)


def _im2col_conv(lhs: jax.Array, rhs: jax.Array, strides: tuple[int, ...],
                 pads: tuple[tuple[int, int], ...], rhs_dil: tuple[int, ...], precision: Any,
                 pet: Any) -> jax.Array:
  """Forward convolution as one im2col patch matrix times the flattened kernel."""
  kshape, o = rhs.shape[:-2], rhs.shape[-1]
  xp = _pad_input(lhs, pads)
  out_sp = _out_spatial(xp.shape[1:-1], kshape, strides, rhs_dil)
  patches = jnp.concatenate(_patch_slices(xp, kshape, out_sp, strides, rhs_dil), axis=-1)
  return lax.dot_general(patches, rhs.reshape(-1, o), (((lhs.ndim - 1,), (0,)), ((), ())),
                         precision=precision, preferred_element_type=pet)


def _out_spatial(padded: Sequence[int], kshape: Sequence[int], strides: Sequence[int],
                 rhs_dil: Sequence[int]) -> tuple[int, ...]:
  return tuple((p - (k - 1) * d - 1) // s + 1
               for p, k, s, d in zip(padded, kshape, strides, rhs_dil))


def _batch_shards() -> int:
  """How many devices a CPU batch may be split over: all of them (see `_batch_block`)."""
  return max(1, jax.device_count())


def _chunk_images(n: int, per_device: int, shards: int = 1) -> int:
  """Images per loop step over a batch of n: about `per_device` for each of `shards` devices.

  Args:
    n: batch size.
    per_device: wanted images per device and step (at least 1).
    shards: devices the batch may be sharded over; the chunk is a multiple of it when the
      batch allows, so that every device's part of each block is its own (`_batch_block`).

  Returns:
    The largest divisor of n that is at most per_device * shards, preferring multiples of
    shards.
  """
  want = max(1, per_device) * shards
  divisors = [d for d in range(1, min(n, want) + 1) if n % d == 0]
  aligned = [d for d in divisors if d % shards == 0]
  return max(aligned or divisors)


def _chunk_size(n: int, per_image_bytes: int, shards: int = 1) -> int:
  """`_chunk_images` with blocks of `_PATCH_BLOCK_BYTES` per device."""
  return _chunk_images(n, _PATCH_BLOCK_BYTES // max(per_image_bytes, 1), shards)


def _batch_block(x: jax.Array, step: jax.Array | int, chunk: int) -> jax.Array:
  """Loop step `step`'s images of x: every (n // chunk)-th image from `step` on.

  A strided, not a contiguous, slice of the batch: when the batch is sharded over devices
  (data parallel), a contiguous block lives on one device, and XLA's SPMD partitioner then
  all-gathers the whole activation onto every device (14 all-gathers per ResNet-20 step on 8
  CPU devices). The strided block [chunk, ...] splits like the batch, so each device reads only
  its own images and the weight gradient needs one all-reduce of the small result. The row
  order is the same for the input and the cotangent, so the contraction is unchanged.
  """
  steps = x.shape[0] // chunk
  return lax.dynamic_index_in_dim(x.reshape((chunk, steps) + x.shape[1:]), step, axis=1,
                                  keepdims=False)


def _weight_grad(lhs: jax.Array, g: jax.Array, kshape: tuple[int, ...], strides: tuple[int, ...],
                 pads: tuple[tuple[int, int], ...], rhs_dil: tuple[int, ...],
                 precision: Any) -> jax.Array:
  """dL/dkernel of a channel-last convolution as batch-chunked, separable-patch matmuls.

  dW[i, j, c, o] = sum_{n,h,w} xpad[n, s*h + i, w', c] g[n, h, w, o] (w' the column of tap j).
  The row taps i are moved onto the cotangent: with G the row-shifted copies of g stacked on
  the channel axis ([rows, kh*o]) and X the column-tap views of the input ([rows, kw*c]), one
  dot G^T X yields all kh*kw taps at once. This writes kh*o + kw*c values per pixel instead of
  kh*kw*c for full im2col (6 instead of 9 channel blocks for 3x3) and gives the dot a kh-times
  larger output. Row strides are handled by polyphase splitting: taps whose row offset has
  the same phase modulo the stride share one decimated view of the input.

  Measured (batch 128, ms, best of 9, same run): 32x32 16->16 lax 23.4, full im2col 20.3,
  separable 9.6; 16x16 32->32: 20.0 / 11.6 / 8.4; 8x8 64->64: 9.9 / 7.2 / 6.8;
  32x32 64->64: 305 / 117 / 92.

  Args:
    lhs: convolution input [n, *spatial, c].
    g: output cotangent [n, *out_spatial, o].
    kshape: kernel spatial shape.
    strides: window strides.
    pads: explicit non-negative (low, high) padding per spatial dim.
    rhs_dil: kernel dilation.
    precision: forwarded to the dots.

  Returns:
    [*kshape, c, o] in the accumulation dtype (float32 for half-precision inputs).
  """
  n, c, o = lhs.shape[0], lhs.shape[-1], g.shape[-1]
  out_sp = g.shape[1:-1]
  acc_t = _acc_dtype(jnp.result_type(lhs.dtype, g.dtype))
  contract = (((0,), (0,)), ((), ()))
  if math.prod(kshape) == 1 and all(p == (0, 0) for p in pads):
    # 1x1 kernels: the (strided) input is already the patch matrix; one dot, no copies.
    x = _patch_slices(lhs, kshape, out_sp, strides, rhs_dil)[0]
    dw = lax.dot_general(x.reshape(-1, c), g.reshape(-1, o), contract, precision=precision,
                         preferred_element_type=acc_t)
    return dw.reshape(*kshape, c, o)

  kh, sh, dh, ho = kshape[0], strides[0], rhs_dil[0], out_sp[0]
  rest_k, rest_out = (1,) + tuple(kshape[1:]), tuple(out_sp[1:])
  rest_taps = math.prod(kshape[1:])
  # Row taps grouped by phase: tap i reads padded row s*h + i*d = s*(h + a) + r.
  phases: dict[int, list[tuple[int, int]]] = {}
  for i in range(kh):
    phases.setdefault(i * dh % sh, []).append((i, i * dh // sh))
  groups = [(r, taps, max(a for _, a in taps)) for r, taps in sorted(phases.items())]
  row_pixels = math.prod(rest_out)
  per_image = jnp.dtype(lhs.dtype).itemsize * row_pixels * sum(
      (ho + amax) * (rest_taps * c + len(taps) * o) for _, taps, amax in groups)
  im2col_per_image = jnp.dtype(lhs.dtype).itemsize * math.prod(out_sp) * math.prod(kshape) * c
  if im2col_per_image <= per_image:
    # Full im2col writes fewer bytes when o > c or with row strides (the G blocks then cost
    # more than the saved X blocks); measured faster there: 32x32 16->32 s2 5.5 vs 8.9 ms,
    # 16x16 32->64 s2 4.4 vs 5.1 ms.
    return _weight_grad_im2col(lhs, g, kshape, strides, pads, rhs_dil, precision)
  chunk = _chunk_size(n, per_image, _batch_shards())

  def block(b: jax.Array | int, accs: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
    # fori_loop + dynamic slices of the batch-major arrays: a lax.scan over reshaped
    # [steps, chunk, ...] operands made XLA insert a layout-changing copy of both (measured).
    # Padding per chunk (fused into the tap slices) instead of padding the whole input saves
    # one activation-sized copy (measured 5-20%).
    xc = _pad_input(_batch_block(lhs, b, chunk), pads)
    gc = _batch_block(g, b, chunk)
    new = []
    for acc, (r, taps, amax) in zip(accs, groups):
      rows = ho + amax
      xr = lax.slice_in_dim(xc, r, r + sh * (rows - 1) + 1, sh, axis=1)
      xcols = _patch_slices(xr, rest_k, (rows,) + rest_out, (1,) + tuple(strides[1:]),
                            (1,) + tuple(rhs_dil[1:]))
      x_mat = jnp.concatenate(xcols, axis=-1).reshape(-1, rest_taps * c)
      g_rows = [lax.pad(gc, jnp.zeros((), gc.dtype),
                        [(0, 0, 0), (a, amax - a, 0)] + [(0, 0, 0)] * (gc.ndim - 2))
                for _, a in taps]
      g_mat = jnp.concatenate(g_rows, axis=-1).reshape(-1, len(taps) * o)
      # G^T @ X reads both operands in place; X^T @ G (or taps-major patches) made XLA
      # transpose the whole patch block first (7% of a ResNet-20 step in the profile).
      new.append(acc + lax.dot_general(g_mat, x_mat, contract, precision=precision,
                                       preferred_element_type=acc_t))
    return tuple(new)

  init = tuple(jnp.zeros((len(taps) * o, rest_taps * c), acc_t) for _, taps, _ in groups)
  accs = lax.fori_loop(0, n // chunk, block, init)
  per_tap = {}
  for acc, (_, taps, _) in zip(accs, groups):
    acc = acc.reshape(len(taps), o, *kshape[1:], c)
    for k, (i, _) in enumerate(taps):
      per_tap[i] = jnp.moveaxis(acc[k], 0, -1)  # [*rest_k, c, o]
  return jnp.stack([per_tap[i] for i in range(kh)])


def _weight_grad_im2col(lhs: jax.Array, g: jax.Array, kshape: tuple[int, ...],
                        strides: tuple[int, ...], pads: tuple[tuple[int, int], ...],
                        rhs_dil: tuple[int, ...], precision: Any) -> jax.Array:
  """dL/dkernel as batch-chunked im2col matmuls (see `_weight_grad` for when it is used).

  Args:
    lhs: convolution input [n, *spatial, c].
    g: output cotangent [n, *out_spatial, o].
    kshape: kernel spatial shape.
    strides: window strides.
    pads: explicit (low, high) padding per spatial dim.
    rhs_dil: kernel dilation.
    precision: forwarded to the dots.

  Returns:
    [*kshape, c, o] in the accumulation dtype (float32 for half-precision inputs).
  """
  n, c, o = lhs.shape[0], lhs.shape[-1], g.shape[-1]
  out_sp = g.shape[1:-1]
  taps = math.prod(kshape)
  acc_t = _acc_dtype(jnp.result_type(lhs.dtype, g.dtype))
  chunk = _chunk_size(n, math.prod(out_sp) * taps * c * jnp.dtype(lhs.dtype).itemsize,
                      _batch_shards())

  def block(i: jax.Array | int, acc: jax.Array) -> jax.Array:
    # Same chunking/padding choices as `_weight_grad`.
    xc = _pad_input(_batch_block(lhs, i, chunk), pads)
    gc = _batch_block(g, i, chunk).reshape(-1, o)
    patches = jnp.concatenate(_patch_slices(xc, kshape, out_sp, strides, rhs_dil), axis=-1)
    # dW^T = g^T @ patches (channel-concatenated [rows, taps*c]); see `_weight_grad`.
    return acc + lax.dot_general(gc, patches.reshape(-1, taps * c), (((0,), (0,)), ((), ())),
                                 precision=precision, preferred_element_type=acc_t)

  dw = lax.fori_loop(0, n // chunk, block, jnp.zeros((o, taps * c), acc_t))
  return dw.T.reshape(*kshape, c, o)


class _Plan(NamedTuple):
  """Which parts of a CPU convolution run as matmuls instead of XLA's convolution."""
  matmul_fwd: bool   # forward as one im2col dot
  matmul_dx: bool    # input gradient as the transpose of that dot (col2im)
  matmul_dw: bool    # weight gradient as chunked matmuls (`_weight_grad`)
  # Forward and stride-1 input gradient, where not matmuls, on oneDNN (`onednn_conv`) instead
  # of XLA's convolution; set by `conv_general_dilated` for float32 when oneDNN is available.
  onednn: bool = False
  # Weight gradient on the native kernel (`native_conv.conv_weight_grad`) instead of XLA's
  # blocked convolution; set by `conv_general_dilated` where `_native_dw_applies`.
  native_dw: bool = False
  # A 3-D convolution or the per-frame 2-D part of one (`conv3d`): a native weight gradient
  # runs on `native_conv3d`'s kernel, which suits their large kernels.
  video: bool = False


def _cpu_plan(c_in: int, kshape: Sequence[int], strides: Sequence[int],
              pads: Sequence[tuple[int, int]], eigen: bool) -> _Plan:
  """The fastest measured formulation of each part of a CPU convolution.

  Measured on the development machine (ms, batch 128, 3x3, interleaved, best of 9; "Eigen"
  = XLA's own convolution kernels, which `xla_cpu` selects; see BENCHMARKS.md):

    * Unpadded 1x1 kernels are plain matmuls: all three parts as dots (forward and gradients
      2.8x faster than lax at 128x32x32, 64->64).
    * Eigen, stride > 1: the input gradient as col2im (transpose of the im2col dot) beats
      XLA's transposed convolution everywhere: 32x32 16->32 1.8 vs 4.6, 16x16 32->64 1.4 vs
      2.4, 32x32 64->128 37.8 vs 65.0, 8x8 64->128 1.3 vs 1.7. At stride 1 XLA wins by 2-5x.
    * Eigen, weight gradient: XLA's convolution, blocked over the batch
      (`_blocked_weight_grad`), at every shape. In isolation the separable/im2col matmuls won
      for 8-16 input channels (32x32 16->16 9.4 vs 15.4 ms, 16x16 16->32 s2 0.9 vs 1.4) and
      lost from 32 on (16x16 32->32 8.2 vs 6.6, 8x8 64->64 6.3 vs 3.6) and for 3-channel stems
      (3.4 vs 1.8); but inside a training step, once the blocking stopped XLA from recomputing
      the batch-norm chain into the transposes, the blocked XLA gradient for the 16-channel
      layers too made the float ResNet-20 step 1.05-1.06x faster (RBNN: 1.01x, same run).
    * YNNPACK convolutions (jaxlib's default when `xla_cpu` could not set its flag): the
      matmul weight gradient wins at every ResNet-20 shape (module docstring), the rest is
      XLA's, except the strided input gradient: col2im there too, since the canonical
      transposed convolution (`_canonical_input_grad`) covers stride 1 only.

  Parts not planned as matmuls run as XLA convolutions in the canonical channel-last form
  (`_canonical_input_grad`, `_canonical_weight_grad`), so they stay fast inside loop bodies.

  Args:
    c_in: input channels.
    kshape: kernel spatial shape.
    strides: window strides.
    pads: explicit padding.
    eigen: whether XLA runs convolutions with its Eigen kernels (`xla_cpu.eigen_convolutions`).

  Returns:
    The plan.
  """
  if math.prod(kshape) == 1 and all(p == (0, 0) for p in pads):
    return _Plan(True, True, True)
  strided = any(s > 1 for s in strides)
  if not eigen:
    return _Plan(False, strided, True)
  return _Plan(False, strided, False)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6, 7))
def _fast_conv(lhs: jax.Array, rhs: jax.Array, strides: tuple[int, ...],
               pads: tuple[tuple[int, int], ...], rhs_dil: tuple[int, ...], precision: Any,
               pet: Any, plan: _Plan) -> jax.Array:
  """Channel-last convolution whose parts follow `plan` (see `_cpu_plan`)."""
  if plan.matmul_fwd:
    return _im2col_conv(lhs, rhs, strides, pads, rhs_dil, precision, pet)
  if plan.onednn:
    return onednn_conv.onednn_conv(lhs, rhs, strides, pads, rhs_dil)
  return _lax_conv(lhs, rhs, strides, pads, rhs_dil, precision, pet)


def _fast_conv_fwd(lhs, rhs, strides, pads, rhs_dil, precision, pet, plan):
  out = _fast_conv(lhs, rhs, strides, pads, rhs_dil, precision, pet, plan)
  return out, (lhs, rhs)


def _fast_conv_bwd(strides, pads, rhs_dil, precision, pet, plan, res, g):
  lhs, rhs = res
  # Input gradient: XLA's transposed convolution, or the transpose of the im2col dot (col2im:
  # one dot, then the tap slices' transposes, pads, summed in one fusion).
  g_out = g.astype(jnp.result_type(lhs.dtype, rhs.dtype) if pet is None else g.dtype)
  kshape = rhs.shape[:-2]
  if plan.matmul_dx or not _canonical_dx_applies(kshape, strides, pads, rhs_dil):
    _, vjp_lhs = jax.vjp(
        lambda a: _im2col_conv(a, rhs, strides, pads, rhs_dil, precision, pet), lhs)
    dlhs = vjp_lhs(g_out)[0]
  else:
    dlhs = _canonical_input_grad(g_out, rhs, pads, rhs_dil, precision, pet, plan.onednn)
  if plan.native_dw:
    weight_grad = (native_conv3d.video_weight_grad if plan.video
                   else native_conv.conv_weight_grad)
    drhs = weight_grad(lhs, g_out, kshape, strides, pads, rhs_dil)
  elif plan.matmul_dw:
    drhs = _weight_grad(lhs, g, kshape, strides, pads, rhs_dil, precision)
  else:
    drhs = _blocked_weight_grad(lhs, g_out, kshape, strides, pads, rhs_dil, precision, pet)
  return dlhs.astype(lhs.dtype), drhs.astype(rhs.dtype)


def _canonical_dx_applies(kshape: Sequence[int], strides: Sequence[int],
                          pads: Sequence[tuple[int, int]], rhs_dil: Sequence[int]) -> bool:
  """Whether `_canonical_input_grad` covers this convolution (stride 1, padding <= the dilated
  kernel's reach); the rest take col2im, which is correct for every stride and padding."""
  return (all(st == 1 for st in strides)
          and all(lo <= (k - 1) * d and hi <= (k - 1) * d
                  for k, d, (lo, hi) in zip(kshape, rhs_dil, pads)))


_fast_conv.defvjp(_fast_conv_fwd, _fast_conv_bwd)


# Where the native depthwise kernels (`depthwise_conv`) do not apply (several devices, other
# dtypes, no compiler), depthwise convolutions with at most this many input channels run as dense
# convolutions with a block-diagonal kernel, wider ones as tap sums. Measured on the PC-DARTS
# digits search step (2-channel partial-channel ops, 3x3 and 5x5, dilated): compile + first
# step / step time were 48 s / 133 ms with XLA's grouped convolution, 81 s / 59 ms with tap sums
# (3 x taps slices per convolution to compile) and 51 s / 64 ms with the block-diagonal kernel.
# Override with JAXCOMPRESS_DENSE_DEPTHWISE_MAX_CHANNELS.
_DENSE_DEPTHWISE_MAX_CHANNELS = int(os.environ.get("JAXCOMPRESS_DENSE_DEPTHWISE_MAX_CHANNELS", 16))


def _depthwise_taps(x: jax.Array, w: jax.Array, strides: tuple[int, ...],
                    pads: tuple[tuple[int, int], ...], rhs_dil: tuple[int, ...],
                    out_dtype: Any) -> jax.Array:
  """Depthwise convolution as a sum over kernel taps of shifted inputs times per-channel weights.

  Args:
    x: [n, *spatial, c] (channels already repeated for a channel multiplier).
    w: [*kshape, 1, c] per-channel kernel.
    strides, pads, rhs_dil: window strides, explicit padding (negative crops), kernel dilation.
    out_dtype: result dtype; the sum runs in `_acc_dtype` (float32 for half precision).

  Returns:
    [n, *out_spatial, c].
  """
  kshape = w.shape[:-2]
  acc_t = _acc_dtype(jnp.result_type(x.dtype, w.dtype))
  xp = _pad_input(x, pads)
  out_sp = _out_spatial(xp.shape[1:-1], kshape, strides, rhs_dil)
  taps = w.reshape(-1, w.shape[-1]).astype(acc_t)
  acc = None
  for view, tap in zip(_patch_slices(xp, kshape, out_sp, strides, rhs_dil), taps):
    term = view.astype(acc_t) * tap
    acc = term if acc is None else acc + term
  return acc.astype(out_dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _depthwise_conv(x: jax.Array, w: jax.Array, strides: tuple[int, ...],
                    pads: tuple[tuple[int, int], ...], rhs_dil: tuple[int, ...],
                    out_dtype: Any) -> jax.Array:
  """Depthwise (one input channel per group) channel-last convolution for CPU.

  XLA:CPU has no fast kernel for grouped convolutions: 128x16x16, 32 channels, 3x3 took 39.7 ms
  forward and 115.6 ms forward + gradients (2110 ms inside a `lax.scan` body); as shifted
  multiply-adds it is 1.7 ms and 33 ms in either place (jaxlib 0.10.2, 2 cores). The input
  gradient is the same tap sum over the stride-dilated cotangent with the flipped kernel; the
  weight gradient is one reduction per tap.
  """
  return _depthwise_taps(x, w, strides, pads, rhs_dil, out_dtype)


def _depthwise_conv_fwd(x, w, strides, pads, rhs_dil, out_dtype):
  return _depthwise_taps(x, w, strides, pads, rhs_dil, out_dtype), (x, w)


def _depthwise_conv_bwd(strides, pads, rhs_dil, out_dtype, res, g):
  del out_dtype
  x, w = res
  kshape = w.shape[:-2]
  nsp = len(kshape)
  # dx[i] = sum_t w[t] g[(i + lo - t*d) / s]: dilate g by the stride (interior zeros), pad so
  # that a stride-1 tap sum with the flipped kernel lands on x's positions, crop/pad the end.
  zero = jnp.zeros((), g.dtype)
  low = [(k - 1) * d - lo for k, d, (lo, _) in zip(kshape, rhs_dil, pads)]
  dilated = [(n - 1) * s + 1 for n, s in zip(g.shape[1:-1], strides)]
  high = [xs + (k - 1) * d - lw - dl
          for xs, k, d, lw, dl in zip(x.shape[1:-1], kshape, rhs_dil, low, dilated)]
  gd = lax.pad(g, zero, [(0, 0, 0)] + [(lw, hg, s - 1) for lw, hg, s in
                                       zip(low, high, strides)] + [(0, 0, 0)])
  flipped = jnp.flip(w, tuple(range(nsp)))
  dx = _depthwise_taps(gd, flipped, (1,) * nsp, ((0, 0),) * nsp, rhs_dil, x.dtype)
  acc_t = _acc_dtype(jnp.result_type(x.dtype, g.dtype))
  views = _patch_slices(_pad_input(x, pads), kshape, g.shape[1:-1], strides, rhs_dil)
  g_acc = g.astype(acc_t)
  dw = jnp.stack([jnp.sum(v.astype(acc_t) * g_acc, axis=tuple(range(g.ndim - 1)))
                  for v in views])
  return dx, dw.reshape(w.shape).astype(w.dtype)


_depthwise_conv.defvjp(_depthwise_conv_fwd, _depthwise_conv_bwd)


# Smallest forward convolution (FLOPs) handed to oneDNN. Its kernels split each call statically
# over the thread pool, so a small one loses when XLA runs independent operations beside it: the
# 4-op BNAS digits search step (289 convolutions under 50 MFLOP, branches side by side) took
# 42.6-44.2 ms with every convolution on oneDNN against 39.0-40.2 ms with XLA's. Alone,
# oneDNN was 0.83x XLA at 4.7 MFLOP (64x8x8, 8->8), 1.10x at 19 and 1.37x at 38 MFLOP; every
# ResNet-20 convolution at batch 128 has 151-604 MFLOP. Override with
# JAXCOMPRESS_ONEDNN_MIN_FLOPS.
_ONEDNN_MIN_FLOPS = int(os.environ.get("JAXCOMPRESS_ONEDNN_MIN_FLOPS", 100_000_000))


_CACHEABLE = contextvars.ContextVar("jaxcompress_cacheable_convolutions", default=False)


@contextlib.contextmanager
def cacheable_programs() -> Iterator[None]:
  """Within the block, convolutions being traced stay off oneDNN's custom call.

  XLA:CPU cannot serialise a program holding that call, so JAX's persistent compilation cache
  never stores it (`train.compilation_cache`) and it compiles again in every process. For
  programs whose compile time outweighs what oneDNN's speed brings to their few large
  convolutions (the NAS supernets' steps), tracing them inside this block makes them cacheable.
  The choice is made as the forward pass is traced; gradients follow it.

  Yields:
    None.
  """
  token = _CACHEABLE.set(True)
  try:
    yield
  finally:
    _CACHEABLE.reset(token)


def _onednn_applies(lhs: jax.Array, rhs: jax.Array, strides: Sequence[int],
                    pads: Sequence[tuple[int, int]], rhs_dil: Sequence[int], pet: Any) -> bool:
  """Whether a CPU convolution's forward / stride-1 input gradient go to oneDNN.

  float32 without a different accumulation type (the kernels behind `onednn_conv`), one
  device (the custom call has no SPMD partitioning rule: under a sharded jit XLA would gather
  its operands onto every device, so multi-device CPU programs keep XLA's convolution), at
  least `_ONEDNN_MIN_FLOPS` forward FLOPs, not inside `cacheable_programs`, and
  `onednn_conv.available()`.
  """
  if lhs.dtype != jnp.float32 or not (pet is None or pet == jnp.dtype(jnp.float32)):
    return False  # (`pet is None` first: numpy compares a float64 dtype equal to None.)
  padded = [x + lo + hi for x, (lo, hi) in zip(lhs.shape[1:-1], pads)]
  out_sp = _out_spatial(padded, rhs.shape[:-2], strides, rhs_dil)
  flops = 2 * lhs.shape[0] * math.prod(out_sp) * math.prod(rhs.shape[:-1]) * rhs.shape[-1]
  return (flops >= _ONEDNN_MIN_FLOPS and jax.device_count() == 1 and not _CACHEABLE.get()
          and onednn_conv.available())


def _native_depthwise_applies(lhs: jax.Array, rhs: jax.Array, pet: Any) -> bool:
  """Whether a depthwise convolution runs on `depthwise_conv` (its native kernels): float32
  without a different accumulation type, one device (the FFI call has no SPMD partitioning
  rule), and the kernels' `available()`."""
  if lhs.dtype != jnp.float32 or rhs.dtype != jnp.float32:
    return False
  if not (pet is None or pet == jnp.dtype(jnp.float32)):
    return False
  return jax.device_count() == 1 and depthwise_conv.available()


def _native_dw_applies(lhs: jax.Array, rhs: jax.Array, pet: Any, video: bool = False) -> bool:
  """Whether a CPU convolution's weight gradient runs on `native_conv.conv_weight_grad` (2-D)
  or, for video convolutions, `native_conv3d.video_weight_grad`.

  2-D, or 3-D with `video` (3-D ones and their per-frame 2-D parts, see `conv3d`), float32
  without a different accumulation type, one device (like the oneDNN custom call, the FFI call
  has no SPMD partitioning rule), and the kernel's `available()` (a C++ compiler built it and
  its probe passed).
  """
  if lhs.ndim != 4 and not (video and lhs.ndim == 5):
    return False
  if lhs.dtype != jnp.float32 or rhs.dtype != jnp.float32:
    return False
  if not (pet is None or pet == jnp.dtype(jnp.float32)):
    return False
  kernel = native_conv3d if video else native_conv
  return jax.device_count() == 1 and kernel.available()


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: str | Sequence[tuple[int, int]],
                         lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers: Any = None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision: Any = None,
                         preferred_element_type: Any = None) -> jax.Array:
  """`lax.conv_general_dilated` with the same signature and results, faster gradients on CPU.

  Channel-last convolutions (NHWC/HWIO/NHWC and their 1-D/3-D analogues, which is what
  `flax.linen.Conv` emits) without lhs dilation or batch groups, and either no feature groups
  or depthwise ones, take a custom-VJP path on CPU; everything else, and every call on GPU/TPU,
  is `lax.conv_general_dilated`. Other grouped and transposed (lhs-dilated) convolutions fall
  back to lax. Like any
  `jax.custom_vjp`, the CPU path supports reverse mode (grad, vjp) but not forward mode
  (`jax.jvp`, `jax.hessian`); use `set_conv_impl("lax")` for those.

  Args:
    lhs: input, laid out per `dimension_numbers`.
    rhs: kernel, laid out per `dimension_numbers`.
    window_strides: stride per spatial dim.
    padding: "SAME", "VALID", "SAME_LOWER" or explicit (low, high) pairs.
    lhs_dilation: input dilation (transposed convolution).
    rhs_dilation: kernel dilation (atrous convolution).
    dimension_numbers: as in `lax.conv_general_dilated`.
    feature_group_count: grouped convolution.
    batch_group_count: batch-grouped convolution.
    precision: dot/conv precision.
    preferred_element_type: output/accumulation dtype.

  Returns:
    The convolution output, identical in shape and dtype to `lax.conv_general_dilated`'s.
  """
  args = (lhs, rhs, window_strides, padding)
  kwargs = dict(lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
                dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
                batch_group_count=batch_group_count, precision=precision,
                preferred_element_type=preferred_element_type)
  impl = _impl
  if impl == "lax" or (impl == "auto" and jax.default_backend() != "cpu"):
    return lax.conv_general_dilated(*args, **kwargs)
  nsp = lhs.ndim - 2
  dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  channel_last = (
      nsp >= 1 and tuple(dn.lhs_spec) == tuple(_channel_last_dn(nsp).lhs_spec)
      and tuple(dn.rhs_spec) == tuple(_channel_last_dn(nsp).rhs_spec)
      and tuple(dn.out_spec) == tuple(_channel_last_dn(nsp).out_spec)
      and batch_group_count == 1
      and (lhs_dilation is None or all(d == 1 for d in lhs_dilation))
      and jnp.issubdtype(lhs.dtype, jnp.floating) and lhs.dtype == rhs.dtype)
  depthwise = (channel_last and feature_group_count > 1
               and feature_group_count == lhs.shape[-1] and rhs.shape[-2] == 1)
  if not channel_last or (feature_group_count != 1 and not depthwise):
    return lax.conv_general_dilated(*args, **kwargs)
  strides = tuple(int(s) for s in window_strides)
  rhs_dil = tuple(int(d) for d in (rhs_dilation or (1,) * nsp))
  pads = padding_lib.explicit_pads(padding, lhs.shape[1:-1], rhs.shape[:-2], strides, rhs_dil)
  if any(lo < 0 or hi < 0 for lo, hi in pads):
    # Crop first: XLA:CPU's convolution with negative padding returned uninitialised memory
    # (values ~1e24) in jaxlib 0.10.2, so the fast path never hands it negative padding.
    lhs = _pad_input(lhs, [(min(lo, 0), min(hi, 0)) for lo, hi in pads])
    pads = tuple((max(lo, 0), max(hi, 0)) for lo, hi in pads)
  pet = None if preferred_element_type is None else jnp.dtype(preferred_element_type)
  if nsp == 3 and impl == "auto":
    # Video clips shrink to 1-2 frames in the deep stages: taps that read only padding there
    # are cut from the kernel (`conv3d.trimmed_kernel`), the same convolution with less work.
    rhs, pads = conv3d.trimmed_kernel(lhs.shape[1:-1], rhs, strides, pads, rhs_dil)
    if rhs.shape[0] == 1:
      # One temporal tap left: the 2-D convolution of the frames it reads.
      out = _cpu_conv(conv3d.frames_as_images(lhs, strides[0], pads[0]), rhs[0], strides[1:],
                      pads[1:], rhs_dil[1:], depthwise, precision, pet, impl, video=True)
      return conv3d.images_as_frames(out, lhs.shape[0])
  return _cpu_conv(lhs, rhs, strides, pads, rhs_dil, depthwise, precision, pet, impl,
                   video=nsp == 3)


def _cpu_conv(lhs: jax.Array, rhs: jax.Array, strides: tuple[int, ...],
              pads: tuple[tuple[int, int], ...], rhs_dil: tuple[int, ...], depthwise: bool,
              precision: Any, pet: Any, impl: str, video: bool) -> jax.Array:
  """A channel-last CPU convolution with non-negative padding, on the planned kernels.

  Args:
    lhs, rhs, strides, pads, rhs_dil, precision, pet: as `_fast_conv`.
    depthwise: one input channel per group (`rhs` is [*kshape, 1, out]).
    impl: "auto" or "matmul" (`set_conv_impl`).
    video: the convolution is (a per-frame part of) a 3-D one: `conv3d.adjust_plan` may move
      its parts off oneDNN / XLA for layers with few output pixels.

  Returns:
    The convolution output.
  """
  if depthwise:
    c = lhs.shape[-1]
    multiplier = rhs.shape[-1] // c
    if (multiplier == 1 and lhs.ndim == 4 and impl == "auto"
        and _native_depthwise_applies(lhs, rhs, pet)):
      return depthwise_conv.depthwise_conv(lhs, rhs, strides, pads, rhs_dil)
    if c > _DENSE_DEPTHWISE_MAX_CHANNELS:
      # Output channel o reads input channel o // multiplier (lax's grouping).
      x = jnp.repeat(lhs, multiplier, axis=-1) if multiplier > 1 else lhs
      return _depthwise_conv(x, rhs, strides, pads, rhs_dil, pet or lhs.dtype)
    # Few channels: the same convolution as a dense one with a block-diagonal kernel (at most
    # _DENSE_DEPTHWISE_MAX_CHANNELS times the FLOPs of a small layer, one XLA convolution and
    # its two canonical gradients instead of 3 x taps slices to compile).
    blocks = jnp.arange(c * multiplier)[None, :] // multiplier == jnp.arange(c)[:, None]
    rhs = rhs * blocks.astype(rhs.dtype)
  if impl == "matmul":
    plan = _Plan(True, True, True)
  else:
    # Even a plan with no matmul keeps the custom VJP: its gradients are the canonical
    # convolutions, which XLA:CPU runs fast inside loop bodies too (`_canonical_input_grad`).
    plan = _cpu_plan(rhs.shape[-2], rhs.shape[:-2], strides, pads,
                     xla_cpu.eigen_convolutions())
    if _onednn_applies(lhs, rhs, strides, pads, rhs_dil, pet):
      plan = plan._replace(onednn=True)
    if not plan.matmul_dw and _native_dw_applies(lhs, rhs, pet, video):
      plan = plan._replace(native_dw=True)
    if video:
      plan = conv3d.adjust_plan(plan, lhs.shape, rhs.shape, strides, pads, rhs_dil)._replace(
          video=True)
  return _fast_conv(lhs, rhs, strides, pads, rhs_dil, precision, pet, plan)


Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)
"""`flax.linen.Conv` using `conv_general_dilated` above; instances are plain `nn.Conv` modules
(so `nn.intercept_methods` interceptors and isinstance checks still match)."""
