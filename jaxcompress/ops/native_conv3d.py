"""The weight gradient of a channel-last 3-D float32 convolution as a native CPU kernel.

`conv3d_weight_grad(x, g, kshape, strides, pads, rhs_dil)` is d/dW of
`lax.conv_general_dilated(x, W, strides, pads, rhs_dilation=rhs_dil)` (NDHWC / DHWIO / NDHWC)
contracted with the cotangent `g`:

    dW[a, i, j, c, o] = sum_{n, t, y, x} x[n, t*st + a*dt - pf, y*sh + i*dh - pt,
                                           x*sw + j*dw - pl, c] * g[n, t, y, x, o]

On CPU it runs `native/conv3d_weight_grad.cc`, the 3-D sibling of `native_conv`'s kernel (an
XLA FFI handler built for the host by `native_build`): per kernel tap, an outer product of input
and output channels accumulated in vector registers over the pixels of the output frames,
reading both operands in place; threads split the kernel taps and output channels (no partial
sums to add, which for a 28 MiB stage-4 kernel would cost more than the sums). XLA:CPU instead
runs the gradient as a convolution over batch-minor transposes of both operands; for the R3D-18
stem (7x7x7, 3 -> 64, batch 2 of 8x112x112) that took 1.9 s (`conv._blocked_weight_grad`) or
1.1 s (unblocked), PyTorch's oneDNN kernel 0.2-0.3 s (numbers: `benchmarks/video_step.py`).

When it is used (`available`): as `native_conv.available` (a CPU backend, a C++ compiler,
JAXCOMPRESS_NATIVE not 0, vector registers of at least 8 floats) and a one-time probe over
strided, dilated, padded shapes with every register-block tail that matches the lax gradient.
Elsewhere `conv3d_weight_grad` is the lax gradient. The primitive's JVP and batching rules are
the lax gradient's (it is bilinear in `x` and `g`), so higher-order derivatives and `jax.vmap`
keep working.
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

FFI_TARGET = "jaxcompress_conv3d_weight_grad"
_SOURCE = "conv3d_weight_grad"
_SYMBOL = "JaxcompressConv3dWeightGrad"
# As `native_conv._MIN_LANES`: the register blocking needs AVX2 or AVX-512 to beat XLA.
_MIN_LANES = 8
_DN = lax.ConvDimensionNumbers((0, 4, 1, 2, 3), (4, 3, 0, 1, 2), (0, 4, 1, 2, 3))


def _reference(x: jax.Array, g: jax.Array, *, kshape: tuple[int, ...], strides: tuple[int, ...],
               pads: tuple[tuple[int, int], ...], rhs_dil: tuple[int, ...]) -> jax.Array:
  """The same gradient through `lax.conv_general_dilated`'s VJP (every rule but CPU lowering)."""
  kernel = jnp.zeros(tuple(kshape) + (x.shape[-1], g.shape[-1]), x.dtype)
  _, vjp = jax.vjp(lambda w: lax.conv_general_dilated(
      x, w, strides, pads, rhs_dilation=rhs_dil, dimension_numbers=_DN,
      precision=lax.Precision.HIGHEST), kernel)
  return vjp(g)[0]


_conv3d_weight_grad_p = Primitive("jaxcompress_conv3d_weight_grad")


def _abstract_eval(x, g, *, kshape, strides, pads, rhs_dil):
  del strides, pads, rhs_dil
  return jax.core.ShapedArray(tuple(kshape) + (x.shape[-1], g.shape[-1]), x.dtype)


def _cpu_lowering(ctx, x, g, *, kshape, strides, pads, rhs_dil):
  del kshape  # in the result's shape
  names = ("t", "h", "w")
  attrs = {f"stride_{a}": np.int64(s) for a, s in zip(names, strides)}
  attrs.update({f"dilation_{a}": np.int64(d) for a, d in zip(names, rhs_dil)})
  attrs.update({f"pad_{side}": np.int64(lo)
                for side, (lo, _) in zip(("front", "top", "left"), pads)})
  return jax.ffi.ffi_lowering(FFI_TARGET)(ctx, x, g, **attrs)


def _jvp(primals, tangents, **params):
  return jax.jvp(functools.partial(_reference, **params), primals,
                 tuple(ad.instantiate_zeros(t) for t in tangents))


def _batch(args, dims, **params):
  return jax.vmap(functools.partial(_reference, **params), in_axes=dims)(*args), 0


_STATIC = ("kshape", "strides", "pads", "rhs_dil")
_conv3d_weight_grad_p.def_abstract_eval(_abstract_eval)
_conv3d_weight_grad_p.def_impl(functools.partial(jax.jit, static_argnames=_STATIC)(
    lambda x, g, **params: _conv3d_weight_grad_p.bind(x, g, **params)))
mlir.register_lowering(_conv3d_weight_grad_p, _cpu_lowering, platform="cpu")
mlir.register_lowering(_conv3d_weight_grad_p,
                       mlir.lower_fun(_reference, multiple_results=False))
ad.primitive_jvps[_conv3d_weight_grad_p] = _jvp
batching.primitive_batchers[_conv3d_weight_grad_p] = _batch


def out_spatial(x_shape: Sequence[int], kshape: Sequence[int], strides: Sequence[int],
                pads: Sequence[tuple[int, int]], rhs_dil: Sequence[int]) -> tuple[int, ...]:
  """Output (d, h, w) of the convolution of an NDHWC input of `x_shape`.

  Args:
    x_shape: input shape [n, d, h, w, c].
    kshape, strides, pads, rhs_dil: the convolution's kernel shape, strides, padding, dilation.

  Returns:
    The cotangent's spatial shape.
  """
  return tuple((size + lo + hi - (k - 1) * d - 1) // s + 1 for size, k, s, d, (lo, hi)
               in zip(x_shape[1:4], kshape, strides, rhs_dil, pads))


def _check(x: jax.Array, g: jax.Array, kshape: tuple[int, ...], strides: tuple[int, ...],
           pads: tuple[tuple[int, int], ...], rhs_dil: tuple[int, ...]) -> None:
  if x.dtype != jnp.float32 or g.dtype != jnp.float32:
    raise ValueError(f"conv3d_weight_grad takes float32 operands, got {x.dtype} and {g.dtype}; "
                     "use jax.vjp of lax.conv_general_dilated for other dtypes.")
  if x.ndim != 5 or g.ndim != 5 or x.shape[0] != g.shape[0] or not (
      len(kshape) == len(strides) == len(pads) == len(rhs_dil) == 3):
    raise ValueError(f"conv3d_weight_grad: input {x.shape} and cotangent {g.shape} are not an "
                     f"NDHWC pair for a 3-D kernel {kshape} (strides {strides}, pads {pads}, "
                     f"dilation {rhs_dil}).")
  if any(lo < 0 or hi < 0 for lo, hi in pads) or min(strides + rhs_dil) < 1:
    raise ValueError(f"conv3d_weight_grad needs padding >= 0 and strides/dilations >= 1, got "
                     f"pads {pads}, strides {strides}, dilation {rhs_dil}; crop the input first.")
  expected = out_spatial(x.shape, kshape, strides, pads, rhs_dil)
  if tuple(g.shape[1:4]) != expected:
    raise ValueError(f"conv3d_weight_grad: cotangent spatial shape {g.shape[1:4]} is not the "
                     f"convolution's output shape {expected} for input {x.shape}, kernel "
                     f"{kshape}, strides {strides}, pads {pads}, dilation {rhs_dil}.")


def conv3d_weight_grad(x: jax.Array, g: jax.Array, kshape: Sequence[int],
                       strides: Sequence[int], pads: Sequence[tuple[int, int]],
                       rhs_dil: Sequence[int]) -> jax.Array:
  """Gradient of a channel-last 3-D convolution with respect to its kernel (formula above).

  Args:
    x: input [n, d, h, w, c], float32.
    g: cotangent of the convolution's output [n, do, ho, wo, o], float32.
    kshape: kernel spatial shape (kt, kh, kw).
    strides: window strides (>= 1).
    pads: explicit (low, high) padding per spatial dim (>= 0).
    rhs_dil: kernel dilation (>= 1).

  Returns:
    [kt, kh, kw, c, o] float32: the native kernel's result where `available()`, else lax's.

  Raises:
    ValueError: on other dtypes, ranks, negative padding or a cotangent of the wrong shape.
  """
  params = dict(kshape=tuple(int(k) for k in kshape), strides=tuple(int(s) for s in strides),
                pads=tuple((int(lo), int(hi)) for lo, hi in pads),
                rhs_dil=tuple(int(d) for d in rhs_dil))
  _check(x, g, **params)
  if not available():
    return _reference(x, g, **params)
  return _conv3d_weight_grad_p.bind(x, g, **params)


def video_weight_grad(x: jax.Array, g: jax.Array, kshape: Sequence[int],
                      strides: Sequence[int], pads: Sequence[tuple[int, int]],
                      rhs_dil: Sequence[int]) -> jax.Array:
  """`conv3d_weight_grad` of a 3-D convolution, or of a 2-D one over frames as 1-frame clips.

  The per-frame 2-D convolutions of a one-tap temporal kernel (`conv3d.frames_as_images`) have
  the large kernels of deep video layers, for which this kernel's split over taps and output
  channels beats `native_conv`'s per-thread partial sums (stage 4 of R3D-18, batch 2, 4x4
  pixels, 512 channels: 2.3 ms vs 13.6 ms, best of 9 in one process).

  Args:
    x: input [n, d, h, w, c] or [n, h, w, c], float32.
    g: cotangent of the convolution's output, same rank as `x`.
    kshape, strides, pads, rhs_dil: the convolution's kernel shape, strides, padding and
      dilation (3 or 2 entries each).

  Returns:
    [*kshape, c, o] float32.
  """
  if x.ndim == 5:
    return conv3d_weight_grad(x, g, kshape, strides, pads, rhs_dil)
  return conv3d_weight_grad(x[:, None], g[:, None], (1, *kshape), (1, *strides),
                            ((0, 0), *pads), (1, *rhs_dil))[0]


@functools.lru_cache(maxsize=None)
def _register() -> bool:
  """Builds the kernel for this CPU and registers it as an XLA FFI target; False if it can't."""
  library = native_build.load_ffi(_SOURCE, _SYMBOL, FFI_TARGET)
  try:
    return library is not None and library.JaxcompressConv3dWeightGradLanes() >= _MIN_LANES
  except AttributeError:
    return False  # a stale or foreign file under the cache name: lax's gradient instead


@functools.lru_cache(maxsize=None)
def _probe() -> bool:
  """Runs the kernel on shapes covering every code path; True if it matches the lax gradient."""
  rng = np.random.default_rng(0)
  cases = [  # (x shape, o, kshape, strides, pads, rhs_dil)
      # 64 + 16 + 3 outputs, input-channel tails, strides, dilation, asymmetric padding.
      ((2, 5, 9, 8, 21), 83, (2, 3, 2), (2, 2, 1), ((1, 0), (1, 2), (0, 1)), (2, 2, 1)),
      ((1, 3, 5, 5, 40), 32, (3, 3, 3), (1, 1, 1), ((1, 1),) * 3, (1, 1, 1)),  # one job run
      ((3, 1, 4, 4, 3), 8, (3, 1, 3), (1, 1, 2), ((1, 1), (0, 0), (2, 0)), (1, 1, 1)),
  ]
  cpu = jax.devices("cpu")[0]
  try:
    with jax.ensure_compile_time_eval(), jax.default_device(cpu):
      for shape, o, kshape, strides, pads, rhs_dil in cases:
        params = dict(kshape=kshape, strides=strides, pads=pads, rhs_dil=rhs_dil)
        x = jnp.asarray(rng.standard_normal(shape).astype(np.float32))
        out_sp = out_spatial(shape, kshape, strides, pads, rhs_dil)
        g = jnp.asarray(rng.standard_normal((shape[0],) + out_sp + (o,)).astype(np.float32))
        got = np.asarray(_conv3d_weight_grad_p.bind(x, g, **params))
        want = np.asarray(_reference(x, g, **params))
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-4, atol=1e-4):
          return False
  except Exception:  # pylint: disable=broad-except
    # Any failure (target rejected, FFI version mismatch) means: not usable with this jaxlib.
    return False
  return True


def available() -> bool:
  """Whether `conv3d_weight_grad` runs the native kernel here (module docstring: conditions).

  Returns:
    True once the kernel was built, registered and passed the probe on a CPU backend.
  """
  return jax.default_backend() == "cpu" and _register() and _probe()
