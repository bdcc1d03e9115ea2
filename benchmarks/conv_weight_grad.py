"""Convolution weight gradient alone, CPU: the native kernel vs XLA's vs PyTorch's oneDNN.

Variants, interleaved in one run (native, xla, torch, native, ...), ms best / median:
  * native: `jaxcompress.ops.native_conv.conv_weight_grad` (the C++ FFI kernel built for this
    CPU), what one-device float32 training uses now;
  * xla: the previous path, XLA's convolution over batch blocks (`conv._blocked_weight_grad`);
  * torch: `torch.nn.grad.conv2d_weight` on channels-last tensors (oneDNN's backward-weights
    kernel), the kernel PyTorch's training step runs.
The last line of each case is `ratio native/xla` and `ratio torch/native` speed ratios (> 1:
the first is faster).

Usage:
  python benchmarks/conv_weight_grad.py [--reps 12] [--batch 128]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress.ops import conv as conv_ops
from jaxcompress.ops import native_conv

# (name, height/width, in channels, out channels, stride): ResNet-20's 3x3 layers and its stem.
CASES = [
    ("32x32 16->16", 32, 16, 16, 1),
    ("16x16 32->32", 16, 32, 32, 1),
    ("8x8 64->64", 8, 64, 64, 1),
    ("32x32 16->32 s2", 32, 16, 32, 2),
    ("16x16 32->64 s2", 16, 32, 64, 2),
    ("32x32 3->16 stem", 32, 3, 16, 1),
]


def _time(fn: Callable[[], object]) -> float:
  start = time.perf_counter()
  fn()
  return (time.perf_counter() - start) * 1e3


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--reps", type=int, default=12)
  parser.add_argument("--batch", type=int, default=128)
  args = parser.parse_args()
  if not native_conv.available():
    raise SystemExit("the native kernel is not available here (no C++ compiler, or "
                     "JAXCOMPRESS_NATIVE=0): nothing to compare")
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(2)
  print(f"jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"batch {args.batch}, float32, 3x3, padding 1; ms best / median of {args.reps}")
  rng = np.random.default_rng(0)
  for name, hw, c, o, s in CASES:
    ho = (hw + 2 - 3) // s + 1
    x = jnp.asarray(rng.standard_normal((args.batch, hw, hw, c)).astype(np.float32))
    g = jnp.asarray(rng.standard_normal((args.batch, ho, ho, o)).astype(np.float32))
    geometry = ((3, 3), (s, s), ((1, 1), (1, 1)), (1, 1))
    native = jax.jit(lambda a, b: native_conv.conv_weight_grad(a, b, *geometry))
    xla = jax.jit(lambda a, b: conv_ops._blocked_weight_grad(  # pylint: disable=protected-access
        a, b, *geometry, None, None))
    tx = torch.from_numpy(np.asarray(x)).permute(0, 3, 1, 2)
    tg = torch.from_numpy(np.asarray(g)).permute(0, 3, 1, 2)
    got = np.asarray(native(x, g))
    want = np.asarray(xla(x, g))
    err = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
    runners = {
        "native": lambda: native(x, g).block_until_ready(),
        "xla": lambda: xla(x, g).block_until_ready(),
        "torch": lambda: torch.nn.grad.conv2d_weight(tx, (o, c, 3, 3), tg, stride=s, padding=1),
    }
    times: dict[str, list[float]] = {k: [] for k in runners}
    for fn in runners.values():
      fn()  # compile / warm up
    for _ in range(args.reps):
      for key, fn in runners.items():
        times[key].append(_time(fn))
    best = {k: min(v) for k, v in times.items()}
    cells = "  ".join(f"{k} {best[k]:.2f} / {statistics.median(v):.2f}"
                      for k, v in times.items())
    print(f"{name:18s} {cells}  (max rel diff native vs xla {err:.1e})")
    print(f"{'':18s} ratio native/xla {best['xla'] / best['native']:.2f}  "
          f"ratio torch/native {best['native'] / best['torch']:.2f}")


if __name__ == "__main__":
  main()
