"""R3D-18 training step on video clips, CPU: jaxcompress vs an equivalent PyTorch model.

The model is DSM's R3D-18 (Hara et al.'s 3D-ResNet layout, `jaxcompress.models.video_resnet.
r3d_18`: 7x7x7 stem with stride (1, 2, 2), 3x3x3 max pool, four stages of two 3x3x3 basic
blocks, 1x1x1 strided shortcuts, bias-free classifier on the pooled features), on channel-last
clips (N, T, H, W, C). The PyTorch model below has the same layers, strides, paddings and
parameter count (checked at start), on NCTHW clips, in its default contiguous layout and in
`channels_last_3d` (whichever is faster is the reference). One step = forward in train mode
(batch statistics), softmax cross-entropy, backward, SGD with momentum 0.9 and weight decay
5e-4, batch-norm running-statistic update.

Runners, interleaved in one process (A B C D A B C D ...) so that load from other processes on
the machine hits all alike:
  * jaxcompress: the step as the library runs it (`jaxcompress.ops.conv` on CPU: oneDNN forward
    and input gradients, the native 3-D weight gradient `ops.native_conv3d`, kernel taps that read
    only padding cut off and the few-pixel plan of `ops.conv3d`);
  * flax max_pool: the same with `video_layers.max_pool` on `flax.linen.max_pool` (gradient by
    XLA's select-and-scatter) instead of `ops.max_pool`, the pooling before it was adopted;
  * before: the step with the code before `ops.conv3d` / `ops.native_conv3d` / `ops.max_pool`
    (3-D weight gradients on XLA's blocked convolution, no tap trimming, the 2-D plan for every
    part, flax's max pool);
  * torch, torch channels_last_3d.
The table shows clips/s at the best and the median repetition; the last line is
`ratio <jaxcompress / fastest torch>` of the best repetitions (> 1: jaxcompress is faster), and
`median ratio` the same for the medians (on a loaded machine PyTorch's OpenMP threads lose
more than XLA's, so medians favour jaxcompress; compare best repetitions).

Usage:
  python benchmarks/video_step.py [--batch 2] [--frames 8] [--size 112] [--reps 8] [--quick]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
from typing import Any, Callable
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_step  # noqa: E402  (the interleaved timing loop)

from jaxcompress.models import video_layers, video_resnet  # noqa: E402
from jaxcompress.ops import conv as conv_ops  # noqa: E402
from jaxcompress.ops import conv3d, max_pool, native_conv3d  # noqa: E402

NUM_CLASSES = 101
TORCH_LABELS = ("torch", "torch channels_last_3d")
POOL_LABEL = "flax max_pool"


_NATIVE_DW_APPLIES = conv_ops._native_dw_applies  # pylint: disable=protected-access


def _no_video_native_dw(lhs: jax.Array, rhs: jax.Array, pet: Any, video: bool = False) -> bool:
  """`conv._native_dw_applies` before the 3-D kernel: 2-D convolutions only."""
  return not video and _NATIVE_DW_APPLIES(lhs, rhs, pet)


# `video_layers.max_pool` pooling with flax's max_pool, as before `ops.max_pool` was adopted.
OPS_POOL = ((max_pool, "max_pool",
             lambda x, window, strides, padding: video_layers.nn.max_pool(
                 x, window, strides, padding=padding)),)

# The code before `ops.conv3d` / `ops.native_conv3d` / `ops.max_pool`: no tap trimming, 3-D weight
# gradients on XLA's blocked convolution, the 2-D plan for every part, flax's pool. (1x1x1
# convolutions still take the per-frame route, as unpadded matmuls either way.)
BEFORE = ((conv_ops, "_native_dw_applies", _no_video_native_dw),
          (conv3d, "trimmed_kernel", lambda lhs_spatial, rhs, strides, pads, dil: (rhs, pads)),
          (conv3d, "adjust_plan", lambda plan, *args: plan),
          *OPS_POOL)


def make_jax_step(batch: int, frames: int, size: int, label: str,
                  patches: tuple[tuple[Any, str, Any], ...] = ()
                  ) -> tuple[Callable[[], None], str, int]:
  """A jitted R3D-18 training step (traced with `patches` applied) and its parameter count.

  Args:
    batch: clips per step.
    frames, size: clip length and frame height/width.
    label: name printed in the table.
    patches: (object, attribute, replacement) applied while the step is traced.

  Returns:
    (run, label, parameters): `run()` performs one step and blocks until it is done.
  """
  model = video_resnet.r3d_18(num_classes=NUM_CLASSES)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((batch, frames, size, size, 3), dtype=np.float32))
  y = jnp.asarray(rng.integers(0, NUM_CLASSES, batch))
  variables = model.init(jax.random.key(0), x, train=False)
  params, batch_stats = variables["params"], variables["batch_stats"]
  tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.1, momentum=0.9))
  step = jax.jit(train_step.step_fn(model, {}, tx), donate_argnums=(0, 1, 2))
  state = [params, batch_stats, tx.init(params)]

  def run() -> None:
    p, s, o, loss = step(state[0], state[1], state[2], x, y)
    state[:] = [p, s, o]
    loss.block_until_ready()

  with contextlib.ExitStack() as stack:
    for obj, attr, value in patches:
      stack.enter_context(mock.patch.object(obj, attr, value))
    run()  # compile: the conv plan is chosen while tracing
  count = sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(params))
  return run, label, count


def make_torch_steps(batch: int, frames: int, size: int
                     ) -> tuple[list[tuple[Callable[[], None], str]], int]:
  """The same step in PyTorch (NCTHW contiguous and channels_last_3d) and its parameter count."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn as tnn  # pylint: disable=g-import-not-at-top
  from torch.nn import functional as F  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count() or 1)

  class Block(tnn.Module):
    """Two 3x3x3 conv-BN pairs, ReLU, 1x1x1 strided conv + BN shortcut (Hara's type "B")."""

    def __init__(self, cin: int, cout: int, stride: int):
      super().__init__()
      self.conv1 = tnn.Conv3d(cin, cout, 3, stride, 1, bias=False)
      self.bn1 = tnn.BatchNorm3d(cout)
      self.conv2 = tnn.Conv3d(cout, cout, 3, 1, 1, bias=False)
      self.bn2 = tnn.BatchNorm3d(cout)
      self.down = None
      if stride != 1 or cin != cout:
        self.down = tnn.Sequential(tnn.Conv3d(cin, cout, 1, stride, bias=False),
                                   tnn.BatchNorm3d(cout))

    def forward(self, x):
      y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
      return F.relu(y + (x if self.down is None else self.down(x)))

  class R3D18(tnn.Module):

    def __init__(self):
      super().__init__()
      self.stem = tnn.Conv3d(3, 64, 7, (1, 2, 2), 3, bias=False)
      self.bn = tnn.BatchNorm3d(64)
      self.pool = tnn.MaxPool3d(3, 2, 1)
      blocks, cin = [], 64
      for stage, width in enumerate((64, 128, 256, 512)):
        for b in range(2):
          blocks.append(Block(cin, width, 2 if stage > 0 and b == 0 else 1))
          cin = width
      self.blocks = tnn.Sequential(*blocks)
      self.classifier = tnn.Linear(512, NUM_CLASSES, bias=False)

    def forward(self, x):
      x = self.pool(F.relu(self.bn(self.stem(x))))
      return self.classifier(self.blocks(x).mean(dim=(2, 3, 4)))

  runners = []
  for label, fmt in zip(TORCH_LABELS, (torch.contiguous_format, torch.channels_last_3d)):
    torch.manual_seed(0)
    model = R3D18().to(memory_format=fmt)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, 3, frames, size, size).contiguous(memory_format=fmt)
    y = torch.randint(0, NUM_CLASSES, (batch,))

    def run(model=model, opt=opt, x=x, y=y) -> None:
      opt.zero_grad(set_to_none=True)
      F.cross_entropy(model(x), y).backward()
      opt.step()

    run()
    runners.append((run, label))
  count = sum(p.numel() for p in model.parameters())
  return runners, count


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=2, help="clips per step")
  parser.add_argument("--frames", type=int, default=8)
  parser.add_argument("--size", type=int, default=112, help="frame height and width")
  parser.add_argument("--reps", type=int, default=8, help="interleaved repetitions")
  parser.add_argument("--steps", type=int, default=1, help="steps per runner per repetition")
  parser.add_argument("--no-before", action="store_true",
                      help="skip the runner without the 3-D kernel (its stem weight gradient "
                      "takes ~2 s per step)")
  parser.add_argument("--quick", action="store_true",
                      help="small shapes for a smoke run: batch 2 of 4x48x48, 2 reps")
  args = parser.parse_args(argv)
  if args.quick:
    args.batch, args.frames, args.size, args.reps = 2, 4, 48, 2

  import torch  # pylint: disable=g-import-not-at-top
  shape = f"{args.batch}x{args.frames}x{args.size}x{args.size}x3"
  clip = (args.batch, args.frames, args.size)
  run, label, jax_params = make_jax_step(*clip, "jaxcompress")
  runners = [(run, label), make_jax_step(*clip, POOL_LABEL, OPS_POOL)[:2]]
  if not args.no_before:
    runners.append(make_jax_step(*clip, "before", BEFORE)[:2])
  torch_runners, torch_params = make_torch_steps(*clip)
  if torch_params != jax_params:
    raise SystemExit(f"parameter counts differ: jax {jax_params}, torch {torch_params}")
  runners += torch_runners
  times = train_step.time_interleaved(runners, args.reps, args.steps)

  print(f"R3D-18 training step, clips {shape} (N, T, H, W, C), {jax_params:,} parameters, "
        f"{jax.default_backend()}, {os.cpu_count()} cores; jax {jax.__version__}, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads); native 3-D kernel "
        f"{'on' if native_conv3d.available() else 'off'}; {args.reps} interleaved reps x "
        f"{args.steps} steps")
  print(f"{'variant':28s} {'clips/s best':>13s} {'clips/s median':>15s} {'s/step best':>12s}")
  best = {k: args.batch / min(ts) for k, ts in times.items()}
  med = {k: args.batch / statistics.median(ts) for k, ts in times.items()}
  for k, ts in times.items():
    print(f"{k:28s} {best[k]:13.2f} {med[k]:15.2f} {min(ts):12.3f}")
  ref = max(TORCH_LABELS, key=lambda k: best[k])
  ref_med = max(med[k] for k in TORCH_LABELS)
  for k in TORCH_LABELS:
    print(f"ratio vs {k}: {best['jaxcompress'] / best[k]:.3f} (median "
          f"{med['jaxcompress'] / med[k]:.3f})")
  if "before" in best:
    print(f"speed-up over before: {best['jaxcompress'] / best['before']:.3f} (median "
          f"{med['jaxcompress'] / med['before']:.3f})")
  print(f"ratio {POOL_LABEL} vs {ref}: {best[POOL_LABEL] / best[ref]:.3f} (median "
        f"{med[POOL_LABEL] / ref_med:.3f})")
  print(f"median ratio {med['jaxcompress'] / ref_med:.3f}")
  print(f"ratio {best['jaxcompress'] / best[ref]:.3f}")
  sys.stdout.flush()


if __name__ == "__main__":
  main()
