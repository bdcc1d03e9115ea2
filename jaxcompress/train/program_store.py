"""Exported programs on disk, so that a restart with a warm compilation cache skips tracing.

JAX's persistent compilation cache keys a compiled program on its lowered module, so even when
every executable is on disk a restart first traces and lowers each program again to find it:
for the PC-DARTS CIFAR-10 search step that is most of a warm start (BENCHMARKS.md, "Time to first
step"). This store keeps each program's exported form (`jax.export`: the StableHLO module and its
argument and result types) under a key made of everything its trace depends on, and a restart
with the same key deserialises the module, lowers only the call into it, and the persistent cache
serves the compiled executable. The first run compiles through the same exported call, so both
runs ask the cache for the same key. For a one-shot program (the engine's initial state) the
store also keeps the outputs, keyed on the arguments' values too (`store_result`): reading them
is faster than loading and running the program, and they are the program's own bits.

The key holds (`StoredProgram`): the program's name and the caller's `key_parts` (the engine's:
the config, the method's class, its epoch and step counts), a digest of jaxcompress's own source
files, the versions of jax, jaxlib, flax, optax, chex, numpy and ml_dtypes, the JAX
configuration values, XLA_FLAGS, the devices, the arguments' tree structure, shapes, dtypes and
shardings, the donated arguments and the compiler options. Anything else a trace could read
(files a method reads while it is being built, other packages' source) is not in it: the
engine uses the store only when `config.cacheable_programs` is True and a persistent
compilation cache is configured (`for_config`), and a program the store cannot export (a oneDNN
convolution, a custom call of another package) is jitted as usual. What a trace leaves on
Python objects (a method's `init` keeps its optimizers on `self`) is restored by tracing the
loaded program abstractly in the background (`replay_trace`).
Entries are written whole (a temporary file renamed into place), read with `pickle` (the store
lives beside the compilation cache, in the user's cache directory) and evicted beyond
`MAX_ENTRIES`, least recently used first.
"""
from __future__ import annotations

import functools
import glob
import hashlib
import importlib.metadata
import json
import logging
import os
import pickle
import tempfile
import threading
from typing import Any, Callable, Mapping, Sequence

import jax
import jaxlib
import numpy as np

from jaxcompress.ops import (
  binary_conv,
  depthwise_conv,
  int8_conv,
  native_build,
  native_conv,
  native_conv3d,
)
from jaxcompress.train import compile_options

_log = logging.getLogger(__name__)

STORE_SUBDIR = "jaxcompress-programs"  # inside the compilation cache (its eviction skips it)
MAX_ENTRIES = 64
_FORMAT = 1
_SUFFIX = ".program"
_RESULT_SUFFIX = ".result"
RESULT_MAX_BYTES = 256 << 20  # larger results are not kept
# jaxcompress's own XLA FFI kernels: allowed in stored programs (registered again on loading).
NATIVE_TARGETS = (binary_conv.FFI_TARGET, depthwise_conv.FORWARD_TARGET,
                  depthwise_conv.WEIGHT_GRAD_TARGET, int8_conv.FFI_TARGET,
                  native_conv.FFI_TARGET, native_conv3d.FFI_TARGET)


def for_config(config: Mapping[str, Any]) -> str | None:
  """The store's directory for a run of `config`, or None when the run does not use it.

  Args:
    config: an experiment config; the store is used when `config.cacheable_programs` is True
      and JAX's persistent compilation cache has a directory.

  Returns:
    `<compilation cache>/jaxcompress-programs`, or None.
  """
  cache = jax.config.jax_compilation_cache_dir
  if not compile_options.cacheable(config) or not cache:
    return None
  return os.path.join(cache, STORE_SUBDIR)


def run_key(config: Any, method: Any, **counts: int) -> dict[str, Any]:
  """What identifies a run's programs beside their arguments: the config's values as stable
  JSON, the method's class and the run's counts (e.g. steps per epoch)."""
  if hasattr(config, "to_json_best_effort"):
    values = config.to_json_best_effort(sort_keys=True)
  else:
    values = json.dumps(config, sort_keys=True, default=repr)
  kind = type(method)
  return {"config": values, "method": f"{kind.__module__}.{kind.__qualname__}", **counts}


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
  """sha256 over the paths and contents of jaxcompress's Python and native source files."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  digest = hashlib.sha256()
  for pattern in ("**/*.py", "**/*.cc", "**/*.h"):
    for path in sorted(glob.glob(os.path.join(root, pattern), recursive=True)):
      digest.update(os.path.relpath(path, root).encode())
      with open(path, "rb") as f:
        digest.update(f.read())
  return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def _package_versions() -> tuple[tuple[str, str], ...]:
  """Versions of the libraries whose code runs while a step or an init is traced."""
  versions = []
  for package in ("flax", "optax", "chex", "numpy", "ml_dtypes"):
    try:
      versions.append((package, importlib.metadata.version(package)))
    except importlib.metadata.PackageNotFoundError:
      versions.append((package, ""))
  return tuple(versions)


def _environment() -> dict[str, Any]:
  """What else a trace and its compilation depend on: versions, JAX's configuration, devices."""
  devices = jax.devices()
  return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "source": source_digest(),
          "packages": _package_versions(),
          "jax_config": repr(sorted(jax.config.values.items())),
          "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "devices": [jax.default_backend(), devices[0].device_kind, len(devices),
                      jax.process_count()]}


class _Traced:
  """What `jax.jit(...).trace(...)` offers the engine: output shapes, and lowering to compile."""

  def __init__(self, out_info: Any, compile_fn: Callable[[], Any]):
    self.out_info = out_info
    self._compile_fn = compile_fn

  def lower(self) -> _Traced:
    return self

  def compile(self) -> Any:
    return self._compile_fn()


class _Program:
  """One signature's exported program: its output trees, and its executable once compiled."""

  def __init__(self, key: str, entry: Mapping[str, Any], compile_call: Callable[[Any], Any]):
    self.key = key
    self.exported = jax.export.deserialize(entry["exported"])
    self.out_tree = entry["out_tree"]
    self._compile_call = compile_call
    self._compiled: Callable[..., Any] | None = None
    self._lock = threading.Lock()

  def out_info(self, sharding: Any) -> Any:
    return self.out_tree.unflatten([
        jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=a.weak_type, sharding=sharding)
        for a in self.exported.out_avals])

  def compiled(self) -> Callable[..., Any]:
    with self._lock:  # the warm-up thread and the first call may ask at once
      if self._compiled is None:
        self._compiled = self._compile_call(self.exported)
      return self._compiled


class StoredProgram:
  """`jax.jit(fn, ...)` whose exported form is kept in the store (module docstring).

  Offers what the engine uses of a jitted function: calling it, and `trace(*args)` with
  `.out_info` and `.lower().compile()` (the warm-up compiles ahead through it). Each signature
  (argument tree, shapes and dtypes) is exported or loaded once per process, and compiled on its
  first call or `compile()`. A program the store cannot hold is jitted as usual.

  A function may set Python attributes while it is traced (a method's `init` keeps its
  optimizer on `self`, which other programs read later). With `replay_trace=True` a program
  loaded from the store is still traced abstractly (`jax.eval_shape`) for those effects, in a
  background thread that `settle()` joins (as does every trace the store makes).

  Args:
    fn: the function (positional arguments only).
    directory: the store's directory (`for_config`).
    name: the program's name in the key (e.g. "train_step").
    key_parts: what else identifies `fn` (e.g. the config; JSON-serialisable).
    in_shardings: one sharding per positional argument (for all of its leaves), or None.
    out_sharding: the sharding of every output leaf, or None.
    donate_argnums: positional arguments whose buffers the program may reuse.
    compiler_options: XLA options of the compile.
    replay_trace: trace `fn` abstractly when its program comes from the store (above).
    store_result: also keep the outputs, keyed on the program and the arguments' values, and
      return them on a later call with the same key instead of running the program: for a
      one-shot program (the initial state) whose loading and running cost more than reading
      its result.
  """

  def __init__(self, fn: Callable[..., Any], *, directory: str, name: str,
               key_parts: Mapping[str, Any], in_shardings: Sequence[Any] | None = None,
               out_sharding: Any = None, donate_argnums: Sequence[int] = (),
               compiler_options: Mapping[str, Any] | None = None, replay_trace: bool = False,
               store_result: bool = False):
    self._fn = fn
    self._directory = directory
    self._name = name
    self._key_parts = dict(key_parts)
    self._in_shardings = None if in_shardings is None else tuple(in_shardings)
    self._out_sharding = out_sharding
    self._donate = tuple(donate_argnums)
    self._options = dict(compiler_options or {})
    self._replay_trace = replay_trace
    self._store_result = store_result
    self._programs: dict[Any, _Program | None] = {}
    self._lock = threading.Lock()
    self._fallback: Callable[..., Any] | None = None
    self.loaded = 0  # signatures served from the store (the rest were exported or jitted)

  def __call__(self, *args: Any) -> Any:
    program = self._program(args)
    if program is None:
      return self._jitted()(*args)
    leaves = jax.tree.leaves(args)
    # Results are kept for single-process arrays only (their values are read to key them).
    if not self._store_result or not all(getattr(x, "is_fully_addressable", True)
                                         for x in leaves):
      return program.out_tree.unflatten(program.compiled()(*leaves))
    path = os.path.join(self._directory, f"{program.key}-{_values_digest(leaves)}{_RESULT_SUFFIX}")
    outputs = _read_result(path, self._out_sharding)
    if outputs is None:
      outputs = program.compiled()(*leaves)
      if not any(a.weak_type for a in program.exported.out_avals):  # kept as loaded: exact types
        _write(path, {"format": _FORMAT, "outputs": [_to_host(x) for x in outputs]},
               self._directory)
    return program.out_tree.unflatten(outputs)

  def trace(self, *args: Any) -> Any:
    """The program for `args` (arrays or `jax.ShapeDtypeStruct`s): `.out_info` without
    compiling, `.lower().compile()` to compile."""
    program = self._program(args)
    if program is None:
      return self._jitted().trace(*args)
    return _Traced(program.out_info(self._out_sharding), program.compiled)

  def _jitted(self) -> Callable[..., Any]:
    """The plain jitted function, for programs the store cannot hold."""
    settle()  # its trace may read what a replayed trace sets
    if self._fallback is None:
      self._fallback = jax.jit(self._fn, in_shardings=self._in_shardings,
                               out_shardings=self._out_sharding, donate_argnums=self._donate,
                               compiler_options=self._options or None)
    return self._fallback

  def _program(self, args: tuple[Any, ...]) -> _Program | None:
    leaves, in_tree = jax.tree.flatten(args)
    avals = [_aval(x) for x in leaves]
    signature = (in_tree, tuple((a.shape, str(a.dtype), a.weak_type) for a in avals))
    with self._lock:
      if signature not in self._programs:
        self._programs[signature] = self._load_or_export(args, in_tree, avals)
      return self._programs[signature]

  def _flat_layout(self, args: tuple[Any, ...]) -> tuple[Any, tuple[int, ...]]:
    """Per-leaf input shardings and donated leaf positions of `args`."""
    shardings, donated, position = [], [], 0
    for index, arg in enumerate(args):
      count = len(jax.tree.leaves(arg))
      if self._in_shardings is not None:
        shardings += [self._in_shardings[index]] * count
      if index in self._donate:
        donated += range(position, position + count)
      position += count
    return (tuple(shardings) if self._in_shardings is not None else None), tuple(donated)

  def _key(self, in_tree: Any, avals: Sequence[Any]) -> str:
    parts = {"format": _FORMAT, "name": self._name, "key_parts": self._key_parts,
             "environment": _environment(), "in_tree": str(in_tree),
             "avals": [[list(a.shape), str(a.dtype), a.weak_type] for a in avals],
             "in_shardings": repr(self._in_shardings), "out_sharding": repr(self._out_sharding),
             "donate": self._donate, "options": sorted(self._options.items())}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=repr).encode()).hexdigest()

  def _load_or_export(self, args: tuple[Any, ...], in_tree: Any,
                      avals: Sequence[Any]) -> _Program | None:
    key = self._key(in_tree, avals)
    path = os.path.join(self._directory, key + _SUFFIX)
    flat_shardings, donated = self._flat_layout(args)

    def compile_call(exported: Any) -> Callable[..., Any]:
      # The first run compiles through this call too: both ask the cache for the same program.
      def call_exported(*leaves: Any) -> Any:
        return exported.call(*leaves)

      call_exported.__name__ = self._name  # "jit_<name>" in profiles and cache entries
      call = jax.jit(call_exported, in_shardings=flat_shardings, out_shardings=self._out_sharding,
                     donate_argnums=donated, compiler_options=self._options or None)
      return call.trace(*avals).lower().compile()

    try:
      entry = _read(path)
      loaded = entry is not None and _register_kernels(entry["kernels"])
      if not loaded:
        settle()  # the trace may read what a replayed trace sets
        entry = self._export(in_tree, avals, flat_shardings, donated)
        _write(path, entry, self._directory)
      program = _Program(key, entry, compile_call)
    except Exception as e:  # noqa: BLE001  (export refuses a custom call, a foreign entry, ...)
      _log.info("jaxcompress: %s is not stored (%s: %s); it is jitted as usual.", self._name,
                type(e).__name__, e)
      return None
    if loaded:
      self.loaded += 1
      if self._replay_trace:
        _replay(self._fn, in_tree.unflatten(avals))
    return program

  def _export(self, in_tree: Any, avals: Sequence[Any], flat_shardings: Any,
              donated: tuple[int, ...]) -> dict[str, Any]:
    out_trees = []

    def flat_fn(*leaves: Any) -> list[Any]:
      out_leaves, out_tree = jax.tree.flatten(self._fn(*in_tree.unflatten(leaves)))
      out_trees.append(out_tree)
      return out_leaves

    flat_fn.__name__ = self._name  # the module's name in profiles and cache entries
    jitted = jax.jit(flat_fn, in_shardings=flat_shardings, out_shardings=self._out_sharding,
                     donate_argnums=donated)
    checks = [jax.export.DisabledSafetyCheck.custom_call(t) for t in NATIVE_TARGETS]
    exported = jax.export.export(jitted, disabled_checks=checks)(*avals)
    return {"format": _FORMAT, "exported": exported.serialize(), "out_tree": out_trees[-1],
            "kernels": native_build.registered_targets()}


# Abstract traces of loaded programs (`replay_trace`) and the first error of each.
_REPLAYS: list[tuple[threading.Thread, list[BaseException]]] = []


def _replay(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
  """Starts `jax.eval_shape(fn, *args)` in a daemon thread that `settle` joins."""
  errors: list[BaseException] = []

  def run() -> None:
    try:
      jax.eval_shape(fn, *args)
    except Exception as e:  # noqa: BLE001  (re-raised by `settle`)
      errors.append(e)

  thread = threading.Thread(target=run, name="jaxcompress-replay", daemon=True)
  _REPLAYS.append((thread, errors))
  thread.start()


def settle() -> None:
  """Waits for the abstract traces of programs loaded with `replay_trace`.

  Raises:
    The error a replayed trace raised (the function no longer traces as when it was stored).
  """
  for thread, errors in list(_REPLAYS):
    thread.join()
    if errors:
      raise errors[0]


def _aval(x: Any) -> jax.ShapeDtypeStruct:
  """The abstract value of an argument leaf: an array, a `ShapeDtypeStruct` or a Python scalar."""
  if not isinstance(x, jax.ShapeDtypeStruct):
    x = jax.typeof(x)
  return jax.ShapeDtypeStruct(x.shape, x.dtype, weak_type=getattr(x, "weak_type", False))


def _is_key(x: Any) -> bool:
  return jax.numpy.issubdtype(x.dtype, jax.dtypes.prng_key)


def _values_digest(leaves: Sequence[Any]) -> str:
  """sha256 over the arguments' values (PRNG keys: their key data and implementation)."""
  digest = hashlib.sha256()
  for x in leaves:
    if _is_key(x):
      digest.update(str(jax.random.key_impl(x)).encode())
      x = jax.random.key_data(x)
    value = np.asarray(x)
    digest.update(f"{value.dtype}{value.shape}".encode())
    digest.update(value.tobytes())
  return digest.hexdigest()


def _to_host(x: jax.Array) -> tuple[str, np.ndarray]:
  """An output as (PRNG implementation or "", host values)."""
  if _is_key(x):
    return str(jax.random.key_impl(x)), np.asarray(jax.random.key_data(x))
  return "", np.asarray(x)


def _read_result(path: str, sharding: Any) -> list[jax.Array] | None:
  """Stored outputs placed with `sharding`, or None when absent or not ours."""
  entry = _read(path)
  if entry is None:
    return None
  outputs = []
  for impl, value in entry["outputs"]:
    x = jax.random.wrap_key_data(value, impl=impl) if impl else value
    outputs.append(jax.device_put(x, sharding))
  return outputs


def _read(path: str) -> dict[str, Any] | None:
  """The entry at `path` (its access time refreshed), or None if absent or not ours."""
  try:
    with open(path, "rb") as f:
      entry = pickle.load(f)
    os.utime(path)
  except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
    return None
  if not isinstance(entry, dict) or entry.get("format") != _FORMAT:
    return None
  return entry


def _write(path: str, entry: Mapping[str, Any], directory: str) -> None:
  """Writes `entry` whole (temporary file, then rename) and evicts the oldest entries."""
  partial = None
  sizes = [v.nbytes for _, v in entry.get("outputs", ())]
  if sum(sizes) > RESULT_MAX_BYTES:
    return
  try:
    os.makedirs(directory, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=directory, suffix=".partial")
    with os.fdopen(fd, "wb") as f:
      pickle.dump(dict(entry), f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(partial, path)
    partial = None
    entries = sorted(glob.glob(os.path.join(directory, "*" + _SUFFIX))
                     + glob.glob(os.path.join(directory, "*" + _RESULT_SUFFIX)),
                     key=os.path.getmtime)
    for old in entries[:-MAX_ENTRIES]:
      os.remove(old)
  except OSError as e:  # a read-only cache: the run goes on, the next one exports again
    _log.info("jaxcompress: could not store a program in %s (%s).", directory, e)
  finally:
    if partial is not None and os.path.exists(partial):
      os.remove(partial)


def _register_kernels(kernels: Mapping[str, Sequence[str]]) -> bool:
  """Registers the FFI kernels a stored program may call; False if one cannot be loaded here."""
  return all(native_build.load_ffi(name, symbol, target) is not None
             for target, (name, symbol) in kernels.items())
