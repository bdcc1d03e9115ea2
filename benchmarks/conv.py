"""Convolution throughput: lax.conv_general_dilated vs jaxcompress.ops.conv vs PyTorch (CPU).

For each case prints GFLOP/s of the forward pass and of forward + both gradients (input and
kernel), best and median over `--reps` repetitions that run interleaved (lax, jaxcompress,
torch, lax, ...) so background load hits every variant alike. FLOPs count 2 * MACs of the
convolution (x3 for forward + both gradients).

Usage:
  python benchmarks/conv.py [--reps 7] [--resnet20]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcompress.ops import conv as conv_ops

NHWC = ("NHWC", "HWIO", "NHWC")

# (name, batch, height/width, in channels, out channels, kernel, stride)
CASES = [
    ("3x3 64->64 32x32", 128, 32, 64, 64, 3, 1),
    ("3x3 64->128 s2 32x32", 128, 32, 64, 128, 3, 2),
    ("1x1 64->64 32x32", 128, 32, 64, 64, 1, 1),
]
RESNET20_CASES = [
    ("rn20 3x3 16->16 32x32", 128, 32, 16, 16, 3, 1),
    ("rn20 3x3 16->32 s2", 128, 32, 16, 32, 3, 2),
    ("rn20 3x3 32->32 16x16", 128, 16, 32, 32, 3, 1),
    ("rn20 3x3 64->64 8x8", 128, 8, 64, 64, 3, 1),
]


def jax_fns(impl: str, stride: int, k: int) -> tuple[Callable[..., Any], Callable[..., Any]]:
  """Jitted forward and forward+gradients of the conv under conv impl `impl`."""
  fn = lax.conv_general_dilated if impl == "lax" else conv_ops.conv_general_dilated
  pad = ((k // 2, k // 2),) * 2

  def conv(x, w):
    return fn(x, w, (stride, stride), pad, dimension_numbers=NHWC)

  def fwd_bwd(x, w, g):
    y, vjp = jax.vjp(conv, x, w)
    return (y,) + vjp(g)

  conv_ops.set_conv_impl("auto")
  return jax.jit(conv), jax.jit(fwd_bwd)


def torch_fns(stride: int, k: int) -> tuple[Callable[..., Any], Callable[..., Any]]:
  import torch  # pylint: disable=g-import-not-at-top

  def fwd(x, w):
    with torch.no_grad():
      return torch.nn.functional.conv2d(x, w, stride=stride, padding=k // 2)

  def fwd_bwd(x, w, g):
    x.grad = w.grad = None
    torch.nn.functional.conv2d(x, w, stride=stride, padding=k // 2).backward(g)

  return fwd, fwd_bwd


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--reps", type=int, default=7)
  parser.add_argument("--resnet20", action="store_true", help="also the ResNet-20 layer shapes")
  args = parser.parse_args(argv)
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(2)

  print(f"{'case':24s} {'variant':12s} {'fwd best':>9s} {'fwd med':>8s} "
        f"{'f+grads best':>13s} {'f+grads med':>12s}   (GFLOP/s)")
  for name, n, hw, cin, cout, k, s in CASES + (RESNET20_CASES if args.resnet20 else []):
    rng = np.random.default_rng(0)
    ho = (hw + 2 * (k // 2) - k) // s + 1
    x = rng.standard_normal((n, hw, hw, cin), dtype=np.float32)
    w = rng.standard_normal((k, k, cin, cout), dtype=np.float32) * 0.1
    g = rng.standard_normal((n, ho, ho, cout), dtype=np.float32)
    flop = 2.0 * n * ho * ho * cout * k * k * cin
    jx, jw, jg = jnp.asarray(x), jnp.asarray(w), jnp.asarray(g)
    tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_()
    tw = torch.from_numpy(w.transpose(3, 2, 0, 1).copy()).requires_grad_()
    tg = torch.from_numpy(g.transpose(0, 3, 1, 2).copy())
    variants = {}
    for impl, label in (("lax", "lax"), ("auto", "jaxcompress")):
      fwd, fb = jax_fns(impl, s, k)
      variants[label] = (lambda f=fwd: jax.block_until_ready(f(jx, jw)),
                         lambda f=fb: jax.block_until_ready(f(jx, jw, jg)))
    tf, tfb = torch_fns(s, k)
    variants["torch"] = (lambda: tf(tx, tw), lambda: tfb(tx, tw, tg))
    times = {label: ([], []) for label in variants}
    for fwd, fb in variants.values():  # compile / warm up
      fwd()
      fb()
    for _ in range(args.reps):
      for label, (fwd, fb) in variants.items():
        for run, bucket in ((fwd, times[label][0]), (fb, times[label][1])):
          t0 = time.perf_counter()
          run()
          bucket.append(time.perf_counter() - t0)
    for label, (tf_, tb_) in times.items():
      print(f"{name:24s} {label:12s} {flop / min(tf_) / 1e9:9.1f} "
            f"{flop / statistics.median(tf_) / 1e9:8.1f} {3 * flop / min(tb_) / 1e9:13.1f} "
            f"{3 * flop / statistics.median(tb_) / 1e9:12.1f}")


if __name__ == "__main__":
  main()
