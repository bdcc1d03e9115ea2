"""Where a NAS search's start-up time goes: tracing, lowering and XLA compile of each jitted step.

On an H100/H200 with XLA's defaults the BNAS digits search (`configs/bnas/digits_search.py`: 3 cells x 9 edges x
8 binary ops, each op behind an `nn.cond` so that abandoned ops are skipped) printed no training
row within 200 s, while on CPU the whole search takes under 5 minutes. This script times every
phase of the engine's jitted functions separately, in the engine's order (`method.init`, then
`on_epoch_start` of the first architecture epoch, `train_step`, `eval_step`), for one config:

* trace  : Python tracing to a jaxpr (`jax.jit(f).trace(...)`);
* lower  : jaxpr -> StableHLO (`.lower()`);
* compile: XLA (`.compile()`), the backend's whole pipeline (on a GPU, conv autotuning included);
* run    : the first call of the compiled executable (blocking);
then the steady-state `train_step` time (best and median of `--steps` further steps).

It also prints the size of each optimised module: HLO instructions, convolutions (native or
cuDNN custom calls) and conditionals. No persistent compilation cache is used (every compile is
real). By default it compiles as the engine does (`config.compiler_options` on the step programs,
threefry as one kernel on a GPU: `jaxcompress.train.compile_options`); `--xla-defaults` drops both.
Run it once per option set in separate processes to compare.

Usage:
  python benchmarks/search_compile.py [--config bnas|bnas_quick|pc_darts|abandit] [--xla-defaults]
      [--compiler-option NAME VALUE ...] [--steps 5] [--skip eval]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import sys
import time
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import init_compile  # noqa: E402  (benchmarks/, on the path as the script's folder)
import jax  # noqa: E402  (after the path setup)

from jaxcompress import methods  # noqa: E402
from jaxcompress.train import compile_options, one_shot  # noqa: E402

CONFIGS = {"bnas": ("configs.bnas.digits_search", None),
           "bnas_quick": ("configs.bnas.digits_search", "quick"),
           "pc_darts": ("configs.pc_darts.digits_search", None),
           "abandit": ("configs.abandit_nas.digits_search", None)}


def module_size(compiled: Any) -> str:
  """Instruction, convolution and conditional counts of an optimised HLO module's text."""
  try:
    text = compiled.as_text()
  except Exception as e:  # noqa: BLE001  (some backends cannot print their executables)
    return f"(no HLO text: {type(e).__name__})"
  instructions = sum(1 for line in text.splitlines() if " = " in line)
  convs = len(re.findall(r" convolution\(|__cudnn\$conv", text))
  conds = len(re.findall(r" conditional\(", text))
  return f"{instructions} HLO instructions, {convs} convolutions, {conds} conditionals"


def timed_phases(label: str, jitted: Any, *args: Any) -> Any:
  """Traces, lowers, compiles and runs `jitted(*args)`, printing seconds per phase."""
  times: dict[str, float] = {}
  t0 = time.perf_counter()
  traced = jitted.trace(*args)
  times["trace"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  lowered = traced.lower()
  times["lower"] = time.perf_counter() - t0
  print(f"{label:15s} trace {times['trace']:6.1f} s  lower {times['lower']:6.1f} s  compiling...",
        flush=True)
  t0 = time.perf_counter()
  compiled = lowered.compile()
  times["compile"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  out = jax.block_until_ready(compiled(*args))
  times["run"] = time.perf_counter() - t0
  cells = "  ".join(f"{k} {v:6.1f} s" for k, v in times.items())
  print(f"{label:15s} {cells}  total {sum(times.values()):6.1f} s; {module_size(compiled)}",
        flush=True)
  return out


def _option_value(text: str) -> bool | int | str:
  """A command-line option value as XLA expects it: true/false as bool, digits as int."""
  if text.lower() in ("true", "false"):
    return text.lower() == "true"
  return int(text) if text.lstrip("-").isdigit() else text


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="bnas", choices=list(CONFIGS))
  parser.add_argument("--steps", type=int, default=5, help="steady-state steps timed after")
  parser.add_argument("--xla-defaults", action="store_true",
                      help="drop the engine's choices (config.compiler_options, the GPU threefry "
                           "kernel): XLA's defaults, as before they existed")
  parser.add_argument("--compiler-option", nargs=2, action="append", default=[],
                      metavar=("NAME", "VALUE"),
                      help="extra XLA option for the step programs, e.g. xla_gpu_autotune_level 0")
  parser.add_argument("--skip", nargs="*", default=[], choices=["eval"])
  args = parser.parse_args()
  jax.config.update("jax_enable_compilation_cache", False)
  scope = (contextlib.nullcontext() if args.xla_defaults
           else compile_options.gpu_threefry_kernel())
  with scope:
    run(args)


def run(args: argparse.Namespace) -> None:
  """Builds the config's method and times its jitted functions in the engine's order."""
  start = time.perf_counter()
  module_name, arg = CONFIGS[args.config]
  cfg = __import__(module_name, fromlist=["get_config"]).get_config(arg)
  method, batch = init_compile.method_and_batch(cfg)
  options = {} if args.xla_defaults else compile_options.step_compiler_options(cfg)
  options.update({name: _option_value(value) for name, value in args.compiler_option})
  print(f"jax {jax.__version__}, {jax.devices()[0].device_kind} ({jax.default_backend()}); "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; {compile_options.THREEFRY_FLAG}="
        f"{getattr(jax.config, compile_options.THREEFRY_FLAG)}; step compiler_options {options}; "
        f"config {args.config}", flush=True)
  init: Callable[..., Any] = one_shot.jit_once(method.init)
  state = timed_phases("init", init, jax.random.key(cfg.seed), batch)
  epoch = cfg.nas.get("arch_start_epoch", 0) if "nas" in cfg else 0
  if type(method).on_epoch_start is not methods.Method.on_epoch_start:
    state = timed_phases("on_epoch_start",
                         jax.jit(method.on_epoch_start, compiler_options=options), state, epoch)
  train_step = jax.jit(method.train_step, donate_argnums=0, compiler_options=options)
  state, _ = timed_phases("train_step", train_step, state, batch)
  step_times = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    state, metrics = train_step(state, batch)
    jax.block_until_ready(metrics)
    step_times.append(time.perf_counter() - t0)
  if step_times:
    print(f"train_step      steady: best {min(step_times) * 1e3:.1f} ms, median "
          f"{statistics.median(step_times) * 1e3:.1f} ms over {args.steps} steps", flush=True)
  if "eval" not in args.skip:
    eval_batch = {"image": batch["image"], "label": batch["label"],
                  "mask": jax.numpy.ones(batch["label"].shape, jax.numpy.float32)}
    timed_phases("eval_step", jax.jit(method.eval_step, compiler_options=options), state,
                 eval_batch)
  print(f"whole {time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
  main()
