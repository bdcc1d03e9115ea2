"""Packed XNOR-popcount serving vs float serving of binary networks (one process, interleaved).

Cases:
  * binary ResNet-20 (`build("resnet20", layers="binary")`, 32x32x3 inputs) at batch 1 and 128:
    float = the training-time forward `model.apply(variables, x, train=False)` (float convs on
    +-1 values), packed = `quant.serve_apply` on `quant.export(...)` (uint32 weights, BatchNorms
    folded, activations binarised + packed at run time);
  * one binary dense 256x4608 @ 4608x512: float `sign(x) @ sign(w)` vs packing the activations
    and `xnor_popcount_matmul` against pre-packed weights.

Both sides are jitted and compiled before timing; repetitions alternate float/packed so machine
load hits both alike; min and median are reported, ratio = float time / packed time (> 1: packed
faster). Run: `python benchmarks/binary_serving.py [--reps 10]`.
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from jaxcompress import quant as export_lib  # pack_bits, export, serve_fn, ... (quant/export.py)
from jaxcompress.models import build
from jaxcompress.quant import estimators


def _time(fn, *args) -> float:
  t = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - t


def _compare(name: str, float_fn, float_args, packed_fn, packed_args, reps: int) -> None:
  jax.block_until_ready(float_fn(*float_args))
  jax.block_until_ready(packed_fn(*packed_args))
  tf, tp = [], []
  for _ in range(reps):
    tf.append(_time(float_fn, *float_args))
    tp.append(_time(packed_fn, *packed_args))
  mf, mp = min(tf), min(tp)
  df, dp = statistics.median(tf), statistics.median(tp)
  print(f"{name:<34} float min {mf * 1e3:8.2f} ms med {df * 1e3:8.2f} ms | packed min "
        f"{mp * 1e3:8.2f} ms med {dp * 1e3:8.2f} ms | ratio min {mf / mp:5.2f}x med {df / dp:5.2f}x",
        flush=True)


def resnet20(batch: int, reps: int) -> None:
  model = build("resnet20", layers="binary")
  x = jax.random.normal(jax.random.key(1), (batch, 32, 32, 3))
  variables = model.init(jax.random.key(0), x[:1])
  exported = export_lib.export(variables, model, x, train=False)
  float_fn = jax.jit(lambda v, x: model.apply(v, x, train=False))
  packed_fn = export_lib.serve_fn(exported)
  err = float(jnp.max(jnp.abs(float_fn(variables, x) - packed_fn(x))))
  print(f"resnet20 batch {batch}: max |float - packed| = {err:.2e}; sizes "
        f"{ {k: round(v, 2) for k, v in export_lib.export_sizes(exported).items()} }")
  _compare(f"binary ResNet-20 batch {batch}", float_fn, (variables, x), packed_fn, (x,), reps)


def dense(reps: int, m: int = 256, k: int = 4608, n: int = 512) -> None:
  x = jax.random.normal(jax.random.key(2), (m, k))
  w = jax.random.normal(jax.random.key(3), (k, n))
  w_words = export_lib.pack_bits((estimators.ste_sign(w) > 0).T).T

  @jax.jit
  def float_fn(x, w):
    return estimators.ste_sign(x) @ estimators.ste_sign(w)

  @jax.jit
  def packed_fn(x, w_words):
    a = export_lib.pack_bits(estimators.ste_sign(x) > 0)
    return export_lib.xnor_popcount_matmul(a, w_words, k)

  err = float(jnp.max(jnp.abs(float_fn(x, w) - packed_fn(x, w_words))))
  print(f"dense {m}x{k}x{n}: max |float - packed| = {err}")
  _compare(f"binary dense {m}x{k}x{n}", float_fn, (x, w), packed_fn, (x, w_words), reps)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--reps", type=int, default=10)
  args = parser.parse_args()
  print(f"backend {jax.default_backend()}, devices {jax.devices()}")
  dense(args.reps)
  resnet20(1, args.reps)
  resnet20(128, args.reps)


if __name__ == "__main__":
  main()
