"""What `config.cacheable_programs` costs per step: the default and the cacheable step, side by side.

`config.cacheable_programs = True` makes the engine trace its steps with convolutions off
oneDNN's custom call (`jaxcompress.train.compile_options.step_tracing`), so that XLA:CPU can
serialise the compiled step and the persistent compilation cache can serve it to a restart; it
also compiles them without YNNPACK's fusions (`compile_options.cacheable_compiler_options`),
which XLA:CPU is slow to load. This script compiles both forms of one workload's training step
in one process (the engine's one-device jit: replicated state, donated, the engine's compiler
options), checks which of the two compiled programs can be serialised
(`jax.experimental.serialize_executable.serialize`, what the persistent cache does) and how long
a serialised one takes to load again (`deserialize_and_load`, what a restart's cache hit does),
then alternates the two steps on copies of one initial state and prints each one's median step
time and the ratio cacheable / default (above 1: the cacheable step is slower).

Workloads are those of `benchmarks/startup.py` (synthetic batches of the real shapes):
  * pc_darts: the PC-DARTS CIFAR-10 search step (8 cells, C = 16, batch 64 + 64).
  * abandit: the ABanditNAS CIFAR-10 search step (6 cells x 10 edges x 9 ops, PGD-7, 128 + 128).

Usage:
  python benchmarks/cacheable_steps.py [--workloads pc_darts,abandit] [--pairs 4]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import startup  # noqa: E402  (the workloads' configs and batches)
from jax.experimental import serialize_executable  # noqa: E402

from jaxcompress import distributed, methods  # noqa: E402
from jaxcompress.train import compile_options, one_shot  # noqa: E402

WORKLOADS = {"pc_darts": lambda: startup._pc_darts(64),  # pylint: disable=protected-access
             "abandit": lambda: startup._abandit(128)}  # pylint: disable=protected-access


def _load_seconds(compiled) -> float | None:
  """Seconds to load the serialised program again, or None if XLA cannot serialise it (the
  persistent cache stores only those)."""
  try:
    serialized, in_tree, out_tree = serialize_executable.serialize(compiled)
  except Exception:  # noqa: BLE001  (XLA raises plain runtime errors, std::bad_alloc among them)
    return None
  start = time.time()
  serialize_executable.deserialize_and_load(serialized, in_tree, out_tree,
                                            backend=jax.devices()[0].client)
  return time.time() - start


def compare(name: str, pairs: int) -> None:
  """Compiles the default and the cacheable step of `name`, then times them interleaved."""
  cfg, batch = WORKLOADS[name]()
  method = methods.get(cfg.method)(cfg, steps_per_epoch=100, total_steps=1000)
  mesh = distributed.make_mesh(jax.devices()[:1])
  replicated = distributed.replicated(mesh)
  batch = distributed.global_batch(batch, mesh)
  state = one_shot.jit_once(method.init, out_shardings=replicated)(jax.random.key(cfg.seed), batch)
  steps, states = {}, {}
  for label, cacheable in (("default", False), ("cacheable", True)):
    cfg.cacheable_programs = cacheable
    fn = jax.jit(compile_options.step_tracing(cfg)(method.train_step),
                 in_shardings=(replicated, distributed.batch_sharding(mesh)),
                 out_shardings=(replicated, replicated), donate_argnums=0,
                 compiler_options=compile_options.step_compiler_options(cfg) or None)
    t = time.time()
    steps[label] = fn.trace(state, batch).lower().compile()
    compile_seconds = time.time() - t
    load = _load_seconds(steps[label])
    print(f"{name} {label}: compiled in {compile_seconds:.1f} s, storable in the persistent "
          f"cache: {load is not None}"
          + ("" if load is None else f", loads again in {load:.1f} s"), flush=True)
    states[label] = jax.tree.map(lambda x: x.copy(), state)
  for label in steps:  # one step each before timing
    states[label], metrics = steps[label](states[label], batch)
    jax.block_until_ready(metrics)
  times = {label: [] for label in steps}
  for _ in range(pairs):
    for label in steps:
      t = time.time()
      states[label], metrics = steps[label](states[label], batch)
      jax.block_until_ready(metrics)
      times[label].append(time.time() - t)
  median = {label: statistics.median(v) for label, v in times.items()}
  print(f"{name}: median step default {median['default']:.3f} s, cacheable "
        f"{median['cacheable']:.3f} s ({pairs} interleaved pairs); cacheable / default = "
        f"{median['cacheable'] / median['default']:.3f}", flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workloads", default=",".join(WORKLOADS))
  parser.add_argument("--pairs", type=int, default=4, help="interleaved timed step pairs")
  args = parser.parse_args()
  print(f"jax {jax.__version__}, {os.cpu_count()} CPUs", flush=True)
  for name in args.workloads.split(","):
    compare(name, args.pairs)


if __name__ == "__main__":
  main()
