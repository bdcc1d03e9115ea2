"""PAMS costs measured side by side in one process (interleaved repetitions, min and median).

1. Training step: the PAMS student step (`methods.pams.PAMS.train_step`: frozen FP teacher
   forward, fake-quant student forward/backward with L1 + 1e3 * SKT, Adam with the alpha group)
   vs the float step (`methods.pams.SuperResolution.train_step`: the teacher's L1 + Adam step),
   both EDSR-baseline x4 as configs/pams/edsr_x4_8bit.py / edsr_teacher_x4.py; ratio =
   PAMS time / float time.
2. Serving EDSR-baseline x4 on one LR input (`--sizes`, default 128 and 256 px): float
   (`model.apply` of the FP model), fake-quant (`model.apply` of the PAMS student) and integer
   (`quant.serve_int8` of `quant.export_int8`): "int8" = every body conv on int8 operands with
   int32 accumulation (the paper's quantized layers; the native AMX kernel where the CPU has
   one), "int8_conv1w" = with `unquantized_inputs="float"` (conv1 integer weights on float
   input), "int8_rest" = body_end and the upsampler convs in int8 too (`int8_float_convs`,
   alphas calibrated on the input; its accuracy cost on trained students is
   `benchmarks/pams_int8_accuracy.py`'s). Ratios = float time / int8 time (> 1: int8 faster);
   also max |int8 - fake-quant| and the PSNR between them, and the sizes. `--torch` adds
   PyTorch's float and quantized int8 EDSR (`benchmarks/pams_torch.py`), the peer. The last
   line is `ratio X`: float / int8_rest at the last size.

All functions are jitted and compiled before timing; repetitions alternate the variants so
machine load hits them alike. Run: `python benchmarks/pams.py [--reps 5] [--batch 16]
[--lr-patch 48] [--bits 8] [--only all|train|serve] [--sizes 128 256] [--torch]` (CPU:
`--batch 2 --lr-patch 24`).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import pams_torch

from configs.pams import edsr_teacher_x4, edsr_x4_8bit
from jaxcompress import quant
from jaxcompress.methods import pams
from jaxcompress.models import edsr
from jaxcompress.ops import int8_conv
from jaxcompress.quant import quantizers

_INT8_REST = "body_end|upsampler"


def _report(name: str, times: dict[str, list[float]], ratios: list[tuple[str, str]]) -> None:
  parts = [f"{k} min {min(t) * 1e3:9.1f} med {statistics.median(t) * 1e3:9.1f} ms"
           for k, t in times.items()]
  rs = [f"{a}/{b} min {min(times[a]) / min(times[b]):5.2f}x med "
        f"{statistics.median(times[a]) / statistics.median(times[b]):5.2f}x" for a, b in ratios]
  print(f"{name}: " + " | ".join(parts) + " | " + " | ".join(rs), flush=True)


def train_step(reps: int, batch: int, lr_patch: int, bits: int) -> None:
  hr_patch = 4 * lr_patch
  b = {"lr": jax.random.uniform(jax.random.key(0), (batch, lr_patch, lr_patch, 3)) * 255,
       "hr": jax.random.uniform(jax.random.key(1), (batch, hr_patch, hr_patch, 3)) * 255}
  fcfg = edsr_teacher_x4.get_config()
  teacher = pams.SuperResolution(fcfg, steps_per_epoch=1000, total_steps=30000)
  fstate = jax.jit(teacher.init)(jax.random.key(2), b)
  with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "teacher.msgpack")
    pams.save_params(path, fstate.params)
    pcfg = edsr_x4_8bit.get_config()
    pcfg.pams.teacher_path = path
    pcfg.pams.bits = bits
    student = pams.PAMS(pcfg, steps_per_epoch=1000, total_steps=30000)
  pstate = jax.jit(student.init)(jax.random.key(2), b)
  pstate = jax.jit(student.on_epoch_start)(pstate, 1)   # after calibration: the steady step
  fstep = jax.jit(teacher.train_step, donate_argnums=0)
  pstep = jax.jit(student.train_step, donate_argnums=0)
  fstate, _ = jax.block_until_ready(fstep(fstate, b))
  pstate, _ = jax.block_until_ready(pstep(pstate, b))
  times: dict[str, list[float]] = {"float": [], "pams": []}
  for _ in range(reps):
    t = time.perf_counter()
    fstate, _ = jax.block_until_ready(fstep(fstate, b))
    times["float"].append(time.perf_counter() - t)
    t = time.perf_counter()
    pstate, _ = jax.block_until_ready(pstep(pstate, b))
    times["pams"].append(time.perf_counter() - t)
  _report(f"train step EDSR-baseline x4 batch {batch} LR {lr_patch}px {bits}-bit", times,
          [("pams", "float")])


def _psnr(a: jax.Array, b: jax.Array) -> float:
  mse = float(jnp.mean((jnp.clip(a, 0, 255) - jnp.clip(b, 0, 255)) ** 2))
  return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def serving(reps: int, bits: int, size: int = 128) -> float:
  """Float vs fake-quant vs integer serving; returns float / int8_rest (min over min)."""
  x = jax.random.uniform(jax.random.key(0), (1, size, size, 3)) * 255
  fp = edsr.edsr_baseline(scale=4)
  student = edsr.edsr_baseline(scale=4, layers=edsr.pams_layers(bits=bits))
  fvars = fp.init(jax.random.key(1), x)
  svars = student.init(jax.random.key(1), x)
  svars = {"params": pams.student_from_teacher(svars["params"], fvars["params"]),
           quantizers.CALIB_COLLECTION: svars[quantizers.CALIB_COLLECTION]}
  # Calibrated alphas (one calibration pass), as after the first PAMS epoch.
  _, upd = jax.jit(lambda v, x: student.apply(v, x, mutable=[quantizers.CALIB_COLLECTION]))(
      svars, x)
  sparams = quantizers.calibrated_params(svars["params"], upd[quantizers.CALIB_COLLECTION])
  exported = quant.export_int8({"params": sparams}, student, x)
  # conv1 (float input in the fake-quant block) served weight-only: equal to fake-quant.
  exact = quant.export_int8({"params": sparams}, student, x, unquantized_inputs="float")
  # Beyond the paper: body_end and the upsampler convs in int8 too (alphas from this input).
  rest = quant.export_int8({"params": sparams}, student, x, int8_float_convs=_INT8_REST)
  float_fn = jax.jit(lambda v, x: fp.apply(v, x))
  fq_fn = jax.jit(lambda p, x: student.apply({"params": p}, x))
  int_fn = jax.jit(quant.serve_int8)
  want = fq_fn(sparams, x)
  outs = {k: int_fn(e, x) for k, e in (("int8", exported), ("int8_conv1w", exact),
                                        ("int8_rest", rest))}
  diffs = ", ".join(f"{k} max {float(jnp.max(jnp.abs(o - want))):.3f} PSNR "
                    f"{_psnr(o, want):.1f} dB" for k, o in outs.items())
  sizes = quant.int8_sizes(exported)
  print(f"serving {bits}-bit EDSR-baseline x4, LR {size}x{size}, native AMX conv "
        f"{'on' if int8_conv.available() else 'off'}: vs fake-quant (of 255): {diffs}; body "
        f"{sizes['float_bytes'] / 2**20:.2f} MiB float32 -> "
        f"{sizes['int_bytes'] / 2**20:.2f} MiB ({sizes['ratio']:.2f}x, kernels "
        f"{sizes['kernel_ratio']:.1f}x); float layers left {sizes['rest_float_bytes'] / 2**20:.2f}"
        " MiB", flush=True)
  fns = {"float": (float_fn, (fvars, x)), "fakequant": (fq_fn, (sparams, x)),
         "int8": (int_fn, (exported, x)), "int8_conv1w": (int_fn, (exact, x)),
         "int8_rest": (int_fn, (rest, x))}
  for fn, args in fns.values():
    jax.block_until_ready(fn(*args))
  times: dict[str, list[float]] = {k: [] for k in fns}
  for _ in range(reps):
    for k, (fn, args) in fns.items():
      t = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times[k].append(time.perf_counter() - t)
  _report(f"serve EDSR-baseline x4 {size}x{size} {bits}-bit", times,
          [("float", "int8"), ("fakequant", "int8"), ("float", "int8_conv1w"),
           ("float", "int8_rest")])
  return min(times["float"]) / min(times["int8_rest"])


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--reps", type=int, default=5)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--lr-patch", type=int, default=48)
  parser.add_argument("--bits", type=int, default=8)
  parser.add_argument("--only", choices=("all", "train", "serve"), default="all")
  parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256],
                      help="LR sizes served; the last gives the final ratio line")
  parser.add_argument("--torch", action="store_true",
                      help="also time PyTorch's float and quantized int8 EDSR (the peer)")
  args = parser.parse_args()
  print(f"backend {jax.default_backend()}, devices {jax.devices()}", flush=True)
  ratio = None
  if args.only in ("all", "serve"):
    for size in args.sizes:
      ratio = serving(args.reps, args.bits, size)
      if args.torch:
        pams_torch.run(size, args.reps)
  if args.only in ("all", "train"):
    train_step(args.reps, args.batch, args.lr_patch, args.bits)
  if ratio is not None:
    print(f"int8 serving = body + body_end + upsampler in int8 ({_INT8_REST!r}); float / int8 "
          f"at LR {args.sizes[-1]}:")
    print(f"ratio {ratio:.2f}")


if __name__ == "__main__":
  main()
