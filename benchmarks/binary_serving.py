"""Packed XNOR-popcount serving vs float serving of binary networks (one process, interleaved).

Cases:
  * binary ResNet-20 (`build("resnet20", layers="binary")`, 32x32x3 inputs) and RBNN 1w1a
    ResNet-20 (`build("resnet20", layers="rbnn", bn_before_classifier=True)`, the model of
    configs/rbnn/*resnet20*.py, official uniform thetas) at batch 1 and 128:
      "float serve" = `quant.serve_fn(quant.float_serving(exported))`: the same exported network
        with every packed kernel unpacked to a float +-1 kernel run by a float conv (the fair
        float serving of the same binary network: same folded BatchNorms, same inputs);
      "packed" = `quant.serve_fn(exported)` (uint32 sign bits, the fused native kernel where the
        CPU has one, residual adds and activations folded into it);
      "train fwd" = `model.apply(variables, x, train=False)`, labelled: it also recomputes the
        binarised (and for RBNN rotated) weights every call.
  * one binary dense 256x4608 @ 4608x512: float `sign(x) @ sign(w)` vs packing the activations
    and `xnor_popcount_matmul` against pre-packed weights.
  * `--isa`: the ResNet-20 cases again in child processes as on an AVX2 machine (the kernel built
    with `JAXCOMPRESS_NATIVE_CXXFLAGS=-march=haswell`: nibble-table popcounts; XLA and oneDNN
    held to AVX2 by `--xla_cpu_max_isa=AVX2` and `ONEDNN_MAX_CPU_ISA=AVX2`), there with the
    native kernel off (`JAXCOMPRESS_NATIVE=0`: XLA's ops), and here with it off.

Every function is jitted and compiled before timing; repetitions alternate the variants so
machine load hits them alike; min and median are reported, ratio = other time / packed time
(> 1: packed faster). The last line is `ratio X`: float serve / packed of the binary ResNet-20 at
batch 128 (min over min). Run: `python benchmarks/binary_serving.py [--reps 10]
[--only all|binary|rbnn] [--isa]`.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp

from jaxcompress import quant
from jaxcompress.models import build
from jaxcompress.ops import binary_conv
from jaxcompress.quant import estimators

_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vpopcntdq", "avx512_bitalg", "avx512_vnni",
          "amx_int8")


def _machine() -> str:
  model, flags = platform.processor(), set()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          model = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
          flags = set(line.split(":", 1)[1].split())
  except OSError:
    pass
  have = " ".join(f for f in _FLAGS if f in flags)
  return (f"{model}, {os.cpu_count()} cores, flags [{have}]; jax {jax.__version__}; native "
          f"binary conv: {binary_conv.popcount_path() if binary_conv.available() else 'off'}")


def _time(fn, *args) -> float:
  t = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - t


def _compare(name: str, fns: dict, reps: int) -> dict[str, float]:
  """Times every `label: (fn, args)` interleaved; prints ratios `label / packed`.

  Returns:
    label -> min ratio (label min time / packed min time).
  """
  for fn, args in fns.values():
    jax.block_until_ready(fn(*args))
  times = {label: [] for label in fns}
  for _ in range(reps):
    for label, (fn, args) in fns.items():
      times[label].append(_time(fn, *args))
  mp, dp = min(times["packed"]), statistics.median(times["packed"])
  parts = [f"{label} min {min(t) * 1e3:8.2f} med {statistics.median(t) * 1e3:8.2f} ms"
           for label, t in times.items()]
  ratios = {label: min(t) / mp for label, t in times.items() if label != "packed"}
  text = [f"{label}/packed min {ratios[label]:5.2f}x med {statistics.median(t) / dp:5.2f}x"
          for label, t in times.items() if label != "packed"]
  print(f"{name:<28} " + " | ".join(parts) + " | " + " | ".join(text), flush=True)
  return ratios


def _trained_like(variables):
  # Official RBNN theta init (uniform in [0, pi/2)), so the binary weights mix rotated and
  # unrotated; BatchNorm scales of a trained net (the 1e-8 init would hide the convs' outputs).
  def leaf_fn(path, leaf):
    name, key = jax.tree_util.keystr(path), jax.random.key(len(jax.tree_util.keystr(path)))
    if "theta" in name:
      return jax.random.uniform(key, leaf.shape, leaf.dtype, 0.0, math.pi / 2)
    if "BatchNorm" in name and "scale" in name:
      return jax.random.uniform(key, leaf.shape, leaf.dtype, 0.5, 1.5)
    return leaf
  return jax.tree_util.tree_map_with_path(leaf_fn, variables)


def resnet20(kind: str, batch: int, reps: int) -> float:
  """One ResNet-20 case; returns float serve / packed (min over min)."""
  rbnn = kind == "rbnn"
  model = build("resnet20", layers=kind, **({"bn_before_classifier": True} if rbnn else {}))
  x = jax.random.normal(jax.random.key(1), (batch, 32, 32, 3))
  if rbnn:
    x = jnp.clip(x, -2.0, 2.0)
  variables = _trained_like(model.init(jax.random.key(0), x[:1]))
  exported = quant.export(variables, model, x, train=False)
  train_fn = jax.jit(lambda v, x: model.apply(v, x, train=False))
  packed_fn = quant.serve_fn(exported)
  float_fn = quant.serve_fn(quant.float_serving(exported))
  want = train_fn(variables, x)
  got = packed_fn(x)
  err = float(jnp.max(jnp.abs(want - got)))
  err_f = float(jnp.max(jnp.abs(want - float_fn(x))))
  same = bool(jnp.all(jnp.argmax(want, -1) == jnp.argmax(got, -1)))
  sizes = quant.export_sizes(exported)
  print(f"{kind} resnet20 batch {batch}: max |train fwd - packed| = {err:.2e} (float serve "
        f"{err_f:.2e}), same predictions {same}; binary kernels {sizes['binary_kernel_bytes']} B "
        f"packed vs {sizes['binary_float_bytes']} B float32 ({sizes['binary_ratio']:.2f}x)")
  ratios = _compare(f"{kind} ResNet-20 batch {batch}", {
      "float serve": (float_fn, (x,)), "train fwd": (train_fn, (variables, x)),
      "packed": (packed_fn, (x,))}, reps)
  return ratios["float serve"]


def dense(reps: int, m: int = 256, k: int = 4608, n: int = 512) -> None:
  x = jax.random.normal(jax.random.key(2), (m, k))
  w = jax.random.normal(jax.random.key(3), (k, n))
  w_words = quant.pack_bits((estimators.ste_sign(w) > 0).T).T

  @jax.jit
  def float_fn(x, w):
    return estimators.ste_sign(x) @ estimators.ste_sign(w)

  @jax.jit
  def packed_fn(x, w_words):
    a = quant.pack_bits(estimators.ste_sign(x) > 0)
    return quant.xnor_popcount_matmul(a, w_words, k)

  err = float(jnp.max(jnp.abs(float_fn(x, w) - packed_fn(x, w_words))))
  print(f"dense {m}x{k}x{n}: max |float - packed| = {err}")
  _compare(f"binary dense {m}x{k}x{n}", {"float": (float_fn, (x, w)),
                                         "packed": (packed_fn, (x, w_words))}, reps)


def _fallbacks(reps: int) -> None:
  """The ResNet-20 cases in child processes: AVX2-only kernel build, then no native kernel."""
  # An AVX2 machine: the kernel built for Haswell, and XLA's and oneDNN's own code (the float
  # side) held to AVX2 too.
  avx2 = {"JAXCOMPRESS_NATIVE_CXXFLAGS": "-march=haswell", "ONEDNN_MAX_CPU_ISA": "AVX2",
          "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_max_isa=AVX2").strip()}
  for label, env in (("AVX2 machine: kernel -march=haswell, XLA and oneDNN held to AVX2", avx2),
                     ("AVX2 machine, native kernel off (XLA ops)",
                      {**avx2, "JAXCOMPRESS_NATIVE": "0"}),
                     ("this machine, native kernel off (XLA ops)", {"JAXCOMPRESS_NATIVE": "0"})):
    print(f"--- {label}", flush=True)
    subprocess.run([sys.executable, __file__, "--reps", str(reps), "--only", "resnet"],
                   env={**os.environ, **env}, check=True)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--reps", type=int, default=10)
  parser.add_argument("--only", choices=("all", "binary", "rbnn", "resnet"), default="all")
  parser.add_argument("--isa", action="store_true", help="also time the AVX2 and XLA fallbacks")
  args = parser.parse_args()
  print(f"backend {jax.default_backend()}; {_machine()}", flush=True)
  ratio = None
  if args.only in ("all", "binary"):
    dense(args.reps)
  if args.only in ("all", "binary", "resnet"):
    resnet20("binary", 1, args.reps)
    ratio = resnet20("binary", 128, args.reps)
  if args.only in ("all", "rbnn", "resnet"):
    resnet20("rbnn", 1, args.reps)
    resnet20("rbnn", 128, args.reps)
  if args.isa:
    _fallbacks(args.reps)
  if ratio is not None and args.only != "resnet":
    print(f"ratio {ratio:.2f}")


if __name__ == "__main__":
  main()
