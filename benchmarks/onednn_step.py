"""What two CPU step settings are worth, each alone and together, in one run.

Two changes to the CPU training step:

  * `oneDNN convs`: forward and stride-1 input-gradient convolutions run on oneDNN through
    XLA:CPU's `__onednn$convolution` custom call (`jaxcompress/ops/onednn_conv.py`) instead of
    XLA's own convolution;
  * `xhat after cotangent`: batch norm's backward makes its normalised input depend on the
    incoming cotangent (`jaxcompress/ops/batch_norm.py`), so XLA:CPU no longer computes and stores
    it during the forward pass.

"before" patches both back; PyTorch's equivalent step (`train_step.make_torch_step`) runs in the
same interleaved rounds. The table prints img/s, the speed-up over "before" and the ratio to
PyTorch; the last line is `ratio <now / torch>` of the best repetitions.

Usage:
  python benchmarks/onednn_step.py --model resnet20|rbnn_resnet20 [--reps 6] [--steps 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_step  # noqa: E402  (the benchmark's model, step and timing loop)

from jaxcompress.ops import batch_norm as bn_ops  # noqa: E402
from jaxcompress.ops import conv as conv_ops  # noqa: E402


def _bn_bwd_before(epsilon, out_dtype, res, cts):
  """`batch_norm._bn_bwd` before the change: xhat depends on forward values only."""
  del epsilon, out_dtype
  x, mean, rstd, scale, bias = res
  gy, gmean, gvar = cts
  axes = tuple(range(x.ndim - 1))
  m = x.size // x.shape[-1]
  gy = gy.astype(jnp.float32)
  centered = x.astype(jnp.float32) - mean
  xhat = centered * rstd
  dbias = jnp.sum(gy, axes)
  dscale = jnp.sum(gy * xhat, axes)
  dx = (scale.astype(jnp.float32) * rstd) * (gy - dbias / m - xhat * (dscale / m))
  dx = dx + gmean / m + centered * (2.0 * gvar / m)
  return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype)


def _bn_primal(x, scale, bias, epsilon, out_dtype):
  return bn_ops._bn_fwd(x, scale, bias, epsilon, out_dtype)[0]


_bn_before = jax.custom_vjp(_bn_primal, nondiff_argnums=(3, 4))
_bn_before.defvjp(bn_ops._bn_fwd, _bn_bwd_before)

XLA_CONVS = (conv_ops, "_onednn_applies", lambda *a, **k: False)
XHAT_IN_FORWARD = (bn_ops, "batch_norm_train", _bn_before)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="resnet20", choices=("resnet20", "rbnn_resnet20"))
  parser.add_argument("--reps", type=int, default=6, help="interleaved repetitions")
  parser.add_argument("--steps", type=int, default=3, help="training steps per repetition")
  args = parser.parse_args(argv)

  variants = {"before": (XLA_CONVS, XHAT_IN_FORWARD),
              "+ oneDNN convs": (XHAT_IN_FORWARD,),
              "+ xhat after cotangent": (XLA_CONVS,),
              "both (now)": ()}
  layers = train_step.model_layers(args.model)
  runners = train_step.make_patched_steps(layers, variants)
  runners.append(train_step.make_torch_step(args.model))
  torch_label = runners[-1][1]
  times = train_step.time_interleaved(runners, args.reps, args.steps)

  print(f"{args.model} training step, batch {train_step.BATCH}, {jax.device_count()} device(s) "
        f"({args.reps} interleaved reps x {args.steps} steps)")
  print(f"{'variant':26s} {'img/s best':>11s} {'img/s median':>13s} {'vs before':>10s} "
        f"{'vs torch':>9s}")
  best = {label: train_step.BATCH / min(ts) for label, ts in times.items()}
  for label, ts in times.items():
    print(f"{label:26s} {best[label]:11.1f} {train_step.BATCH / statistics.median(ts):13.1f}"
          f" {best[label] / best['before']:10.3f} {best[label] / best[torch_label]:9.3f}")
  print(f"ratio {best['both (now)'] / best[torch_label]:.3f}")


if __name__ == "__main__":
  main()
