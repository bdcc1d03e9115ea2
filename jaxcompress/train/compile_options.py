"""XLA options of the engine's compiled programs: per-config compiler options, GPU PRNG lowering.

Two start-up costs on a GPU, measured on an H100 (`benchmarks/search_compile.py`,
BENCHMARKS.md "NAS search start-up on a GPU"):

* `method.init` of a NAS supernet draws ~300 parameter tensors. XLA:GPU expands every threefry
  draw into ~150 elementwise instructions, and its HLO passes on the 56k-instruction module took
  30.8 of the 40.6 s compile (BNAS 4-op search; 8 ops: 107 s). JAX can lower each threefry call
  to its CUDA kernel instead (`jax_threefry_gpu_kernel_lowering`): compile 2.5 s (8 ops: 5.1 s).
  `gpu_threefry_kernel()` turns that on for the engine's run.
* Conv autotuning of a search step's many small, distinct convolutions took ~40 s of the first
  train step and ~10 s of the first eval step; with `xla_gpu_autotune_level=0` the first step
  took 0.3 s and the steady step was no slower (20.0 vs 21.1 ms). Autotuning pays off for large
  convolutions trained for hours, so it stays on by default: a config turns it off with
  `config.compiler_options = {"xla_gpu_autotune_level": 0}` (the PC-DARTS and BNAS digits
  searches do). Options named for another backend are dropped (`step_compiler_options`).

On a CPU, programs holding oneDNN's convolution call cannot be stored in the persistent
compilation cache (XLA:CPU cannot serialise that call), so a rerun or a resumed run compiles its
steps again. `config.cacheable_programs = True` traces the engine's steps, hooks and evaluators
with convolutions off that call (`step_tracing`, `ops.conv.cacheable_programs`): they are
cached, at a cost in steady speed (BENCHMARKS.md "Time to first step"). Worth it for short
runs that restart often; long searches keep the default. Those programs also compile without
YNNPACK's fusions (`cacheable_compiler_options`): XLA:CPU rebuilds each fusion's YNNPACK graph
when it loads a stored executable, and the PC-DARTS search step holds about 1200 of them, whose
loading took longer than the rest of the executable. `train.program_store` then spares a
restart the tracing too.
"""
from __future__ import annotations

import contextlib
import functools
import os
from typing import Any, Callable, Iterator, Mapping

import jax

from jaxcompress.errors import ConfigError
from jaxcompress.ops import conv as conv_ops
from jaxcompress.ops import xla_cpu

THREEFRY_FLAG = "jax_threefry_gpu_kernel_lowering"
OptionValue = str | int | float | bool
# XLA debug options that only one backend knows start with these prefixes.
_BACKEND_PREFIXES = ("xla_cpu_", "xla_gpu_", "xla_tpu_")
# No YNNPACK fusion at all in cacheable CPU programs (an empty list of fusion types).
YNN_FUSION_OPTION = "xla_cpu_experimental_ynn_fusion_type"
CACHEABLE_CPU_OPTIONS = {YNN_FUSION_OPTION: ""}


def step_compiler_options(config: Mapping[str, Any]) -> dict[str, OptionValue]:
  """Validated `config.compiler_options`: XLA options for the engine's step programs.

  They apply to `train_step`, `eval_step`, the epoch hooks and the on-device training scan
  (not to the one-shot `init`, which `one_shot.jit_once` compiles with its own options).

  Options named for another backend (`xla_gpu_*` on a CPU, `xla_cpu_*` on a GPU, ...) are
  dropped: a config written for a GPU runs unchanged elsewhere, and CPU runs keep their
  compilation-cache keys. They are not validated either, since only their backend knows them.

  Args:
    config: an experiment config; `config.compiler_options` is optional (default: none).

  Returns:
    A plain dict from XLA debug-option name (e.g. "xla_gpu_autotune_level") to value, holding
    the options for the running backend and the backend-neutral ones.

  Raises:
    ConfigError: not a mapping of option names to scalars, or an option XLA does not know.
  """
  raw = config.get("compiler_options", None) or {}
  if hasattr(raw, "to_dict"):  # an ml_collections.ConfigDict (not a collections.abc.Mapping)
    raw = raw.to_dict()
  if not isinstance(raw, Mapping):
    raise ConfigError(f"config.compiler_options must map XLA option names to values, e.g. "
                      f"{{'xla_gpu_autotune_level': 0}}; got {type(raw).__name__} {raw!r}.")
  options = dict(raw)
  for name, value in options.items():
    if not isinstance(name, str) or not isinstance(value, OptionValue):
      raise ConfigError(f"config.compiler_options[{name!r}] = {value!r}: option names must be "
                        f"strings and values str, int, float or bool.")
  backend = _backend()
  options = {name: value for name, value in options.items()
             if not name.startswith(_BACKEND_PREFIXES) or name.startswith(f"xla_{backend}_")}
  if options:
    try:  # XLA rejects unknown names only at compile time: check now, before the real work
      jax.jit(lambda x: x + 1, compiler_options=options).lower(1.0).compile()
    except Exception as e:  # noqa: BLE001  (XLA raises a plain runtime error)
      raise ConfigError(f"config.compiler_options {options!r} is not accepted by XLA: {e}. Use "
                        f"XLA debug-option names (see xla/xla.proto DebugOptions), e.g. "
                        f"xla_gpu_autotune_level.") from e
  return {**cacheable_compiler_options(config), **options}


def cacheable(config: Mapping[str, Any]) -> bool:
  """`config.cacheable_programs` (default False), validated.

  Raises:
    ConfigError: it is not a bool.
  """
  value = config.get("cacheable_programs", False)
  if not isinstance(value, bool):
    raise ConfigError(f"config.cacheable_programs must be True or False (trace the steps with "
                      f"convolutions the persistent compilation cache can store), got "
                      f"{value!r}.")
  return value


def cacheable_compiler_options(config: Mapping[str, Any]) -> dict[str, OptionValue]:
  """XLA options of a cacheable run's programs (module docstring): `CACHEABLE_CPU_OPTIONS`.

  Only on a CPU backend of a jaxlib whose XLA was checked to read the option
  (`ops.xla_cpu`), and not when the user's XLA_FLAGS choose the YNNPACK fusions themselves.
  Options in `config.compiler_options` override them (`step_compiler_options`).

  Args:
    config: an experiment config.

  Returns:
    The options, or an empty dict.
  """
  if not cacheable(config) or _backend() != "cpu" or not xla_cpu.jaxlib_checked():
    return {}
  user_flags = os.environ.get("XLA_FLAGS", "").replace(xla_cpu.YNN_FUSION_FLAG, "")
  if YNN_FUSION_OPTION in user_flags:
    return {}
  return dict(CACHEABLE_CPU_OPTIONS)


def step_tracing(config: Mapping[str, Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
  """What the engine wraps each step function in before `jax.jit`, from the config.

  With `config.cacheable_programs = True` (default False) the wrapped function is traced inside
  `ops.conv.cacheable_programs()`, so its compiled program can be stored in the persistent
  compilation cache (module docstring); otherwise functions are returned as they are. The
  wrapper enters the block in the tracing thread itself, so a step compiled ahead in the warm-up
  thread (`train.warm_start`) gets the same program.

  Args:
    config: an experiment config; `config.cacheable_programs` is optional.

  Returns:
    A function from a step function to the function to jit.

  Raises:
    ConfigError: `config.cacheable_programs` is not a bool.
  """
  if not cacheable(config):
    return lambda fn: fn

  def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def traced(*args: Any, **kwargs: Any) -> Any:
      with conv_ops.cacheable_programs():
        return fn(*args, **kwargs)
    return traced
  return wrap


def _backend() -> str:
  """The running backend as XLA's option prefixes name it: cpu, gpu or tpu."""
  backend = jax.default_backend()
  return "gpu" if backend in ("cuda", "rocm") else backend


def _on_gpu() -> bool:
  return _backend() == "gpu"


@contextlib.contextmanager
def gpu_threefry_kernel() -> Iterator[None]:
  """Within the block, lowers threefry random draws to JAX's CUDA kernel on a GPU backend.

  The kernel is JAX's CUDA implementation of the same threefry2x32 function that XLA's expanded
  lowering computes, so the draws do not depend on the lowering (not compared bit for bit on a
  GPU here); the compiled module shrinks (module docstring) at the cost of a kernel launch per
  draw. Nothing changes on CPU/TPU, and a user's explicit choice wins: if the
  `JAX_THREEFRY_GPU_KERNEL_LOWERING` environment variable is set, the setting is left alone.
  The previous value is restored on exit.

  Yields:
    None.
  """
  if not _on_gpu() or THREEFRY_FLAG.upper() in os.environ:
    yield
    return
  previous = bool(getattr(jax.config, THREEFRY_FLAG))
  jax.config.update(THREEFRY_FLAG, True)
  try:
    yield
  finally:
    jax.config.update(THREEFRY_FLAG, previous)
