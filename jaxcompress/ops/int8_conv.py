"""PAMS's integer convolution on AMX int8 tiles, as one native CPU kernel.

`pams_conv` computes what `quant.serve_int8` serves for a body convolution of a PAMS model
(arXiv 2011.04212): the input's integer levels with the learned alpha (eq. 2),

    l = round_half_even(clip(x, -alpha, alpha) * qmax / alpha)    (int8)

an int8 x int8 -> int32 convolution with the exported weight levels, and the float rescale
`acc * scale + bias` (scale = (alpha / qmax) * weight step). XLA:CPU runs that integer
convolution through a slow generic loop; here `native/int8_conv.cc` (an XLA FFI handler built
for the host by `native_build`) quantises the input rows into a zero-padded int8 buffer while
reading them, accumulates with AMX TDPBSSD (16 pixels x 16 outputs x 64 input channels per
instruction) and applies the rescale as it stores the output.

When it is used (`available`): a CPU backend, a C++ compiler (JAXCOMPRESS_NATIVE=0 opts out), a
CPU with AMX-INT8 whose kernel grants the tile state, and a one-time probe that matches a NumPy
transcription of the formula bit for bit on the integer part. Stride 1, no dilation, one group,
2-D (EDSR / RDN bodies); `supports` says. Elsewhere `quant.serve_int8` keeps XLA's integer
convolution, with the same results.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import mlir

from jaxcompress.ops import native_build

FFI_TARGET = "jaxcompress_int8_conv"
_SOURCE = "int8_conv"
_SYMBOL = "JaxcompressInt8Conv"

int8_conv_p = Primitive("jaxcompress_int8_conv")


def _out_spatial(in_spatial, kshape, pads):
  return tuple(n + lo + hi - k + 1 for n, k, (lo, hi) in zip(in_spatial, kshape, pads))


def _abstract_eval(x, params, kernel, bias, *, pads):
  n = x.shape[0]
  ho, wo = _out_spatial(x.shape[1:3], kernel.shape[:2], pads)
  del params, bias
  return jax.core.ShapedArray((n, ho, wo, kernel.shape[-1]), jnp.float32)


def _cpu_lowering(ctx, x, params, kernel, bias, *, pads):
  return jax.ffi.ffi_lowering(FFI_TARGET)(ctx, x, params, kernel, bias,
                                          pad_top=np.int64(pads[0][0]),
                                          pad_left=np.int64(pads[1][0]))


int8_conv_p.def_abstract_eval(_abstract_eval)
int8_conv_p.def_impl(functools.partial(jax.jit, static_argnames=("pads",))(
    lambda *args, **params: int8_conv_p.bind(*args, **params)))
mlir.register_lowering(int8_conv_p, _cpu_lowering, platform="cpu")


def supports(kernel_shape: Sequence[int], strides: Sequence[int], dilation: Sequence[int],
             pads: Sequence[tuple[int, int]], groups: int) -> bool:
  """Whether the kernel takes this convolution (2-D, stride 1, no dilation, one group)."""
  return (len(kernel_shape) == 4 and tuple(strides) == (1, 1) and tuple(dilation) == (1, 1)
          and groups == 1 and all(lo >= 0 and hi >= 0 for lo, hi in pads)
          and all(hi <= k - 1 for (_, hi), k in zip(pads, kernel_shape[:2])))


def pams_conv(x: jax.Array, alpha: jax.Array, qmax: float, kernel: jax.Array,
              scale: jax.Array, bias: jax.Array | None,
              pads: Sequence[tuple[int, int]]) -> jax.Array:
  """The integer convolution of the module docstring through the native kernel.

  Call only where `available()` and `supports(...)` hold.

  Args:
    x: float32 input [n, h, w, c].
    alpha: the input quantiser's learned alpha (a scalar).
    qmax: its largest level (127 at 8 bits).
    kernel: int8 weight levels [kh, kw, c, o].
    scale: float32 scalar, (alpha / qmax) * weight step.
    bias: float32 [o] or None.
    pads: explicit ((top, bottom), (left, right)) zero padding, each below the kernel size.

  Returns:
    float32 [n, ho, wo, o].

  Raises:
    ValueError: on dtypes or geometry the kernel does not take.
    RuntimeError: when the kernel cannot be built here.
  """
  pads = tuple((int(lo), int(hi)) for lo, hi in pads)
  if x.dtype != jnp.float32 or kernel.dtype != jnp.int8 or x.ndim != 4 or kernel.ndim != 4:
    raise ValueError(f"pams_conv takes a float32 NHWC input and int8 HWIO levels, got "
                     f"{x.dtype}{x.shape} and {kernel.dtype}{kernel.shape}.")
  if kernel.shape[2] != x.shape[-1] or not supports(kernel.shape, (1, 1), (1, 1), pads, 1):
    raise ValueError(f"pams_conv: kernel {kernel.shape} with pads {pads} does not fit input "
                     f"{x.shape} (stride 1, pads below the kernel size).")
  if not amx_ready():
    raise RuntimeError(f"pams_conv: the native AMX kernel is not usable here "
                       f"({native_build.build_error(_SOURCE)}); check `available()` first.")
  params = jnp.stack([jnp.asarray(alpha, jnp.float32).reshape(()), jnp.float32(qmax),
                      jnp.asarray(scale, jnp.float32).reshape(())])
  bias = jnp.zeros((kernel.shape[-1],), jnp.float32) if bias is None else bias
  return int8_conv_p.bind(x, params, kernel, bias.astype(jnp.float32), pads=pads)


def reference(x: np.ndarray, alpha: float, qmax: float, kernel: np.ndarray, scale: float,
              bias: np.ndarray | None, pads: Sequence[tuple[int, int]]) -> np.ndarray:
  """NumPy transcription of `pams_conv` (the probe's and the tests' oracle)."""
  x = np.asarray(x, np.float32)
  a, q = np.float32(alpha), np.float32(qmax)
  levels = np.round(np.clip(x, -a, a) * q / a).astype(np.int64)
  levels = np.pad(levels, [(0, 0), *pads, (0, 0)])
  kh, kw, _, o = kernel.shape
  n, hp, wp, _ = levels.shape
  ho, wo = hp - kh + 1, wp - kw + 1
  acc = np.zeros((n, ho, wo, o), np.int64)
  k = np.asarray(kernel, np.int64)
  for i in range(kh):
    for j in range(kw):
      acc += levels[:, i:i + ho, j:j + wo, :] @ k[i, j]
  out = acc.astype(np.float32) * np.float32(scale)
  return out if bias is None else out + np.asarray(bias, np.float32)


@functools.lru_cache(maxsize=None)
def amx_ready() -> bool:
  """Builds and registers the kernel; True when it has an AMX path the CPU grants."""
  library = native_build.load_ffi(_SOURCE, _SYMBOL, FFI_TARGET)
  try:
    return library is not None and int(library.JaxcompressInt8ConvAmx()) == 1
  except AttributeError:
    return False


PROBE_CASES = (  # (input shape, o, kshape, pads, bias)
    ((2, 7, 9, 64), 64, (3, 3), ((1, 1), (1, 1)), True),
    ((1, 5, 21, 3), 40, (3, 3), ((1, 1), (1, 1)), False),   # c < 64, o tail, width > 16
    ((2, 6, 35, 96), 16, (1, 3), ((0, 0), (2, 0)), True),    # 2 chunks, odd pads, 3 blocks
)


def _case(rng: np.random.Generator, shape, o, kshape, pads, with_bias):
  x = (rng.standard_normal(shape) * 2).astype(np.float32)
  x.flat[::7] = np.float32(0.5)  # exact halves of a level step: round half to even
  kernel = rng.integers(-127, 128, tuple(kshape) + (shape[-1], o)).astype(np.int8)
  alpha = np.float32(2.5)
  scale = np.float32(alpha / 127 * 0.01)
  bias = rng.standard_normal(o).astype(np.float32) if with_bias else None
  return (x, alpha, 127.0, kernel, scale, bias, pads)


def _check(rng: np.random.Generator, case: tuple) -> bool:
  args = _case(rng, *case)
  x, alpha, qmax, kernel, scale, bias, pads = args
  got = np.asarray(pams_conv(jnp.asarray(x), alpha, qmax, jnp.asarray(kernel), scale,
                             None if bias is None else jnp.asarray(bias), pads))
  return bool(np.allclose(got, reference(*args), rtol=1e-6, atol=1e-5))


@functools.lru_cache(maxsize=None)
def _probe() -> bool:
  """Runs the kernel on `PROBE_CASES`; True if it matches `reference` (float rounding)."""
  rng = np.random.default_rng(0)
  return native_build.passes_probe(functools.partial(_check, rng, c) for c in PROBE_CASES)


def available() -> bool:
  """Whether `pams_conv` may be called here (module docstring: conditions)."""
  return jax.default_backend() == "cpu" and amx_ready() and _probe()
