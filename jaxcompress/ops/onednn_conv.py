"""Channel-last float32 convolutions on oneDNN's kernels, which jaxlib's CPU runtime already holds.

XLA:CPU links oneDNN and runs a custom call named `__onednn$convolution` with it (the target its
own, optional, oneDNN rewriter would emit; jaxlib 0.10 does not run that rewriter, so XLA's
convolutions stay on Eigen/YNNPACK). `onednn_conv` emits the custom call directly, with the
window and layout in the `OneDnnConvolutionConfig` backend config. oneDNN's forward kernel
(`convolution_forward`, prop_kind forward_inference, channel-last src/dst) is the one PyTorch's
CPU convolutions use. Measured, batch 128, 3x3, float32, ms (best of 20, same process, 2-core
AVX-512 Xeon, jaxlib 0.10.2):

  =================  ======  ==========================
  layer              oneDNN  XLA:CPU (Eigen) convolution
  =================  ======  ==========================
  32x32, 16->16      2.02    4.04
  16x16, 32->32      1.54    3.35
  8x8, 64->64        1.68    4.03
  32x32, 16->32, s2  1.07    2.56
  =================  ======  ==========================

Only forward convolutions exist behind the target, so `jaxcompress.ops.conv` uses it for the
forward pass and for the stride-1 input gradient (a forward convolution of the cotangent with
the flipped kernel). A weight gradient written as a forward convolution (window = the whole
image) took 1.3-2.6 s per layer: oneDNN has no fast kernel for that shape, so weight gradients
run on jaxcompress's own C++ kernel (`native_conv`) or, without a compiler, on XLA.

When it is used (`available`): a CPU backend on x86-64 with a jaxlib whose custom-call contract
was checked (0.10, 0.11), not opted out (JAXCOMPRESS_ONEDNN_CONV=0), and a one-time probe that
runs a small strided, dilated, padded convolution through the target and compares it with
`lax.conv_general_dilated` passed. `jaxcompress.ops.conv` also requires one device and at least
100 MFLOP per convolution (see `conv._ONEDNN_MIN_FLOPS`). The config's fields are unsigned: callers pass non-negative
padding only (XLA aborts the process on a negative one, so `onednn_conv` checks first).

The primitive is differentiable and batchable through `lax.conv_general_dilated` (its JVP and
vmap rules call lax), so higher-order derivatives and `jax.vmap` keep working; the fast path
is the first-order gradient that `jaxcompress.ops.conv`'s custom VJP writes out.
"""
from __future__ import annotations

import functools
import json
import os
import platform
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# `custom_call` (emitting a target with a raw backend config) has no public export.
from jax._src.interpreters.mlir import custom_call as _custom_call  # pylint: disable=g-importing
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from jaxcompress.ops import xla_cpu

OPT_OUT_ENV = "JAXCOMPRESS_ONEDNN_CONV"
CUSTOM_CALL_TARGET = "__onednn$convolution"
# jaxlib minor versions whose `__onednn$convolution` backend-config contract (field meanings,
# no offsets on padding/stride/dilation) was checked against lax: 0.10.2 and 0.11.2 (the latter on
# a GPU machine's host CPU: tests/ops/onednn_conv_test.py, `bash benchmarks/gpu_suite.sh ops`).
# Others fall back to XLA: a config the runtime rejects aborts the process, so no probe there.
_CHECKED_JAXLIB = ((0, 10), (0, 11))


def _channel_last_dims(nsp: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """(batch, feature, *spatial) of an N(spatial)C array; (out, in, *spatial) of (spatial)IO."""
  data = (0, nsp + 1) + tuple(range(1, nsp + 1))
  kernel = (nsp + 1, nsp) + tuple(range(nsp))
  return data, kernel


def _out_shape(lhs_shape: Sequence[int], rhs_shape: Sequence[int], strides: Sequence[int],
               pads: Sequence[tuple[int, int]], rhs_dil: Sequence[int]) -> tuple[int, ...]:
  nsp = len(lhs_shape) - 2
  out_sp = tuple((x + lo + hi - (k - 1) * d - 1) // s + 1
                 for x, k, s, d, (lo, hi) in zip(lhs_shape[1:-1], rhs_shape[:nsp], strides,
                                                  rhs_dil, pads))
  return (lhs_shape[0],) + out_sp + (rhs_shape[-1],)


def _reference(lhs: jax.Array, rhs: jax.Array, *, strides, pads, rhs_dil) -> jax.Array:
  """The same convolution through `lax.conv_general_dilated` (rules other than CPU lowering)."""
  nsp = lhs.ndim - 2
  data, kernel = _channel_last_dims(nsp)
  dn = lax.ConvDimensionNumbers(data, kernel, data)
  return lax.conv_general_dilated(lhs, rhs, strides, pads, rhs_dilation=rhs_dil,
                                  dimension_numbers=dn, precision=lax.Precision.HIGHEST)


_onednn_conv_p = Primitive("jaxcompress_onednn_conv")


def _abstract_eval(lhs, rhs, *, strides, pads, rhs_dil):
  return jax.core.ShapedArray(_out_shape(lhs.shape, rhs.shape, strides, pads, rhs_dil),
                              lhs.dtype)


def _backend_config(nsp: int, kshape: Sequence[int], strides: Sequence[int],
                    pads: Sequence[tuple[int, int]], rhs_dil: Sequence[int]) -> str:
  """JSON of XLA's `xla.cpu.BackendConfig` with its `onednn_conv_config` filled in."""
  data, kernel = _channel_last_dims(nsp)
  layout = {"batch_dim": data[0], "feature_dim": data[1], "spatial_dims": list(data[2:])}
  config = {
      "dims": nsp + 2,
      "feature_groups": 1,
      "input": {"dims": nsp + 2, "data": layout},
      "kernel": {"dims": nsp + 2, "filter": {
          "output_feature_dim": kernel[0], "input_feature_dim": kernel[1],
          "spatial_dims": list(kernel[2:])}},
      "output": {"dims": nsp + 2, "data": layout},
      "window": {"size": list(kshape), "pad_left": [lo for lo, _ in pads],
                 "pad_right": [hi for _, hi in pads], "strides": list(strides),
                 "window_dilations": list(rhs_dil)},
  }
  return json.dumps({"onednn_conv_config": config})


def _cpu_lowering(ctx, lhs, rhs, *, strides, pads, rhs_dil):
  nsp = len(strides)
  kshape = ctx.avals_in[1].shape[:nsp]
  out_type = mlir.aval_to_ir_type(ctx.module_context, ctx.avals_out[0])
  return _custom_call(
      CUSTOM_CALL_TARGET, result_types=[out_type], operands=[lhs, rhs],
      backend_config=_backend_config(nsp, kshape, strides, pads, rhs_dil),
      api_version=1).results


def _jvp(primals, tangents, **params):
  return jax.jvp(functools.partial(_reference, **params), primals,
                 tuple(ad.instantiate_zeros(t) for t in tangents))


def _batch(args, dims, **params):
  return jax.vmap(functools.partial(_reference, **params), in_axes=dims)(*args), 0


_onednn_conv_p.def_abstract_eval(_abstract_eval)
_onednn_conv_p.def_impl(functools.partial(jax.jit, static_argnames=("strides", "pads", "rhs_dil"))(
    lambda lhs, rhs, strides, pads, rhs_dil: _onednn_conv_p.bind(
        lhs, rhs, strides=strides, pads=pads, rhs_dil=rhs_dil)))
mlir.register_lowering(_onednn_conv_p, _cpu_lowering, platform="cpu")
mlir.register_lowering(_onednn_conv_p, mlir.lower_fun(_reference, multiple_results=False))
ad.primitive_jvps[_onednn_conv_p] = _jvp
batching.primitive_batchers[_onednn_conv_p] = _batch


def onednn_conv(lhs: jax.Array, rhs: jax.Array, strides: Sequence[int],
                pads: Sequence[tuple[int, int]], rhs_dil: Sequence[int]) -> jax.Array:
  """A channel-last float32 convolution run by oneDNN on CPU (lax on other platforms).

  Same result as `lax.conv_general_dilated(lhs, rhs, strides, pads, rhs_dilation=rhs_dil,
  dimension_numbers=N(spatial)C / (spatial)IO / N(spatial)C)` within float32 rounding.

  Args:
    lhs: input [n, *spatial, c], float32.
    rhs: kernel [*kshape, c, o], float32.
    strides: window stride per spatial dim (>= 1).
    pads: explicit (low, high) padding per spatial dim, each >= 0.
    rhs_dil: kernel dilation per spatial dim (>= 1).

  Returns:
    [n, *out_spatial, o], float32.

  Raises:
    ValueError: on a dtype other than float32, mismatched ranks or channels, or negative
      padding (the backend config holds unsigned values).
  """
  nsp = lhs.ndim - 2
  strides, rhs_dil = tuple(int(s) for s in strides), tuple(int(d) for d in rhs_dil)
  pads = tuple((int(lo), int(hi)) for lo, hi in pads)
  if lhs.dtype != jnp.float32 or rhs.dtype != jnp.float32:
    raise ValueError(f"onednn_conv takes float32 operands, got {lhs.dtype} and {rhs.dtype}; "
                     "use lax.conv_general_dilated for other dtypes.")
  if (nsp < 1 or rhs.ndim != lhs.ndim or rhs.shape[-2] != lhs.shape[-1]
      or not len(strides) == len(pads) == len(rhs_dil) == nsp):
    raise ValueError(f"onednn_conv: input {lhs.shape} and kernel {rhs.shape} are not a "
                     f"channel-last pair for strides {strides}, pads {pads}, dilation {rhs_dil}.")
  if any(lo < 0 or hi < 0 for lo, hi in pads) or min(strides + rhs_dil) < 1:
    raise ValueError(f"onednn_conv needs padding >= 0 and strides/dilations >= 1, got pads "
                     f"{pads}, strides {strides}, dilation {rhs_dil}; crop the input first.")
  return _onednn_conv_p.bind(lhs, rhs, strides=strides, pads=pads, rhs_dil=rhs_dil)


@functools.lru_cache(maxsize=None)
def _probe() -> bool:
  """Runs one strided, dilated, padded convolution through the target; True if it matches lax."""
  rng = np.random.default_rng(0)
  lhs = rng.standard_normal((2, 9, 8, 3)).astype(np.float32)
  rhs = rng.standard_normal((3, 2, 3, 5)).astype(np.float32)
  params = dict(strides=(2, 1), pads=((1, 2), (0, 1)), rhs_dil=(2, 1))
  cpu = jax.devices("cpu")[0]
  try:
    with jax.ensure_compile_time_eval(), jax.default_device(cpu):
      got = np.asarray(onednn_conv(jnp.asarray(lhs), jnp.asarray(rhs), **params))
      want = np.asarray(_reference(jnp.asarray(lhs), jnp.asarray(rhs), **params))
  except Exception:  # pylint: disable=broad-except
    # Any failure (target missing, config rejected) means: not usable in this jaxlib.
    return False
  return got.shape == want.shape and bool(np.allclose(got, want, rtol=1e-5, atol=1e-5))


def available() -> bool:
  """Whether `onednn_conv` runs on oneDNN here (see the module docstring for the conditions).

  Returns:
    True on an x86-64 CPU backend with a checked jaxlib, not opted out, once the probe passed.
  """
  if os.environ.get(OPT_OUT_ENV, "1") == "0":
    return False
  if platform.machine().lower() not in ("x86_64", "amd64"):
    return False
  if not xla_cpu.jaxlib_version_in(_CHECKED_JAXLIB):
    return False
  return _probe()
