"""Packed XNOR-popcount serving vs float serving of binary networks (one process, interleaved).

Cases:
  * binary ResNet-20 (`build("resnet20", layers="binary")`, 32x32x3 inputs) at batch 1 and 128:
    float = the training-time forward `model.apply(variables, x, train=False)` (float convs on
    +-1 values), packed = `quant.serve_apply` on `quant.export(...)` (uint32 weights, BatchNorms
    folded, activations binarised + packed at run time);
  * one binary dense 256x4608 @ 4608x512: float `sign(x) @ sign(w)` vs packing the activations
    and `xnor_popcount_matmul` against pre-packed weights;
  * RBNN 1w1a ResNet-20 (`build("resnet20", layers="rbnn", bn_before_classifier=True)`, the
    model of configs/rbnn/*resnet20*.py, official uniform thetas) at batch 1 and 128, packed vs
    two float baselines: "train fwd" = `model.apply(..., train=False)` (recomputes the rotated,
    standardised weights every call) and "float serve" = the same export with every packed
    kernel unpacked to a float +-1 kernel and a float conv (`float_serving`): the fair float
    serving of the same binary network.

Both sides are jitted and compiled before timing; repetitions alternate float/packed so machine
load hits both alike; min and median are reported, ratio = float time / packed time (> 1: packed
faster). Run: `python benchmarks/binary_serving.py [--reps 10] [--only all|binary|rbnn]`.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time

import jax
import jax.numpy as jnp

from jaxcompress import quant as export_lib  # pack_bits, export, serve_fn, ... (quant/export.py)
from jaxcompress.models import build
from jaxcompress.quant import estimators, rotation


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


def float_serving(exported):
  """The export with packed kernels unpacked to float +-1 kernels run by float convs/matmuls."""
  layers = {}
  for path, layer in exported.layers.items():
    spec = layer.spec
    if spec.mode != "xnor":
      layers[path] = layer
      continue
    w = jnp.where(export_lib.unpack_bits(layer.weights.T, spec.k).T, 1.0, -1.0)
    q = rotation.rbnn_activation_sign if spec.center_input else spec.input_quantizer
    layers[path] = layer.replace(weights=w.reshape(spec.kernel_shape), spec=dataclasses.replace(
        spec, mode="float", input_quantizer=q, center_input=False))
  return exported.replace(layers=layers)


def _compare_many(name: str, fns: dict, reps: int) -> None:
  """Times every `label: (fn, args)` interleaved; ratios are `label time / packed time`."""
  for fn, args in fns.values():
    jax.block_until_ready(fn(*args))
  times = {label: [] for label in fns}
  for _ in range(reps):
    for label, (fn, args) in fns.items():
      times[label].append(_time(fn, *args))
  mp, dp = min(times["packed"]), statistics.median(times["packed"])
  parts = [f"{label} min {min(t) * 1e3:8.2f} med {statistics.median(t) * 1e3:8.2f} ms"
           for label, t in times.items()]
  ratios = [f"{label}/packed min {min(t) / mp:5.2f}x med {statistics.median(t) / dp:5.2f}x"
            for label, t in times.items() if label != "packed"]
  print(f"{name:<28} " + " | ".join(parts) + " | " + " | ".join(ratios), flush=True)


def rbnn_resnet20(batch: int, reps: int) -> None:
  model = build("resnet20", layers="rbnn", bn_before_classifier=True)
  x = jnp.clip(jax.random.normal(jax.random.key(1), (batch, 32, 32, 3)), -2.0, 2.0)
  variables = model.init(jax.random.key(0), x[:1])
  # Official theta init (uniform in [0, pi/2)), so the binary weights mix rotated and unrotated;
  # BatchNorm scales of a trained net (the 1e-8 init would hide the binary convs' outputs).
  def trained_like(path, leaf):
    name, key = jax.tree_util.keystr(path), jax.random.key(len(jax.tree_util.keystr(path)))
    if "theta" in name:
      return jax.random.uniform(key, leaf.shape, leaf.dtype, 0.0, math.pi / 2)
    if "BatchNorm" in name and "scale" in name:
      return jax.random.uniform(key, leaf.shape, leaf.dtype, 0.5, 1.5)
    return leaf
  variables = jax.tree_util.tree_map_with_path(trained_like, variables)
  exported = export_lib.export(variables, model, x, train=False)
  train_fn = jax.jit(lambda v, x: model.apply(v, x, train=False))
  packed_fn = export_lib.serve_fn(exported)
  float_fn = export_lib.serve_fn(float_serving(exported))
  want = train_fn(variables, x)
  err = float(jnp.max(jnp.abs(want - packed_fn(x))))
  err_f = float(jnp.max(jnp.abs(want - float_fn(x))))
  same = bool(jnp.all(jnp.argmax(want, -1) == jnp.argmax(packed_fn(x), -1)))
  sizes = export_lib.export_sizes(exported)
  print(f"rbnn resnet20 batch {batch}: max |train fwd - packed| = {err:.2e} (float serve "
        f"{err_f:.2e}), same predictions {same}; binary kernels {sizes['binary_kernel_bytes']} B "
        f"packed vs {sizes['binary_float_bytes']} B float32 ({sizes['binary_ratio']:.2f}x)")
  _compare_many(f"RBNN ResNet-20 batch {batch}", {
      "train fwd": (train_fn, (variables, x)), "float serve": (float_fn, (x,)),
      "packed": (packed_fn, (x,))}, reps)


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
  parser.add_argument("--only", choices=("all", "binary", "rbnn"), default="all")
  args = parser.parse_args()
  print(f"backend {jax.default_backend()}, devices {jax.devices()}")
  if args.only in ("all", "binary"):
    dense(args.reps)
    resnet20(1, args.reps)
    resnet20(128, args.reps)
  if args.only in ("all", "rbnn"):
    rbnn_resnet20(1, args.reps)
    rbnn_resnet20(128, args.reps)


if __name__ == "__main__":
  main()
