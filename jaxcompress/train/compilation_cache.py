"""JAX's persistent compilation cache for jaxcompress entry points (launch, tests).

On a 2-core CPU, compiling a run's jitted train/eval steps takes a large share of a quick
config's wall time: `configs/baseline/digits_resnet20.py` took 45.9 s with an empty cache and
26.4 s when run again with the compiled executables on disk (same machine, back to back). The
cache keys on the computation, the compile options and the jax/jaxlib versions, so any change
to the model, the config's shapes or the library simply misses and recompiles.

XLA:CPU executables contain machine code for the host's instruction set, and a home directory
shared by a cluster may be read from hosts with other CPUs; the default directory therefore
carries a digest of the CPU model and feature flags.

Programs with oneDNN convolutions (one CPU device, float32; `jaxcompress.ops.onednn_conv`) are
not stored: XLA cannot serialise that custom call, so they compile again in each process. They
also compile faster (the quick digits ResNet-20: 11.5 s with an empty cache, 9.9 s run again,
against 12.4 s / 8.8 s with XLA's convolutions, which are cached). Programs with the native
weight-gradient kernel (`jaxcompress.ops.native_conv`, an XLA FFI call) are stored and load
again: the quick RBNN digits run took 39.4-40.0 s with an empty cache, 26.3-27.2 s with a warm
one (BENCHMARKS.md).
"""
from __future__ import annotations

import os
import warnings

import jax

from jaxcompress.ops import native_build

DISABLE = "none"


def default_dir() -> str:
  """`$XDG_CACHE_HOME/jaxcompress/xla-<cpu digest>` (or under ~/.cache)."""
  return native_build.host_cache_dir("xla")


def enable(cache_dir: str | None = None, min_compile_secs: float = 1.0,
           max_size_bytes: int = 2 << 30) -> str | None:
  """Turns on JAX's persistent compilation cache unless the user configured one already.

  Args:
    cache_dir: directory for compiled executables; None for `default_dir()`, "none" to leave
      the cache off. An explicit JAX_COMPILATION_CACHE_DIR / `jax_compilation_cache_dir`
      always wins.
    min_compile_secs: only computations that took at least this long to compile are stored.
    max_size_bytes: the least recently used entries are evicted beyond this size.

  Returns:
    The directory in use, or None when the cache stays off.
  """
  current = jax.config.jax_compilation_cache_dir
  if current:
    return current
  if cache_dir == DISABLE:
    return None
  cache_dir = os.path.expanduser(cache_dir or default_dir())
  try:
    os.makedirs(cache_dir, exist_ok=True)
  except OSError:
    return None  # read-only home etc.: run without the cache rather than fail
  # XLA cannot serialise an executable that holds oneDNN's convolution custom call
  # (`jaxcompress.ops.onednn_conv`, one-device CPU programs): JAX then warns once per program
  # and compiles it again next run. That is expected here, not a fault to report.
  warnings.filterwarnings(
      "ignore", message=r"Error writing persistent compilation cache entry .*std::bad_alloc")
  jax.config.update("jax_compilation_cache_dir", cache_dir)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_secs)
  jax.config.update("jax_compilation_cache_max_size", max_size_bytes)
  return cache_dir
