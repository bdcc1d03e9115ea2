"""Host allocator settings for XLA:CPU: keep freed large buffers mapped instead of unmapping them.

XLA:CPU allocates every executable's temporary buffer on each execution, and Eigen allocates its
convolution packing buffers on each convolution, through `posix_memalign`/`malloc`. For a float
ResNet-20 training step at batch 128 that is a 300 MB temporary buffer and a dozen 38-76 MB
packing buffers per step. glibc serves requests this large with a fresh `mmap` and gives them
back with `munmap` on free: a worker thread's arena always does so for requests beyond its
64 MB heaps, whatever `M_MMAP_THRESHOLD` says, and the main arena does so above its 32 MB
threshold cap. Every step then page-faults all that memory in again. Measured on the 2-core
development machine (`strace`, `getrusage`): 73,000 minor page faults per float ResNet-20 step;
with the settings below, none. `benchmarks/train_step.py`, one process each way, jaxcompress
420-428 -> 492-499 img/s (+15-18%); PyTorch in the same process changed by under 2%.

The settings (`mallopt`, process-wide; the same as the GLIBC_TUNABLES `glibc.malloc.arena_max`,
`mmap_max` and `trim_threshold`):
  * M_ARENA_MAX = 1: threads share the main arena, whose large requests obey M_MMAP_MAX;
  * M_MMAP_MAX = 0: no request is served by its own mmap, all come from the heap;
  * M_TRIM_THRESHOLD = 1 GiB: free memory at the top of the heap goes back to the system only
    beyond 1 GiB, so a step's buffers are reused by the next step.
The cost: the process keeps its peak heap mapped (up to 1 GiB of it free at the top), and freed
blocks below the top are reused but not returned to the system.

Opt-in, because sharing one arena slows compilation: XLA compiles on several threads, which
then contend for the one arena lock. Same machine, fresh processes, init + compile of the first
training step: RBNN ResNet-20 15.6-15.7 -> 18.1-18.6 s (M_ARENA_MAX alone: 18.4-18.8 s), float
ResNet-20 11.1-12.0 -> 11.0-11.5 s. The digits quick configs, which compile several programs and
then run small steps, are slower end to end (two alternating runs each, empty compilation caches,
same accuracy: float 27.1-27.6 -> 33.2-33.5 s, RBNN 34.1-34.2 -> 46.1-46.2 s). A long CPU training
run gained (a CIFAR-10 epoch is 391 steps of ~0.3 s); tests and quick configs lose.

Superseded for training (tenth session): the engine's `config.steps_per_call` (default 8) runs
several steps per call, whose loop reuses one temporary buffer, so most faults are gone without
these settings (6,300 per step instead of 50,000), and with both the float ResNet-20 step was
slower than with `steps_per_call` alone: 0.779 / 0.793x PyTorch against 0.947 / 0.993x
(`benchmarks/train_step.py [--host-malloc]`, separate runs). In the same runs one call per
step was slower with them too (0.762 / 0.758x against 0.793 / 0.821x), unlike the seventh and
ninth sessions' measurements. Kept as an opt-in; not recommended.
So they are set only when asked for, before JAX starts its backend:
  * `JAXCOMPRESS_HOST_MALLOC=1` in the environment: `import jaxcompress` calls `apply()`;
  * or call `apply()` yourself before the first JAX computation.
`apply()` does nothing (and returns False) unless:
  * the C library is glibc (musl and macOS allocators behave differently);
  * JAX will run on the CPU: JAX_PLATFORMS is unset and no accelerator plugin (CUDA, ROCm, TPU)
    is installed, or JAX_PLATFORMS names "cpu" first. Accelerator processes keep glibc's
    defaults: there host memory mostly holds data, which should go back when freed;
  * no JAX backend has started yet: M_ARENA_MAX only reaches threads that have not allocated,
    and XLA's thread pools start with the backend.
Results are bit-identical either way: only where buffers live changes.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import os
import platform
import pkgutil

from jaxcompress.ops import xla_cpu

OPT_IN_ENV = "JAXCOMPRESS_HOST_MALLOC"
# mallopt parameters, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
TRIM_THRESHOLD_BYTES = 1 << 30
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))

_applied = False


def _accelerator_plugin_installed() -> bool:
  """Whether JAX could find a non-CPU backend (how jax's xla_bridge discovers plugins)."""
  if importlib.util.find_spec("libtpu") is not None:
    return True
  if importlib.metadata.entry_points(group="jax_plugins"):
    return True
  spec = importlib.util.find_spec("jax_plugins")
  if spec is not None and spec.submodule_search_locations:
    return any(True for _ in pkgutil.iter_modules(spec.submodule_search_locations))
  return False


def runs_on_cpu() -> bool:
  """Whether JAX in this process will use its CPU backend by default (see module docstring)."""
  requested = os.environ.get("JAX_PLATFORMS", "").strip()
  if requested:
    return requested.split(",")[0].strip().lower() == "cpu"
  return not _accelerator_plugin_installed()


def _glibc() -> ctypes.CDLL | None:
  if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    return None
  name = ctypes.util.find_library("c")
  if name is None:
    return None
  libc = ctypes.CDLL(name)
  return libc if hasattr(libc, "mallopt") else None


def apply() -> bool:
  """Sets `SETTINGS` with glibc's `mallopt` when they can help (see module docstring).

  Returns:
    True if this call (or an earlier one) set them.
  """
  global _applied
  if _applied:
    return True
  if not runs_on_cpu() or xla_cpu.backends_initialized():
    return False
  libc = _glibc()
  if libc is None:
    return False
  libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  libc.mallopt.restype = ctypes.c_int
  # mallopt returns 1 on success; a refused setting leaves glibc's default for that one only.
  _applied = all([libc.mallopt(param, value) == 1 for param, value in SETTINGS])
  return _applied


def apply_if_requested() -> bool:
  """Calls `apply()` when `JAXCOMPRESS_HOST_MALLOC=1` is set (what `import jaxcompress` does).

  Returns:
    True if the settings are in effect.
  """
  return os.environ.get(OPT_IN_ENV, "0") == "1" and apply()


def applied() -> bool:
  """Whether `apply` set the allocator settings in this process."""
  return _applied
