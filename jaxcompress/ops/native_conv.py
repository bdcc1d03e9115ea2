"""The weight gradient of a channel-last 2-D float32 convolution as a native CPU kernel.

`conv_weight_grad(x, g, kshape, strides, pads, rhs_dil)` is d/dW of `lax.conv_general_dilated(x,
W, strides, pads, rhs_dilation=rhs_dil)` (NHWC / HWIO / NHWC) contracted with the cotangent `g`:

    dW[i, j, c, o] = sum_{n, y, x} x[n, y*sh + i*dh - pt, x*sw + j*dw - pl, c] * g[n, y, x, o]

On CPU it runs `native/conv_weight_grad.cc` (an XLA FFI handler, built for the host by
`native_build`): per image and kernel tap, an outer product of input and output channels
accumulated in vector registers, reading both operands in place. XLA:CPU instead transposes
both operands batch-minor and runs an Eigen convolution over them, and no faster kernel is
reachable from JAX (jaxlib exposes oneDNN's forward convolution only; see `onednn_conv`).
Measured, batch 128, 3x3, float32, ms (best of 15, one process, 2-core AVX-512 Xeon, jaxlib
0.10.2; PyTorch 2.13's oneDNN `conv2d_weight`, channels-last, same run):

  ===================  ======  ===========================  =======
  layer                native  XLA (blocked, `conv.py`)     PyTorch
  ===================  ======  ===========================  =======
  32x32, 16->16        2.3     9.0                          1.9
  16x16, 32->32        2.2     6.0                          1.8
  8x8, 64->64          1.9     4.1                          1.9
  32x32, 16->32, s2    1.2     2.6 (unblocked lax: 12.8)    1.2
  ===================  ======  ===========================  =======

When it is used (`available`): a CPU backend, a C++ compiler on the host (see `native_build`;
JAXCOMPRESS_NATIVE=0 opts out), vector registers of at least 8 floats (AVX2 or AVX-512; with
128-bit vectors XLA is as fast), and a one-time probe (strided, dilated, padded, with channel
counts that exercise every register-block tail) that matches the lax gradient. Elsewhere, and
on other platforms, `conv_weight_grad` is the lax gradient.

The primitive's JVP and batching rules are the lax gradient's (it is bilinear in `x` and `g`),
so higher-order derivatives and `jax.vmap` keep working.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from jaxcompress.ops import native_build

FFI_TARGET = "jaxcompress_conv_weight_grad"
_SOURCE = "conv_weight_grad"
_SYMBOL = "JaxcompressConvWeightGrad"
# Narrowest vector registers (floats) worth it: with AVX-512 (16) and AVX2 (8) the kernel beats
# XLA's gradient; with 128-bit vectors (an x86-64 baseline build) it took 10 ms at 32x32x16,
# XLA 9 ms. Measured on the AVX-512 machine with -march=skylake-avx512/haswell/x86-64 builds
# (ms at 32x32 16->16, 16x16 32->32, 8x8 64->64): 2.5/2.2/1.9, 3.6/4.5/3.8, 10.1/9.6/9.4.
_MIN_LANES = 8
_DN = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))  # NHWC/HWIO/NHWC


def _reference(x: jax.Array, g: jax.Array, *, kshape: tuple[int, int],
               strides: tuple[int, int], pads: tuple[tuple[int, int], ...],
               rhs_dil: tuple[int, int]) -> jax.Array:
  """The same gradient through `lax.conv_general_dilated`'s VJP (every rule but CPU lowering)."""
  kernel = jnp.zeros(tuple(kshape) + (x.shape[-1], g.shape[-1]), x.dtype)
  _, vjp = jax.vjp(lambda w: lax.conv_general_dilated(
      x, w, strides, pads, rhs_dilation=rhs_dil, dimension_numbers=_DN,
      precision=lax.Precision.HIGHEST), kernel)
  return vjp(g)[0]


_conv_weight_grad_p = Primitive("jaxcompress_conv_weight_grad")


def _abstract_eval(x, g, *, kshape, strides, pads, rhs_dil):
  del strides, pads, rhs_dil
  return jax.core.ShapedArray(tuple(kshape) + (x.shape[-1], g.shape[-1]), x.dtype)


def _cpu_lowering(ctx, x, g, *, kshape, strides, pads, rhs_dil):
  del kshape  # in the result's shape
  return jax.ffi.ffi_lowering(FFI_TARGET)(
      ctx, x, g, stride_h=np.int64(strides[0]), stride_w=np.int64(strides[1]),
      dilation_h=np.int64(rhs_dil[0]), dilation_w=np.int64(rhs_dil[1]),
      pad_top=np.int64(pads[0][0]), pad_left=np.int64(pads[1][0]))


def _jvp(primals, tangents, **params):
  return jax.jvp(functools.partial(_reference, **params), primals,
                 tuple(ad.instantiate_zeros(t) for t in tangents))


def _batch(args, dims, **params):
  return jax.vmap(functools.partial(_reference, **params), in_axes=dims)(*args), 0


_STATIC = ("kshape", "strides", "pads", "rhs_dil")
_conv_weight_grad_p.def_abstract_eval(_abstract_eval)
_conv_weight_grad_p.def_impl(functools.partial(jax.jit, static_argnames=_STATIC)(
    lambda x, g, **params: _conv_weight_grad_p.bind(x, g, **params)))
mlir.register_lowering(_conv_weight_grad_p, _cpu_lowering, platform="cpu")
mlir.register_lowering(_conv_weight_grad_p, mlir.lower_fun(_reference, multiple_results=False))
ad.primitive_jvps[_conv_weight_grad_p] = _jvp
batching.primitive_batchers[_conv_weight_grad_p] = _batch


def _out_spatial(x_shape: Sequence[int], kshape: Sequence[int], strides: Sequence[int],
                 pads: Sequence[tuple[int, int]], rhs_dil: Sequence[int]) -> tuple[int, ...]:
  """(ho, wo) of the convolution of an NHWC input of `x_shape` (the cotangent's spatial shape)."""
  return tuple((size + lo + hi - (k - 1) * d - 1) // s + 1 for size, k, s, d, (lo, hi)
               in zip(x_shape[1:3], kshape, strides, rhs_dil, pads))


def _check(x: jax.Array, g: jax.Array, kshape: tuple[int, ...], strides: tuple[int, ...],
           pads: tuple[tuple[int, int], ...], rhs_dil: tuple[int, ...]) -> None:
  if x.dtype != jnp.float32 or g.dtype != jnp.float32:
    raise ValueError(f"conv_weight_grad takes float32 operands, got {x.dtype} and {g.dtype}; "
                     "use jax.vjp of lax.conv_general_dilated for other dtypes.")
  if x.ndim != 4 or g.ndim != 4 or x.shape[0] != g.shape[0] or not (
      len(kshape) == len(strides) == len(pads) == len(rhs_dil) == 2):
    raise ValueError(f"conv_weight_grad: input {x.shape} and cotangent {g.shape} are not an "
                     f"NHWC pair for a 2-D kernel {kshape} (strides {strides}, pads {pads}, "
                     f"dilation {rhs_dil}).")
  if any(lo < 0 or hi < 0 for lo, hi in pads) or min(strides + rhs_dil) < 1:
    raise ValueError(f"conv_weight_grad needs padding >= 0 and strides/dilations >= 1, got "
                     f"pads {pads}, strides {strides}, dilation {rhs_dil}; crop the input first.")
  expected = _out_spatial(x.shape, kshape, strides, pads, rhs_dil)
  if tuple(g.shape[1:3]) != expected:
    raise ValueError(f"conv_weight_grad: cotangent spatial shape {g.shape[1:3]} is not the "
                     f"convolution's output shape {expected} for input {x.shape}, kernel "
                     f"{kshape}, strides {strides}, pads {pads}, dilation {rhs_dil}.")


def conv_weight_grad(x: jax.Array, g: jax.Array, kshape: Sequence[int], strides: Sequence[int],
                     pads: Sequence[tuple[int, int]], rhs_dil: Sequence[int]) -> jax.Array:
  """Gradient of a channel-last 2-D convolution with respect to its kernel (formula above).

  Args:
    x: input [n, h, w, c], float32.
    g: cotangent of the convolution's output [n, ho, wo, o], float32.
    kshape: kernel spatial shape (kh, kw).
    strides: window strides (>= 1).
    pads: explicit (low, high) padding per spatial dim (>= 0).
    rhs_dil: kernel dilation (>= 1).

  Returns:
    [kh, kw, c, o] float32: the native kernel's result where `available()`, else lax's.

  Raises:
    ValueError: on other dtypes, ranks, negative padding or a cotangent of the wrong shape.
  """
  params = dict(kshape=tuple(int(k) for k in kshape), strides=tuple(int(s) for s in strides),
                pads=tuple((int(lo), int(hi)) for lo, hi in pads),
                rhs_dil=tuple(int(d) for d in rhs_dil))
  _check(x, g, **params)
  if not available():
    return _reference(x, g, **params)
  return _conv_weight_grad_p.bind(x, g, **params)


@functools.lru_cache(maxsize=None)
def _register() -> bool:
  """Builds the kernel for this CPU and registers it as an XLA FFI target; False if it can't."""
  library = native_build.load_ffi(_SOURCE, _SYMBOL, FFI_TARGET)
  try:
    return library is not None and library.JaxcompressConvWeightGradLanes() >= _MIN_LANES
  except AttributeError:
    return False  # a stale or foreign file under the cache name: lax's gradient instead


@functools.lru_cache(maxsize=None)
def _probe() -> bool:
  """Runs the kernel on shapes covering every code path; True if it matches the lax gradient."""
  rng = np.random.default_rng(0)
  cases = [  # (x shape, o, kshape, strides, pads, rhs_dil)
      ((3, 9, 8, 21), 83, (3, 2), (2, 1), ((1, 2), (0, 1)), (2, 1)),  # 64+16+3 outputs, R tails
      ((2, 7, 7, 40), 32, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),  # 8-channel blocks, tail
      ((1, 6, 5, 3), 8, (1, 3), (1, 2), ((0, 0), (2, 0)), (1, 1)),  # batch 1: no helper thread
  ]
  cpu = jax.devices("cpu")[0]
  try:
    with jax.ensure_compile_time_eval(), jax.default_device(cpu):
      for shape, o, kshape, strides, pads, rhs_dil in cases:
        params = dict(kshape=kshape, strides=strides, pads=pads, rhs_dil=rhs_dil)
        x = jnp.asarray(rng.standard_normal(shape).astype(np.float32))
        out_sp = _out_spatial(shape, kshape, strides, pads, rhs_dil)
        g = jnp.asarray(rng.standard_normal((shape[0],) + out_sp + (o,)).astype(np.float32))
        got = np.asarray(_conv_weight_grad_p.bind(x, g, **params))
        want = np.asarray(_reference(x, g, **params))
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-4, atol=1e-4):
          return False
  except Exception:  # pylint: disable=broad-except
    # Any failure (target rejected, FFI version mismatch) means: not usable with this jaxlib.
    return False
  return True


def available() -> bool:
  """Whether `conv_weight_grad` runs the native kernel here (module docstring: conditions).

  Returns:
    True once the kernel was built, registered and passed the probe on a CPU backend.
  """
  return jax.default_backend() == "cpu" and _register() and _probe()
