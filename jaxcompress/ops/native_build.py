"""Builds jaxcompress's C++ XLA FFI kernels for the host CPU on first use, and caches them.

The kernels (`jaxcompress/ops/native/*.cc`) are plain C++17 against the XLA FFI headers that
jaxlib ships (`jax.ffi.include_dir()`). They are compiled by the system C++ compiler with
`-O3 -march=native`, so the machine code fits the CPU it runs on (AVX-512 here, AVX2 on an
older laptop) without a wheel per instruction set. The shared object lands in
`$XDG_CACHE_HOME/jaxcompress/native-<cpu digest>/` (or `~/.cache/...`), named by a digest of the
source, the compiler's version, the flags and the jaxlib version, so a changed source, compiler
or jaxlib builds again and an unchanged one loads in milliseconds (a build takes ~3 s).

The object is written under a temporary name and renamed into place: concurrent processes
(pytest workers, the processes of one multi-host run) may each build, and none ever loads a
half-written file. Without a compiler, with a failing build or with JAXCOMPRESS_NATIVE=0 the
callers fall back to XLA's own kernels; `build_error` says why.

Set CXX to choose the compiler, and JAXCOMPRESS_NATIVE_CXXFLAGS to append flags (e.g.
`-march=haswell` for a build that also runs on older hosts; a later -march wins over the default).
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from typing import Callable, Iterable

import jax
import jaxlib

OPT_OUT_ENV = "JAXCOMPRESS_NATIVE"
EXTRA_FLAGS_ENV = "JAXCOMPRESS_NATIVE_CXXFLAGS"
SOURCE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "native")
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w")
_BUILD_TIMEOUT_S = 300

_log = logging.getLogger(__name__)
_errors: dict[str, str] = {}


def cpu_signature() -> str:
  """A short digest of this host's CPU model and feature flags (its instruction set)."""
  text = platform.machine()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      # One processor's model name and flags: the instruction set the code was built for.
      text += "".join(sorted({line for line in f if line.startswith(("model name", "flags"))}))
  except OSError:
    text += platform.processor()
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def host_cache_dir(kind: str) -> str:
  """`$XDG_CACHE_HOME/jaxcompress/<kind>-<cpu digest>` (or under ~/.cache).

  For artifacts holding machine code for this CPU (native kernels, XLA executables): a home
  directory shared by a cluster may be read from hosts with other instruction sets.
  """
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(root, "jaxcompress", f"{kind}-{cpu_signature()}")


def cache_dir() -> str:
  """Where `build` puts shared objects: `host_cache_dir("native")`."""
  return host_cache_dir("native")


def _compiler() -> str | None:
  for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
    if name and shutil.which(name):
      return shutil.which(name)
  return None


def _compiler_version(cxx: str) -> str:
  try:
    return subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30,
                          check=False).stdout
  except (OSError, subprocess.SubprocessError):
    return ""


def build_error(name: str) -> str | None:
  """Why `build(name)` returned None in this process (None if it did not fail)."""
  return _errors.get(name)


@functools.lru_cache(maxsize=None)
def build(name: str) -> str | None:
  """Compiles `native/<name>.cc` for this CPU (or finds it already built) and returns its path.

  Args:
    name: the source's stem, e.g. "conv_weight_grad".

  Returns:
    Path of the shared object, or None when native kernels are off or cannot be built here
    (`build_error(name)` holds the reason; it is also logged once).
  """
  if os.environ.get(OPT_OUT_ENV, "1") == "0":
    _errors[name] = f"{OPT_OUT_ENV}=0"
    return None
  source = os.path.join(SOURCE_DIR, f"{name}.cc")
  cxx = _compiler()
  if cxx is None:
    _errors[name] = "no C++ compiler found (install g++ or clang++, or set CXX)"
    _log.warning("jaxcompress: %s; using XLA's kernels for %s.", _errors[name], name)
    return None
  with open(source, "rb") as f:
    code = f.read()
  for header in sorted(os.listdir(SOURCE_DIR)):  # shared headers the sources include
    if header.endswith(".h"):
      with open(os.path.join(SOURCE_DIR, header), "rb") as f:
        code += b"\0" + f.read()
  include = jax.ffi.include_dir()
  flags = list(FLAGS) + os.environ.get(EXTRA_FLAGS_ENV, "").split()
  key = hashlib.sha256(b"\0".join([
      code, _compiler_version(cxx).encode(), " ".join(flags).encode(),
      jaxlib.__version__.encode()])).hexdigest()[:16]
  for directory in (cache_dir(), os.path.join(tempfile.gettempdir(), "jaxcompress-native")):
    target = os.path.join(directory, f"{name}-{key}.so")
    if os.path.exists(target):
      return target
    try:
      os.makedirs(directory, exist_ok=True)
      fd, partial = tempfile.mkstemp(suffix=".so.partial", dir=directory)
      os.close(fd)
    except OSError:
      continue  # read-only home etc.: try the temporary directory
    try:
      result = subprocess.run([cxx, *flags, f"-I{include}", source, "-o", partial],
                              capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S,
                              check=False)
      if result.returncode != 0:
        _errors[name] = f"{os.path.basename(cxx)} failed on {source}: {result.stderr[-2000:]}"
        _log.warning("jaxcompress: %s; using XLA's kernels.", _errors[name])
        return None
      os.replace(partial, target)  # atomic: readers see the whole file or none
      return target
    except (OSError, subprocess.SubprocessError) as e:
      _errors[name] = f"building {source} failed: {e}"
      _log.warning("jaxcompress: %s; using XLA's kernels.", _errors[name])
      return None
    finally:
      if os.path.exists(partial):
        os.remove(partial)
  _errors[name] = f"no writable directory for the build (tried {cache_dir()} and the temp dir)"
  return None


# The loaded kernels' libraries, kept referenced so that their code stays mapped.
_LIBRARIES: dict[str, ctypes.CDLL] = {}
# FFI target -> (source stem, handler symbol) of every kernel registered in this process.
_TARGETS: dict[str, tuple[str, str]] = {}


@functools.lru_cache(maxsize=None)
def load_ffi(name: str, symbol: str, target: str) -> ctypes.CDLL | None:
  """Builds `native/<name>.cc`, loads it and registers its handler `symbol` as FFI `target`.

  Args:
    name: the source's stem (as `build`).
    symbol: the exported XLA FFI handler.
    target: the custom-call target name the kernel's lowering uses (CPU platform).

  Returns:
    The loaded library (for the kernel's other exported functions), or None when it cannot be
    built or loaded here (a stale or foreign file under the cache name included).
  """
  path = build(name)
  if path is None:
    return None
  try:
    library = ctypes.cdll.LoadLibrary(path)
    handler = getattr(library, symbol)
  except (OSError, AttributeError) as e:
    _errors[name] = f"loading {path} failed: {e}"
    return None
  jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(handler), platform="cpu")
  _LIBRARIES[name] = library
  _TARGETS[target] = (name, symbol)
  return library


def registered_targets() -> dict[str, tuple[str, str]]:
  """The FFI targets `load_ffi` registered in this process, as target -> (name, symbol)."""
  return dict(_TARGETS)


def passes_probe(checks: Iterable[Callable[[], bool]]) -> bool:
  """Runs a kernel's probe checks eagerly on the CPU device.

  Args:
    checks: callables that run the kernel on one case and compare it with a reference.

  Returns:
    True if every check passed; False at the first mismatch or on any error (a target the
    runtime rejects, an FFI version mismatch: the kernel is not usable with this jaxlib).
  """
  try:
    with jax.ensure_compile_time_eval(), jax.default_device(jax.devices("cpu")[0]):
      return all(check() for check in checks)
  except Exception:  # pylint: disable=broad-except
    return False
