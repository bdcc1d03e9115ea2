"""Depthwise channel-last 2-D float32 convolution as native CPU kernels, with its gradients.

`depthwise_conv(x, w, strides, pads, rhs_dil)` is `lax.conv_general_dilated` with
`feature_group_count = C` (NHWC input, kernel [KH, KW, 1, C], NHWC output):

    out[n, y, x, c] = sum_{i, j} x[n, y*sh + i*dh - pt, x*sw + j*dw - pl, c] * w[i, j, 0, c]

On CPU it runs `native/depthwise_conv.cc` (XLA FFI handlers built for the host by `native_build`):
one instruction per convolution, per input gradient (the same kernel over the stride-dilated,
padded cotangent with the flipped kernel) and per weight gradient (a second handler), where the
tap sums of `conv._depthwise_conv` are 3 x taps instructions each. That is what a supernet's
compile time is made of: the PC-DARTS edge holds four 3x3 / 5x5 depthwise convolutions per
separable op and one per dilated op (BENCHMARKS.md, "Time to first step").

When it is used (`available`): a CPU backend, a C++ compiler on the host (JAXCOMPRESS_NATIVE=0
opts out) and a one-time probe against the tap sums. Elsewhere `depthwise_conv` is
`conv._depthwise_conv` (tap sums).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from jaxcompress.ops import native_build

_SOURCE = "depthwise_conv"
FORWARD_TARGET = "jaxcompress_depthwise_conv"
WEIGHT_GRAD_TARGET = "jaxcompress_depthwise_weight_grad"


def _out_spatial(shape: Sequence[int], kshape: Sequence[int], strides: Sequence[int],
                 pads: Sequence[tuple[int, int]], rhs_dil: Sequence[int]) -> tuple[int, int]:
  return tuple((size + lo + hi - (k - 1) * d - 1) // s + 1 for size, k, s, d, (lo, hi)
               in zip(shape[1:3], kshape, strides, rhs_dil, pads))


def _reference_forward(x, w, *, strides, pads, rhs_dil, out_spatial):
  """lax's grouped convolution (every platform but the CPU lowering); w is [KH, KW, C]."""
  del out_spatial
  return lax.conv_general_dilated(
      x, w[:, :, None, :], strides, pads, rhs_dilation=rhs_dil,
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[-1],
      precision=lax.Precision.HIGHEST)


def _reference_weight_grad(x, g, *, kshape, strides, pads, rhs_dil):
  kernel = jnp.zeros(tuple(kshape) + (x.shape[-1],), x.dtype)
  _, vjp = jax.vjp(lambda k: _reference_forward(
      x, k, strides=strides, pads=pads, rhs_dil=rhs_dil, out_spatial=None), kernel)
  return vjp(g)[0]


def _attrs(strides, pads, rhs_dil) -> dict[str, Any]:
  return dict(stride_h=np.int64(strides[0]), stride_w=np.int64(strides[1]),
              dilation_h=np.int64(rhs_dil[0]), dilation_w=np.int64(rhs_dil[1]),
              pad_top=np.int64(pads[0][0]), pad_left=np.int64(pads[1][0]))


def _primitive(name: str, target: str, abstract: Callable[..., Any],
               reference: Callable[..., Any], static: tuple[str, ...]) -> Primitive:
  prim = Primitive(name)
  prim.def_abstract_eval(abstract)
  prim.def_impl(functools.partial(jax.jit, static_argnames=static)(
      lambda a, b, **params: prim.bind(a, b, **params)))

  def lowering(ctx, a, b, **params):
    return jax.ffi.ffi_lowering(target)(
        ctx, a, b, **_attrs(params["strides"], params["pads"], params["rhs_dil"]))

  mlir.register_lowering(prim, lowering, platform="cpu")
  mlir.register_lowering(prim, mlir.lower_fun(reference, multiple_results=False))
  # Both are bilinear in their operands: derivatives and batching through lax's formulation
  # (higher-order derivatives, e.g. DARTS's second-order step, and `jax.vmap` keep working).
  ad.primitive_jvps[prim] = lambda primals, tangents, **params: jax.jvp(
      functools.partial(reference, **params), primals,
      tuple(ad.instantiate_zeros(t) for t in tangents))
  batching.primitive_batchers[prim] = lambda args, dims, **params: (
      jax.vmap(functools.partial(reference, **params), in_axes=dims)(*args), 0)
  return prim


_forward_p = _primitive(
    FORWARD_TARGET, FORWARD_TARGET,
    lambda x, w, *, strides, pads, rhs_dil, out_spatial: jax.core.ShapedArray(
        (x.shape[0], *out_spatial, x.shape[-1]), x.dtype),
    _reference_forward, ("strides", "pads", "rhs_dil", "out_spatial"))
_weight_grad_p = _primitive(
    WEIGHT_GRAD_TARGET, WEIGHT_GRAD_TARGET,
    lambda x, g, *, kshape, strides, pads, rhs_dil: jax.core.ShapedArray(
        (*kshape, x.shape[-1]), x.dtype),
    _reference_weight_grad, ("kshape", "strides", "pads", "rhs_dil"))


def _forward(x, w, strides, pads, rhs_dil):
  out_spatial = _out_spatial(x.shape, w.shape[:2], strides, pads, rhs_dil)
  return _forward_p.bind(x, w, strides=strides, pads=pads, rhs_dil=rhs_dil,
                         out_spatial=out_spatial)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _native(x: jax.Array, w: jax.Array, strides: tuple[int, int],
            pads: tuple[tuple[int, int], ...], rhs_dil: tuple[int, int]) -> jax.Array:
  return _forward(x, w, strides, pads, rhs_dil)


def _native_fwd(x, w, strides, pads, rhs_dil):
  return _forward(x, w, strides, pads, rhs_dil), (x, w)


def _native_bwd(strides, pads, rhs_dil, res, g):
  x, w = res
  kshape = w.shape[:2]
  # dx: the forward kernel over g dilated by the stride (interior zeros) and padded so that a
  # stride-1 pass with the flipped kernel lands on x's positions.
  low = [(k - 1) * d - lo for k, d, (lo, _) in zip(kshape, rhs_dil, pads)]
  dilated = [(n - 1) * s + 1 for n, s in zip(g.shape[1:3], strides)]
  high = [size + (k - 1) * d - lw - dl
          for size, k, d, lw, dl in zip(x.shape[1:3], kshape, rhs_dil, low, dilated)]
  gd = lax.pad(g, jnp.zeros((), g.dtype),
               [(0, 0, 0)] + [(lw, hg, s - 1) for lw, hg, s in zip(low, high, strides)]
               + [(0, 0, 0)])
  # Negative low/high padding crops; the kernel takes non-negative padding only.
  dx = _forward(gd, jnp.flip(w, (0, 1)), (1, 1), ((0, 0), (0, 0)), rhs_dil)
  dw = _weight_grad_p.bind(x, g, kshape=tuple(kshape), strides=strides, pads=pads,
                           rhs_dil=rhs_dil)
  return dx, dw


_native.defvjp(_native_fwd, _native_bwd)


def depthwise_conv(x: jax.Array, w: jax.Array, strides: Sequence[int],
                   pads: Sequence[tuple[int, int]], rhs_dil: Sequence[int]) -> jax.Array:
  """Depthwise channel-last 2-D convolution on the native kernels (formula above).

  Args:
    x: input [n, h, w, c], float32.
    w: kernel [kh, kw, 1, c] (lax's grouped-convolution layout), float32.
    strides: window strides (>= 1).
    pads: explicit (low, high) padding per spatial dimension (>= 0).
    rhs_dil: kernel dilation (>= 1).

  Returns:
    [n, ho, wo, c] float32, differentiable in `x` and `w`.

  Raises:
    ValueError: when `available()` is False or the operands are not float32 NHWC / [kh, kw, 1, c]
      with non-negative padding.
  """
  if not available():
    raise ValueError("depthwise_conv: the native kernel is not available here; use "
                     "jaxcompress.ops.conv.conv_general_dilated, which falls back to tap sums.")
  if x.dtype != jnp.float32 or w.dtype != jnp.float32 or x.ndim != 4 or w.shape != (
      *w.shape[:2], 1, x.shape[-1]):
    raise ValueError(f"depthwise_conv takes float32 NHWC input and a [kh, kw, 1, C] kernel, "
                     f"got {x.shape} {x.dtype} and {w.shape} {w.dtype}.")
  pads = tuple((int(lo), int(hi)) for lo, hi in pads)
  if any(lo < 0 or hi < 0 for lo, hi in pads):
    raise ValueError(f"depthwise_conv needs padding >= 0, got {pads}; crop the input first.")
  return _native(x, w[:, :, 0, :], tuple(int(s) for s in strides), pads,
                 tuple(int(d) for d in rhs_dil))


@functools.lru_cache(maxsize=None)
def _probe() -> bool:
  """Runs both handlers on strided, dilated, padded cases; True if they match lax."""
  rng = np.random.default_rng(0)
  cases = [((2, 9, 8, 4), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),
           ((3, 10, 9, 5), (5, 5), (2, 2), ((2, 2), (2, 1)), (1, 1)),
           ((2, 8, 8, 3), (3, 3), (1, 1), ((2, 2), (2, 2)), (2, 2)),
           ((1, 7, 6, 16), (5, 3), (1, 2), ((4, 4), (0, 2)), (2, 1))]

  def check(shape, kshape, strides, pads, rhs_dil):
    x = jnp.asarray(rng.standard_normal(shape).astype(np.float32))
    w = jnp.asarray(rng.standard_normal((*kshape, shape[-1])).astype(np.float32))
    out_spatial = _out_spatial(shape, kshape, strides, pads, rhs_dil)
    got = _forward_p.bind(x, w, strides=strides, pads=pads, rhs_dil=rhs_dil,
                          out_spatial=out_spatial)
    want = _reference_forward(x, w, strides=strides, pads=pads, rhs_dil=rhs_dil,
                              out_spatial=out_spatial)
    g = jnp.asarray(rng.standard_normal(want.shape).astype(np.float32))
    got_dw = _weight_grad_p.bind(x, g, kshape=kshape, strides=strides, pads=pads,
                                 rhs_dil=rhs_dil)
    want_dw = _reference_weight_grad(x, g, kshape=kshape, strides=strides, pads=pads,
                                     rhs_dil=rhs_dil)
    return (np.allclose(got, want, rtol=1e-4, atol=1e-4)
            and np.allclose(got_dw, want_dw, rtol=1e-4, atol=1e-3))

  return native_build.passes_probe([functools.partial(check, *case) for case in cases])


@functools.lru_cache(maxsize=None)
def _register() -> bool:
  forward = native_build.load_ffi(_SOURCE, "JaxcompressDepthwiseConv", FORWARD_TARGET)
  grad = native_build.load_ffi(_SOURCE, "JaxcompressDepthwiseWeightGrad", WEIGHT_GRAD_TARGET)
  return forward is not None and grad is not None


def available() -> bool:
  """Whether `depthwise_conv` runs the native kernels here (module docstring: conditions).

  Returns:
    True once the kernels were built, registered and passed the probe on a CPU backend.
  """
  return jax.default_backend() == "cpu" and _register() and _probe()
