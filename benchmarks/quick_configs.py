"""Wall time of whole quick configs with the library's CPU conv path vs plain XLA convolutions.

The CPU-speed issue asks that "the test suite and the quick configs get faster accordingly":
this script answers the second half by running each quick config end to end (fresh process,
fresh workdir, compilation included, exactly what a user waits for) once with
`JAXCOMPRESS_CONV_IMPL=auto` (the library's default: XLA forward and input gradient, matmul
weight gradient, see `jaxcompress/ops/conv.py`) and once with `JAXCOMPRESS_CONV_IMPL=lax`
(every convolution left to XLA:CPU, i.e. "before"). Runs alternate (auto, lax, auto, lax, ...)
so machine load hits both alike; the last lines print `ratio <lax/auto>` per config (> 1 means the
library's path is faster) from the best and the median repetition.

Usage:
  python benchmarks/quick_configs.py [--reps 2] [--configs configs/baseline/digits_resnet20.py ...]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIGS = ("configs/baseline/digits_resnet20.py", "configs/rbnn/digits_resnet20.py")


def run_once(config: str, impl: str) -> float:
  """Runs one config in a fresh process and returns its wall time in seconds.

  Args:
    config: config path (relative to the repository root), optionally with `:arg`.
    impl: value of `JAXCOMPRESS_CONV_IMPL` for the run ("auto" or "lax").

  Returns:
    Seconds from process start to exit (install-free: the package must be importable).
  """
  env = dict(os.environ, JAXCOMPRESS_CONV_IMPL=impl)
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "launch.main", f"--config={config}",
                           f"--workdir={workdir}"], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=False)
    elapsed = time.perf_counter() - start
  if proc.returncode != 0:
    raise SystemExit(f"{config} ({impl}) failed:\n{proc.stderr[-2000:]}")
  print(f"  {config} [{impl}] {elapsed:.1f} s  {proc.stdout.strip().splitlines()[-1]}",
        flush=True)
  return elapsed


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--reps", type=int, default=2)
  parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
  args = parser.parse_args()
  times: dict[tuple[str, str], list[float]] = {}
  for _ in range(args.reps):
    for config in args.configs:
      for impl in ("auto", "lax"):
        times.setdefault((config, impl), []).append(run_once(config, impl))
  print("\n| config | jaxcompress conv (auto) best / median s | XLA conv (lax) best / median s |")
  print("|---|---|---|")
  for config in args.configs:
    a, l = times[(config, "auto")], times[(config, "lax")]
    print(f"| {config} | {min(a):.1f} / {statistics.median(a):.1f} | "
          f"{min(l):.1f} / {statistics.median(l):.1f} |")
  for config in args.configs:
    a, l = times[(config, "auto")], times[(config, "lax")]
    print(f"ratio <lax/auto> {config}: best {min(l) / min(a):.2f} "
          f"median {statistics.median(l) / statistics.median(a):.2f}")


if __name__ == "__main__":
  main()
