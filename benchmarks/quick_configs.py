"""Wall time of whole quick configs: this checkout vs an earlier one, cold and warm cache.

A faster training step only matters to users if the quick configs get faster too. This script
measures that by running each quick config end to end (fresh process, fresh workdir,
compilation included: exactly what a user waits for) in three variants:

  * `baseline`: the source tree given by `--baseline-src` (e.g. a `git worktree` of the commit
    before a change) on PYTHONPATH, with its own defaults;
  * `now-cold`: this checkout with an empty persistent compilation cache (a user's first run);
  * `now-warm`: this checkout again, its compilation cache filled by an earlier run of the same
    config (a rerun, a resumed run, the next stage of a pipeline with the same shapes).

Runs alternate (baseline, now-cold, now-warm, baseline, ...) so machine load hits all alike;
the last lines print `ratio <baseline/variant>` per config from the best and the median
repetition (> 1 means this checkout is faster). Without `--baseline-src` the baseline is this
checkout with `JAXCOMPRESS_CONV_IMPL=lax JAXCOMPRESS_XLA_CPU_FLAGS=0` and no cache (XLA's
own convolution paths, YNNPACK convolutions).

Usage:
  git worktree add /tmp/before <commit>
  python benchmarks/quick_configs.py --baseline-src /tmp/before [--reps 2] [--configs ...]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIGS = ("configs/baseline/digits_resnet20.py", "configs/rbnn/digits_resnet20.py")
VARIANTS = ("baseline", "now-cold", "now-warm")


def run_once(config: str, variant: str, baseline_src: str | None, warm_cache: str) -> float:
  """Runs one config in a fresh process and returns its wall time in seconds.

  Args:
    config: config path (relative to the repository root), optionally with `:arg`.
    variant: one of `VARIANTS`.
    baseline_src: source tree of the baseline, or None (see module docstring).
    warm_cache: compilation-cache directory that `now-warm` reuses across its runs.

  Returns:
    Seconds from process start to exit.
  """
  env = dict(os.environ)
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  cwd, cache_flag = ROOT, []
  with tempfile.TemporaryDirectory() as tmp:
    if variant == "baseline":
      if baseline_src:
        cwd = baseline_src
        env["PYTHONPATH"] = os.pathsep.join([baseline_src, env.get("PYTHONPATH", "")])
        # An empty cache, like now-cold: the launcher's default cache would be warm from the
        # baseline's earlier repetitions and make it look faster than a first run.
        cache_flag = [f"--compilation_cache_dir={os.path.join(tmp, 'cache')}"]
      else:
        env.update(JAXCOMPRESS_CONV_IMPL="lax", JAXCOMPRESS_XLA_CPU_FLAGS="0")
        cache_flag = ["--compilation_cache_dir=none"]
    else:
      cache = warm_cache if variant == "now-warm" else os.path.join(tmp, "cache")
      cache_flag = [f"--compilation_cache_dir={cache}"]
    # Paths resolved against this checkout so the baseline runs the same config files.
    cfg = config if os.path.isabs(config) else os.path.join(ROOT, config)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "launch.main", f"--config={cfg}",
                           f"--workdir={os.path.join(tmp, 'run')}", *cache_flag],
                          cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
  if proc.returncode != 0:
    raise SystemExit(f"{config} ({variant}) failed:\n{proc.stderr[-2000:]}")
  print(f"  {config} [{variant}] {elapsed:.1f} s  {proc.stdout.strip().splitlines()[-1]}",
        flush=True)
  return elapsed


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--reps", type=int, default=2)
  parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
  parser.add_argument("--baseline-src", default=None,
                      help="source tree of the baseline (e.g. a git worktree of an old commit)")
  args = parser.parse_args()
  warm_root = tempfile.mkdtemp(prefix="jaxcompress-warm-cache-")
  times: dict[tuple[str, str], list[float]] = {}
  try:
    for config in args.configs:  # fill the warm cache (not timed)
      run_once(config, "now-warm", args.baseline_src, os.path.join(warm_root, "c"))
    for _ in range(args.reps):
      for config in args.configs:
        for variant in VARIANTS:
          times.setdefault((config, variant), []).append(
              run_once(config, variant, args.baseline_src, os.path.join(warm_root, "c")))
  finally:
    shutil.rmtree(warm_root, ignore_errors=True)
  print("\n| config | " + " | ".join(f"{v} best / median s" for v in VARIANTS) + " |")
  print("|---|" + "---|" * len(VARIANTS))
  for config in args.configs:
    cells = [f"{min(times[(config, v)]):.1f} / {statistics.median(times[(config, v)]):.1f}"
             for v in VARIANTS]
    print(f"| {config} | " + " | ".join(cells) + " |")
  for config in args.configs:
    base = times[(config, "baseline")]
    for v in VARIANTS[1:]:
      t = times[(config, v)]
      print(f"ratio <baseline/{v}> {config}: best {min(base) / min(t):.2f} "
            f"median {statistics.median(base) / statistics.median(t):.2f}")


if __name__ == "__main__":
  main()
