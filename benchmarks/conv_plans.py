"""Where the CPU training-step speed-up comes from: one ResNet-20 step under each conv regime.

Every variant is the `benchmarks/train_step.py` step (batch 128, 32x32x3) compiled with a
different choice, all timed interleaved in one process:

  * `previous default`: YNNPACK convolutions, the conv plan tuned for them (matmul weight
    gradient everywhere), flax's BatchNorm — the library before `jaxcompress/ops/xla_cpu.py`;
  * `eigen, previous plan`: XLA's Eigen convolutions with that same plan;
  * `eigen, all XLA convs`: Eigen convolutions and no matmul formulation at all;
  * `eigen, plan, nn.BatchNorm`: Eigen convolutions and today's per-shape plan;
  * `jaxcompress`: the default (Eigen convolutions, plan, `ops.BatchNorm`).

Usage:
  python benchmarks/conv_plans.py [--model resnet20|rbnn_resnet20] [--reps 8] [--steps 3]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import flax.linen as nn  # noqa: E402
import train_step  # noqa: E402  (this directory)

from jaxcompress.ops import conv as conv_ops  # noqa: E402
from jaxcompress.ops import xla_cpu  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="resnet20", choices=("resnet20", "rbnn_resnet20"))
  parser.add_argument("--reps", type=int, default=8)
  parser.add_argument("--steps", type=int, default=3)
  args = parser.parse_args()
  if not xla_cpu.eigen_convolutions():
    raise SystemExit("Run without JAXCOMPRESS_XLA_CPU_FLAGS=0: the Eigen variants need the flag.")
  layers = train_step.model_layers(args.model)
  flax_bn = layers.replace(norm=nn.BatchNorm)
  no_matmul = lambda *a, **k: conv_ops._Plan(False, False, False)  # pylint: disable=protected-access
  variants = [
      ("previous default", flax_bn, True, contextlib.nullcontext()),
      ("eigen, previous plan", flax_bn, False,
       mock.patch.object(xla_cpu, "eigen_convolutions", return_value=False)),
      ("eigen, all XLA convs", flax_bn, False, mock.patch.object(conv_ops, "_cpu_plan", no_matmul)),
      ("eigen, plan, nn.BatchNorm", flax_bn, False, contextlib.nullcontext()),
      ("jaxcompress", layers, False, contextlib.nullcontext()),
  ]
  runners = []
  for label, lay, ynn, patch in variants:
    with patch:  # the plan is chosen while make_jax_step traces and compiles
      runners.append(train_step.make_jax_step(lay, label, ynn_convs=ynn))
  times = train_step.time_interleaved(runners, args.reps, args.steps)
  print(f"{args.model} training step, batch {train_step.BATCH} ({args.reps} interleaved reps x "
        f"{args.steps} steps)")
  print(f"{'variant':28s} {'img/s best':>11s} {'img/s median':>13s}")
  base = min(times["previous default"])
  for label, ts in times.items():
    print(f"{label:28s} {train_step.BATCH / min(ts):11.1f} "
          f"{train_step.BATCH / statistics.median(ts):13.1f}   x{base / min(ts):.2f}")


if __name__ == "__main__":
  main()
