"""Data-parallel ResNet-20 training step on several CPU devices: strided vs contiguous batch blocks.

`jaxcompress.ops.conv._weight_grad` loops over blocks of the batch. Contiguous blocks make XLA's
SPMD partitioner all-gather every activation when the batch is sharded; strided blocks
(`conv._batch_block`) keep each device on its own images. This script builds the same step
twice on a `--devices` CPU mesh (batch sharded, parameters replicated, as `launch/main.py`
trains), once with the library's blocks and once with contiguous ones patched in, counts the
collectives in each compiled step and times them interleaved; a 1-device step is timed in the
same rounds as the reference. The last line is `ratio <strided/contiguous>` of img/s.

Usage:
  python benchmarks/sharded_step.py [--model resnet20|rbnn_resnet20] [--devices 8] [--reps 6]
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys

from jaxcompress import distributed


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="resnet20", choices=("resnet20", "rbnn_resnet20"))
  parser.add_argument("--devices", type=int, default=8, help="fake CPU devices in the mesh")
  parser.add_argument("--reps", type=int, default=6, help="interleaved repetitions")
  parser.add_argument("--steps", type=int, default=3, help="training steps per repetition")
  args = parser.parse_args(argv)
  distributed.host_platform_flag(args.devices)  # before JAX starts its CPU backend

  import jax
  import numpy as np
  import optax
  from jax import lax
  from jax.sharding import Mesh, NamedSharding
  from jax.sharding import PartitionSpec as P

  from jaxcompress.models import resnet_cifar
  from jaxcompress.ops import conv as conv_ops
  sys.path.insert(0, __file__.rsplit("/", 1)[0])
  import train_step  # the single-device benchmark's layer sets, timing loop and batch size

  if jax.default_backend() != "cpu" or jax.device_count() < args.devices:
    raise SystemExit(f"needs {args.devices} CPU devices; got {jax.devices()}")
  layers = train_step.model_layers(args.model)
  rng = np.random.default_rng(0)
  x_host = rng.standard_normal((train_step.BATCH, 32, 32, 3), dtype=np.float32)
  y_host = rng.integers(0, train_step.NUM_CLASSES, train_step.BATCH)

  def contiguous_block(x, step, chunk):
    return lax.dynamic_slice_in_dim(x, step * chunk, chunk, 0)

  def build(num_devices: int, block_fn, label: str):
    # The block function is read while tracing, i.e. during the first (compiling) call.
    library_block = conv_ops._batch_block
    conv_ops._batch_block = block_fn
    try:
      mesh = Mesh(np.asarray(jax.devices()[:num_devices]), ("data",))
      rep, batch = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
      model = resnet_cifar.ResNet20(num_classes=train_step.NUM_CLASSES, layers=layers)
      x, y = jax.device_put(x_host, batch), jax.device_put(y_host, batch)
      variables = jax.device_put(model.init(jax.random.key(0), x_host[:2], train=False), rep)
      params, stats = variables["params"], variables.get("batch_stats", {})
      consts = {k: v for k, v in variables.items() if k not in ("params", "batch_stats")}
      tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.1, momentum=0.9))
      state = [params, stats, jax.device_put(tx.init(params), rep)]

      step = jax.jit(train_step.step_fn(model, consts, tx), donate_argnums=(0, 1, 2))
      hlo = step.lower(*state, x, y).compile().as_text()
      counts = {op: len(re.findall(rf"\b{op}(-start)?\(", hlo))
                for op in ("all-gather", "all-reduce", "all-to-all")}

      def run() -> None:
        p, s, o, loss = step(*state, x, y)
        state[:] = [p, s, o]
        loss.block_until_ready()

      run()
    finally:
      conv_ops._batch_block = library_block
    return (run, label), counts

  built = [build(args.devices, conv_ops._batch_block, f"strided, {args.devices} dev"),
           build(args.devices, contiguous_block, f"contiguous, {args.devices} dev"),
           build(1, conv_ops._batch_block, "1 device")]
  times = train_step.time_interleaved([r for r, _ in built], args.reps, args.steps)
  print(f"{args.model} training step, batch {train_step.BATCH}, {args.devices} CPU devices "
        f"({args.reps} interleaved reps x {args.steps} steps)")
  print(f"{'variant':22s} {'img/s best':>11s} {'img/s median':>13s}  collectives")
  best = {}
  for (_, label), counts in built:
    ts = times[label]
    best[label] = train_step.BATCH / min(ts)
    coll = ", ".join(f"{k} {v}" for k, v in counts.items())
    print(f"{label:22s} {best[label]:11.1f} {train_step.BATCH / statistics.median(ts):13.1f}"
          f"  {coll}")
  s, c = (best[label] for (_, label), _ in built[:2])
  print(f"ratio {s / c:.3f}")


if __name__ == "__main__":
  main()
