"""Whole host-pipeline runs with one jitted call per step vs `config.steps_per_call` steps per call.

`benchmarks/train_step.py` times the training step alone, with one batch reused. Here the
launcher trains a float ResNet-20 end to end on CIFAR-shaped synthetic data (32x32x3, 10
classes, pad-4 crop + flip on the host, batch 128), so the host pipeline's work shares the cores
with the steps, as in a real CIFAR-10 run. Each run is a fresh process; runs alternate between
the two settings. Printed per run: wall time and the steady training rate between the first and
the last train log row (`on_device.steady_rate`: compilation excluded, evaluations inside the
window included). The last line is `ratio <steps_per_call N / 1>` of the best steady rates.

Usage:
  python benchmarks/steps_per_call.py [--reps 2] [--steps-per-call 8] [--set num_epochs=3 ...]
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import on_device  # noqa: E402  (run_once: one launcher run in a fresh process)

# CIFAR-10's shapes and augmentation on the offline synthetic source: 40 steps per epoch.
CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cifar_shaped_config.py")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--reps", type=int, default=2)
  parser.add_argument("--steps-per-call", type=int, default=8)
  parser.add_argument("--config", default=CONFIG)
  parser.add_argument("--set", nargs="*", default=[], help="extra config overrides key=value")
  args = parser.parse_args()
  settings = (1, args.steps_per_call)
  best = {k: 0.0 for k in settings}
  for _ in range(args.reps):
    for k in settings:
      wall, rate, final = on_device.run_once(args.config, False,
                                             [f"steps_per_call={k}"] + args.set)
      best[k] = max(best[k], rate)
      print(f"steps_per_call {k:2d}: wall {wall:6.1f} s  steady {rate:6.2f} steps/s  "
            f"({rate * 128:6.1f} img/s)  {final}", flush=True)
  print(f"ratio <steps_per_call {args.steps_per_call} / 1> steady rate "
        f"{best[args.steps_per_call] / best[1]:.3f}", flush=True)


if __name__ == "__main__":
  main()
