"""Search cost per epoch of BNAS vs PC-DARTS on the same data and devices, and compiles per run.

BNAS (Chen et al., arXiv 1911.10862) claims a search about 40 % faster than PC-DARTS: each
reduction step abandons one op per edge, and abandoned ops are no longer computed. This script
measures that on the digits-sized search networks of `configs/pc_darts/digits_search.py` and
`configs/bnas/digits_search.py` (3 cells, C = 8, 3 nodes, K = 4, batch 64 of 8x8x1 with a
validation half-batch), one device, in ONE interleaved run (variants alternate A B C A B C ... so
that load from other processes hits all alike):

* PC-DARTS: the jitted bilevel train step (architecture + weight step), 8 ops on every edge.
* BNAS: the same step on XNOR ops plus the sampled-sub-network evaluation, timed at every alive-op
  count of its digits schedule (epoch 0: 8 ops, no sampling; epochs 1..7: 8, 7, ..., 2 ops with
  sampling), with `skip_dead=True` (abandoned ops skipped by `nn.cond`: the op-space reduction
  speed-up) and, for reference, `skip_dead=False` (abandoned ops computed and weighted by 0).
  BNAS cost per epoch = the mean over its 8 epochs of steps_per_epoch x step time.
The architecture step is on for both (steady state). The ratio printed is
BNAS epoch cost / PC-DARTS epoch cost from the best repetition of each step (and the median).

Compiles per run: the quick digits searches (`:quick`) run through the engine (`loop.run`) with a
`jax.monitoring` listener counting XLA backend compilations per function name: every step
function (train_step, eval_step, on_epoch_start, on_epoch_end) compiles once per run, whatever
ops are abandoned.

Usage:
  python benchmarks/nas_search_cost.py [--reps 3] [--steps 3] [--no-compile-counts]
"""
from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from configs.bnas import digits_search as bnas_digits
from configs.pc_darts import digits_search as pc_darts_digits
from jaxcompress import methods
from jaxcompress.train import loop

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class CompileCounter:
  """Counts XLA backend compilations by function name while active (jax.monitoring)."""

  def __init__(self):
    self.by_name: collections.Counter[str] = collections.Counter()

  def _listener(self, event: str, duration: float, **kwargs: Any) -> None:
    del duration
    if event == BACKEND_COMPILE_EVENT:
      self.by_name[str(kwargs.get("fun_name", "?"))] += 1

  def __enter__(self) -> "CompileCounter":
    jax.monitoring.register_event_duration_secs_listener(self._listener)
    return self

  def __exit__(self, *exc: Any) -> None:
    jax.monitoring.unregister_event_duration_listener(self._listener)


def _batch(n: int = 64) -> dict[str, jax.Array]:
  k = jax.random.split(jax.random.key(0), 4)
  return {"image": jax.random.normal(k[0], (n, 8, 8, 1)),
          "label": jax.random.randint(k[1], (n,), 0, 10),
          "val_image": jax.random.normal(k[2], (n, 8, 8, 1)),
          "val_label": jax.random.randint(k[3], (n,), 0, 10)}


def _method(config: Any, steps_per_epoch: int) -> Any:
  return methods.get(config.method)(config, steps_per_epoch=steps_per_epoch,
                                    total_steps=steps_per_epoch * config.num_epochs)


def _alive(num_alive: int, shape: tuple[int, ...]) -> np.ndarray:
  alive = np.zeros(shape, bool)
  alive[..., -num_alive:] = True  # keep the last ops (convs) alive: the expensive case
  return alive


def build_variants(steps_per_epoch: int) -> tuple[dict[str, Callable[[], None]],
                                                 dict[str, list[str]]]:
  """Step closures keyed by label, and per method the labels of its epochs (epoch costs)."""
  batch = _batch()
  runs: dict[str, Callable[[], None]] = {}
  epochs: dict[str, list[str]] = {}

  pc_cfg = pc_darts_digits.get_config()
  pc = _method(pc_cfg, steps_per_epoch)
  pc_state = jax.jit(pc.init)(jax.random.key(0), batch)
  pc_state = pc.on_epoch_start(pc_state, pc_cfg.nas.arch_start_epoch)  # architecture step on
  pc_step = jax.jit(pc.train_step)

  def pc_run(state=pc_state):
    jax.block_until_ready(pc_step(state, batch)[1])

  runs["pc_darts 8 ops"] = pc_run
  epochs["PC-DARTS"] = ["pc_darts 8 ops"] * pc_cfg.num_epochs

  for skip in (True, False):
    cfg = bnas_digits.get_config()
    cfg.nas.skip_dead = skip
    bn = _method(cfg, steps_per_epoch)
    state0 = jax.jit(bn.init)(jax.random.key(0), batch)
    state0 = bn.on_epoch_start(state0, 1)  # arch on, sampling phase active
    step = jax.jit(bn.train_step)
    shape = state0.extra["bandit"].alive.shape
    labels = []
    num_ops = shape[-1]
    for epoch in range(cfg.num_epochs):
      n_alive = num_ops - max(0, epoch - cfg.nas.reduce_start)
      sampling = epoch >= cfg.nas.reduce_start
      label = f"bnas skip_dead={skip} {n_alive} ops{' +sampling' if sampling else ''}"
      labels.append(label)
      if label in runs:
        continue
      bandit = state0.extra["bandit"].replace(alive=jnp.asarray(_alive(n_alive, shape)))
      extra = {**state0.extra, "bandit": bandit, "sampling_on": jnp.asarray(sampling),
               "small": jnp.asarray(_alive(n_alive, shape))}
      state = state0.replace(extra=extra)

      def run(state=state, step=step):
        jax.block_until_ready(step(state, batch)[1])

      runs[label] = run
    epochs[f"BNAS skip_dead={skip}"] = labels
  return runs, epochs


def time_interleaved(runs: dict[str, Callable[[], None]], reps: int,
                     steps: int) -> dict[str, list[float]]:
  """Seconds per step of every variant, `reps` interleaved repetitions of `steps` steps."""
  for run in runs.values():  # compile + warm up
    run()
  times: dict[str, list[float]] = {k: [] for k in runs}
  for _ in range(reps):
    for label, run in runs.items():
      t0 = time.perf_counter()
      for _ in range(steps):
        run()
      times[label].append((time.perf_counter() - t0) / steps)
  return times


def compile_counts() -> dict[str, collections.Counter[str]]:
  """XLA compilations per function during the quick digits searches run by the engine."""
  out = {}
  for name, module in (("PC-DARTS", pc_darts_digits), ("BNAS", bnas_digits)):
    cfg = module.get_config("quick")
    cfg.num_devices = 1
    cfg.progress = "none"
    cfg.async_checkpoint = False
    cfg.nas.write_png = False
    with CompileCounter() as counter, tempfile.TemporaryDirectory() as workdir:
      loop.run(cfg, workdir)
    out[f"{name} ({cfg.num_epochs} epochs, {len(cfg.nas.primitives)} ops)"] = counter.by_name
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--reps", type=int, default=3)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--no-compile-counts", action="store_true")
  parser.add_argument("--only-compile-counts", action="store_true")
  args = parser.parse_args()
  if args.only_compile_counts:
    print_compile_counts()
    return
  steps_per_epoch = 718 // 64  # digits train half / batch 64, as the digits search configs
  print(f"device: {jax.devices()[0].device_kind} x1; digits search nets; "
        f"{steps_per_epoch} steps per epoch")
  runs, epochs = build_variants(steps_per_epoch)
  times = time_interleaved(runs, args.reps, args.steps)
  print(f"\n{'variant':44s} {'best ms/step':>12s} {'median':>9s}")
  for label, ts in times.items():
    print(f"{label:44s} {1e3 * min(ts):12.1f} {1e3 * statistics.median(ts):9.1f}")
  cost = {}
  for name, labels in epochs.items():
    best = np.mean([min(times[l]) for l in labels]) * steps_per_epoch
    med = np.mean([statistics.median(times[l]) for l in labels]) * steps_per_epoch
    total = sum(min(times[l]) for l in labels) * steps_per_epoch
    cost[name] = (best, med)
    print(f"{name:28s} epoch cost {best:7.2f} s (median {med:7.2f} s); "
          f"{len(labels)} epochs = {total:7.1f} s")
  pc = cost["PC-DARTS"]
  for name in ("BNAS skip_dead=True", "BNAS skip_dead=False"):
    print(f"ratio {name} / PC-DARTS per epoch: {cost[name][0] / pc[0]:.3f} "
          f"(median {cost[name][1] / pc[1]:.3f})")
  if not args.no_compile_counts:
    print_compile_counts()


def print_compile_counts() -> None:
  """Prints the XLA compilations per step function of the quick digits searches."""
  print("\nXLA compilations per run (quick digits searches through loop.run):")
  for run, counter in compile_counts().items():
    # jit names its computations after the function, e.g. "jit(train_step)"
    steps = {k: sum(n for name, n in counter.items() if f"({k})" in name)
             for k in ("init", "train_step", "eval_step", "on_epoch_start", "on_epoch_end")}
    print(f"  {run}: {steps}; all compilations: {sum(counter.values())} "
          f"{dict(counter)}")


if __name__ == "__main__":
  main()
