"""Whole runs with the host pipeline vs `data.on_device` (the jitted `lax.scan` epoch).

Each config runs end to end in a fresh process (compilation, evaluation and checkpoints
included), alternating host / on-device so that machine load hits both alike. Printed per run:
the wall time and the steady training rate, measured between the first and the last train log
row of `metrics.jsonl` (so compilation is excluded from the rate but evaluation and
checkpoints inside that window are not). The last lines are `ratio <on_device/host>` of the
best steady rates and of the best wall times (> 1: on-device is faster).

Usage:
  python benchmarks/on_device.py [--reps 2] [--configs configs/baseline/digits_resnet20.py ...]
      [--set num_epochs=10 ...]   (extra --config.<key>=<value> overrides for every run)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIGS = ("configs/baseline/digits_resnet20.py", "configs/rbnn/digits_resnet20.py")


def steady_rate(metrics_path: str) -> float:
  """Steps/s between the first and last train rows (each row's cumulative rate gives its time)."""
  rows = [json.loads(l) for l in open(metrics_path, encoding="utf-8")]
  train = [r for r in rows if r["split"] == "train" and r.get("steps_per_second")]
  if len(train) < 2:
    return float("nan")
  times = [r["step"] / r["steps_per_second"] for r in train]
  return (train[-1]["step"] - train[0]["step"]) / max(times[-1] - times[0], 1e-9)


def run_once(config: str, on_device: bool, overrides: list[str]) -> tuple[float, float, str]:
  """One fresh-process run; returns (wall seconds, steady steps/s, final eval line)."""
  workdir = tempfile.mkdtemp(prefix="on_device_bench_")
  cmd = [sys.executable, "-m", "launch.main", f"--config={config}", f"--workdir={workdir}",
         f"--config.data.on_device={on_device}", "--config.progress=none"]
  cmd += [f"--config.{o}" for o in overrides]
  t0 = time.perf_counter()
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
  wall = time.perf_counter() - t0
  if out.returncode:
    raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
  final = [l for l in out.stdout.splitlines() + out.stderr.splitlines() if "Final eval" in l]
  rate = steady_rate(os.path.join(workdir, "metrics.jsonl"))
  shutil.rmtree(workdir, ignore_errors=True)
  return wall, rate, final[-1] if final else ""


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--reps", type=int, default=2)
  parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
  parser.add_argument("--set", nargs="*", default=[], help="extra config overrides key=value")
  args = parser.parse_args()
  import jax  # pylint: disable=g-import-not-at-top  (only to print the device)
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}")
  for config in args.configs:
    results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for _ in range(args.reps):
      for on_device in (False, True):
        wall, rate, final = run_once(config, on_device, args.set)
        results[on_device].append((wall, rate))
        name = "on_device" if on_device else "host"
        print(f"{config} {name:9s} wall {wall:7.1f} s  steady {rate:8.1f} steps/s  {final}",
              flush=True)
    best = {k: (min(w for w, _ in v), max(r for _, r in v)) for k, v in results.items()}
    print(f"{config} ratio <on_device/host> steady rate {best[True][1] / best[False][1]:.3f}, "
          f"wall {best[False][0] / best[True][0]:.3f}", flush=True)


if __name__ == "__main__":
  main()
