"""What three CPU step settings are worth, each alone and together, in one run.

Three changes to the CPU training step (see `jaxcompress/ops/conv.py`, `quant/rotation.py`):

  * `blocked dW`: XLA's weight-gradient convolution in a `fori_loop` over batch blocks
    (`conv._blocked_weight_grad`), a fusion barrier that stops XLA:CPU from recomputing the
    previous batch-norm/ReLU chain inside the gradient's batch-minor transposes;
  * `XLA dW at 16 ch`: the conv plan uses that blocked XLA weight gradient for 8-16 input
    channels too, instead of the separable-patch matmuls (`conv._weight_grad`);
  * `pad in conv`: binary convolutions hand their zero padding to the convolution instead of
    materialising `jnp.pad` of the binarised input (`rotation.pad_and_conv`).

The "before" variant patches all three back to the code before them; each other variant adds
one change or all. Every variant's step is compiled in this process and timed interleaved
(`train_step.time_interleaved`); the table prints img/s and the speed-up over "before". The last
line is `ratio <all / before>` of the best repetitions.

Usage:
  python benchmarks/step_fusions.py --model resnet20|rbnn_resnet20 [--reps 6] [--steps 3]
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
from typing import Any, Sequence

import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_step  # noqa: E402  (the benchmark's model, step and timing loop)

from jaxcompress.ops import conv as conv_ops  # noqa: E402
from jaxcompress.ops import padding as padding_lib  # noqa: E402
from jaxcompress.quant import rotation  # noqa: E402


def padded_copy_then_conv(xb, wb, strides, padding, precision=None):
  """`rotation.pad_and_conv` before the change: `jnp.pad`, then a VALID convolution."""
  nd = xb.ndim - 2
  st = rotation.as_tuple(strides, nd)
  pads = list(padding_lib.explicit_pads(padding, xb.shape[1:-1], wb.shape[:nd], st))
  xb = jnp.pad(xb, [(0, 0)] + pads + [(0, 0)])
  dtype = jnp.result_type(xb, wb)
  return conv_ops.conv_general_dilated(xb.astype(dtype), wb.astype(dtype), st, "VALID",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                       precision=precision)


_CURRENT_PLAN = conv_ops._cpu_plan  # pylint: disable=protected-access


def matmul_dw_at_16_channels(c_in: int, kshape: Sequence[int], strides: Sequence[int],
                             pads: Sequence[tuple[int, int]], eigen: bool) -> Any:
  """`conv._cpu_plan` before the change: matmul weight gradient for 8-16 input channels."""
  plan = _CURRENT_PLAN(c_in, kshape, strides, pads, eigen)
  if eigen and math.prod(kshape) > 1 and 8 <= c_in <= 16:
    return plan._replace(matmul_dw=True)
  return plan


UNBLOCKED = (conv_ops, "_blocked_weight_grad", conv_ops._canonical_weight_grad)  # pylint: disable=protected-access
OLD_PLAN = (conv_ops, "_cpu_plan", matmul_dw_at_16_channels)
OLD_PAD = (rotation, "pad_and_conv", padded_copy_then_conv)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="resnet20", choices=("resnet20", "rbnn_resnet20"))
  parser.add_argument("--reps", type=int, default=6, help="interleaved repetitions")
  parser.add_argument("--steps", type=int, default=3, help="training steps per repetition")
  args = parser.parse_args(argv)

  variants = {"before": (UNBLOCKED, OLD_PLAN, OLD_PAD),
              "+ blocked dW": (OLD_PLAN, OLD_PAD),
              "+ blocked dW, XLA dW at 16 ch": (OLD_PAD,),
              "all (now)": ()}
  if args.model == "rbnn_resnet20":
    variants["+ pad in conv only"] = (UNBLOCKED, OLD_PLAN)
  layers = train_step.model_layers(args.model)
  runners = train_step.make_patched_steps(layers, variants)
  times = train_step.time_interleaved(runners, args.reps, args.steps)

  print(f"{args.model} training step, batch {train_step.BATCH} "
        f"({args.reps} interleaved reps x {args.steps} steps)")
  print(f"{'variant':32s} {'img/s best':>11s} {'img/s median':>13s} {'vs before':>10s}")
  best = {label: train_step.BATCH / min(ts) for label, ts in times.items()}
  for label, ts in times.items():
    print(f"{label:32s} {best[label]:11.1f} {train_step.BATCH / statistics.median(ts):13.1f}"
          f" {best[label] / best['before']:10.3f}")
  print(f"ratio {best['all (now)'] / best['before']:.3f}")


if __name__ == "__main__":
  main()
