"""Compile time of `method.init` with XLA's default options vs `one_shot.jit_once`'s (CPU).

`jaxcompress.train.one_shot.jit_once` compiles the init program, which runs once, at LLVM
optimisation level 1. This script compiles each quick config's `method.init` alternately with
the default options and with `one_shot.ONE_SHOT_COMPILER_OPTIONS` (no persistent cache and a
fresh lowering each time, so every compile is real), then runs both executables and checks that
the drawn train states are bit-identical. Prints seconds (best / median) and
`ratio <default/level 1>` per config.

Usage:
  python benchmarks/init_compile.py [--reps 2] [--configs resnet20 rbnn pc_darts]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402  (after the path setup)
import numpy as np  # noqa: E402

import jaxcompress  # noqa: E402,F401  (sets the XLA:CPU flags before the backend starts)
from jaxcompress import methods  # noqa: E402
from jaxcompress.data import pipeline, sources  # noqa: E402
from jaxcompress.train import one_shot  # noqa: E402

CONFIGS = {"resnet20": "configs.baseline.digits_resnet20",
           "rbnn": "configs.rbnn.digits_resnet20",
           "pc_darts": "configs.pc_darts.digits_search"}


def init_and_args(name: str) -> tuple[Callable[..., Any], tuple[Any, ...]]:
  """`method.init` of a quick config and its arguments."""
  module = __import__(CONFIGS[name], fromlist=["get_config"])
  cfg = module.get_config("quick")
  method, batch = method_and_batch(cfg, num_epochs=2)
  return method.init, (jax.random.key(cfg.seed), batch)


def method_and_batch(cfg: Any, num_epochs: int | None = None) -> tuple[Any, Any]:
  """A config's method, built as the engine builds it, and one device batch of its data.

  Args:
    cfg: an experiment config (NAS configs split the train set into weight/architecture halves).
    num_epochs: epochs for the method's schedules (default: the config's).

  Returns:
    (method, batch): the batch as `method.init` and `method.train_step` take it.
  """
  src = sources.get(cfg.data.name, cfg.data.train_split)
  split = cfg.data.get("search_split", 0.0)
  train, val = src, None
  if split:
    train, val = sources.SubsetSource(src, 0.0, split), sources.SubsetSource(src, split, 1.0)
  spe = pipeline.steps_per_epoch(len(train), cfg.data.batch_size)
  epochs = cfg.num_epochs if num_epochs is None else num_epochs
  method = methods.get(cfg.method)(cfg, steps_per_epoch=spe, total_steps=epochs * spe)
  ds = pipeline.train_dataset(train, global_batch_size=cfg.data.batch_size, num_steps=1, seed=0,
                              options=pipeline.ImageOptions.from_config(cfg.data), val_source=val)
  return method, jax.device_put(ds[0])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--reps", type=int, default=2)
  parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
  args = parser.parse_args()
  options = {"default": {}, "level 1": one_shot.ONE_SHOT_COMPILER_OPTIONS}
  print(f"jax {jax.__version__}, {jax.default_backend()}; compile seconds best / median over "
        f"{args.reps} alternating repetitions")
  for name in args.configs:
    init, call_args = init_and_args(name)
    times = {label: [] for label in options}
    compiled = {}
    for _ in range(args.reps):
      for label, opts in options.items():
        # A fresh lowering each time: JAX reuses an executable compiled from the same module
        # object in-process, which would time a cache hit.
        lowered = jax.jit(lambda *a: init(*a)).lower(*call_args)
        t0 = time.perf_counter()
        compiled[label] = lowered.compile(compiler_options=opts)
        times[label].append(time.perf_counter() - t0)
    states = {label: jax.tree.leaves(jax.tree.map(np.asarray, c(*call_args)))
              for label, c in compiled.items()}
    identical = all(np.array_equal(a, b) for a, b in zip(states["default"], states["level 1"]))
    cells = "  ".join(f"{label} {min(ts):6.1f} / {statistics.median(ts):6.1f}"
                      for label, ts in times.items())
    print(f"{name:9s} {cells}  bit-identical: {identical}")
    print(f"{name:9s} ratio {min(times['default']) / min(times['level 1']):.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
  main()
