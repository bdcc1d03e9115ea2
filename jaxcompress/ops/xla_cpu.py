"""The one XLA:CPU flag jaxcompress sets before JAX starts its CPU backend: Eigen convolutions.

jaxlib 0.10 hands every convolution to YNNPACK by default ("ynn_fusion" in a profile). On the
2-core Xeon (AVX-512) development machine XLA's own (Eigen) convolution kernels are faster for
most of the shapes a CIFAR/SR network uses, above all for the input and weight gradients, which
YNNPACK runs at 25-65 GFLOP/s. Measured (ms, batch 128, 3x3, best of 7, same machine, two
processes that differ only in this flag):

  =================  ====================  =====================
  layer              YNNPACK fwd/dx/dw     Eigen fwd/dx/dw
  =================  ====================  =====================
  32x32, 16->16      4.5 / 4.1 / 21.7      4.1 / 5.8 / 12.5
  16x16, 32->32      3.9 / 3.9 / 17.6      2.5 / 2.6 / 6.2
  8x8, 64->64        4.0 / 4.1 / 9.0       2.3 / 2.4 / 3.6
  =================  ====================  =====================

Whole ResNet-20 training step, same conv plan, one interleaved run (`benchmarks/conv_plans.py`):
320.7 -> 366.3 img/s (1.14x). YNNPACK's reductions stay on (turning them off too cost 10%). `jaxcompress.ops.conv` picks its own
formulations (matmul weight gradients, col2im input gradients) for the shapes where Eigen is
still slow, and reads `eigen_convolutions()` to know which regime it tunes for.

The flag goes into the XLA_FLAGS environment variable when `jaxcompress` is imported, which
takes effect only if JAX has not initialised a backend yet (XLA reads the variable once per
process). It is skipped when:
  * JAXCOMPRESS_XLA_CPU_FLAGS=0 is set (opt out),
  * XLA_FLAGS already names `xla_cpu_experimental_ynn_fusion_type` (the user decides),
  * a backend is already initialised (then nothing can change; results are the same, only
    the speed differs), or
  * the installed jaxlib is not one whose flag set was checked (XLA aborts on unknown flags).
The flag only changes which CPU kernel library runs a convolution: values agree to float
rounding, and GPU/TPU compiles ignore it.
"""
from __future__ import annotations

import os

import jaxlib

YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
OPT_OUT_ENV = "JAXCOMPRESS_XLA_CPU_FLAGS"
# jaxlib (major, minor) releases whose XLA defines the flag (checked in their XLA_FLAGS parser).
_CHECKED_JAXLIB = ((0, 10),)


def jaxlib_version_in(checked: tuple[tuple[int, int], ...]) -> bool:
  """Whether the installed jaxlib's (major, minor) version is one of `checked`.

  Args:
    checked: (major, minor) pairs a jaxlib-internal contract was verified on.

  Returns:
    False for other versions and for unparsable version strings.
  """
  try:
    major, minor = (int(p) for p in jaxlib.__version__.split(".")[:2])
  except ValueError:
    return False
  return (major, minor) in checked


def jaxlib_checked() -> bool:
  """Whether the installed jaxlib's XLA was checked to define the YNNPACK fusion option."""
  return jaxlib_version_in(_CHECKED_JAXLIB)


def backends_initialized() -> bool:
  """Whether JAX has started a backend in this process (after which XLA_FLAGS, and the
  allocator arenas of XLA's threads, are fixed). Unknown counts as started."""
  try:  # private, but the only way to know whether XLA_FLAGS can still take effect
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):
    return True  # unknown: assume too late rather than claim an effect we cannot check


def apply() -> bool:
  """Adds `YNN_FUSION_FLAG` to XLA_FLAGS when it can still take effect (see module docstring).

  Returns:
    True if the flag was added by this call.
  """
  flags = os.environ.get("XLA_FLAGS", "")
  if (os.environ.get(OPT_OUT_ENV, "1") == "0" or "xla_cpu_experimental_ynn_fusion_type" in flags
      or not jaxlib_checked() or backends_initialized()):
    return False
  os.environ["XLA_FLAGS"] = f"{flags} {YNN_FUSION_FLAG}".strip()
  return True


def eigen_convolutions() -> bool:
  """Whether XLA:CPU in this process runs convolutions with its own kernels, not YNNPACK.

  True when XLA_FLAGS removes YNNPACK's convolution fusion (set by `apply` or by the user);
  the conv layer tunes its CPU formulations to the answer.

  Returns:
    True for Eigen convolutions.
  """
  flags = os.environ.get("XLA_FLAGS", "")
  return "xla_cpu_experimental_ynn_fusion_type" in flags and "-individual_convolution" in flags
