"""Convolution gradients at top level vs inside loop bodies: XLA's own paths vs jaxcompress.ops.conv.

XLA:CPU rewrites `jax.vjp`'s gradient convolutions into the channel-last form its Eigen kernels
take only in the entry computation; inside a `lax.scan` / `fori_loop` body (on-device epochs,
PGD attacks, unrolled inner loops) they fall to a naive loop nest. Grouped (depthwise)
convolutions have no fast XLA:CPU kernel anywhere. This script times, in one interleaved run:

  * dense 3x3 conv, 128x16x16, 32->32: forward + both gradients;
  * depthwise 3x3 conv, 128x16x16x32: forward + both gradients;
  * PGD-7 (`jaxcompress.robust.attacks.pgd`) on a float ResNet-20, batch 128, 32x32x3;
  * the PC-DARTS digits search step (`configs/pc_darts/digits_search.py`: bilevel step of the
    8-op supernet, 2-channel partial-channel ops, depthwise separable and dilated convs);

each at top level and as 4 iterations of a `lax.scan` (per iteration), with the conv
implementation "lax" (`lax.conv_general_dilated` and its autodiff: XLA's own paths) and "auto"
(the library default). Columns: compile + first call (s), then ms per call best / median, and
lax/auto of the best times (> 1: the library is faster).

Usage:
  python benchmarks/conv_loops.py [--reps 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcompress.models import factory, resnet_cifar
from jaxcompress.ops import conv as conv_ops
from jaxcompress.robust import attacks

NHWC = ("NHWC", "HWIO", "NHWC")
LOOP = 4


def conv_grad_case(groups: int) -> tuple[Callable[..., Any], tuple[jax.Array, ...]]:
  """Forward + both gradients of a 3x3 conv (dense when groups == 1, else depthwise)."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((128, 16, 16, 32)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((3, 3, 32 // groups, 32)) * 0.1, jnp.float32)

  def step(x, w):
    conv = lambda a, b: conv_ops.conv_general_dilated(a, b, (1, 1), "SAME",
                                                      dimension_numbers=NHWC,
                                                      feature_group_count=groups)
    dx, dw = jax.grad(lambda a, b: jnp.sum(jnp.sin(conv(a, b))), argnums=(0, 1))(x, w)
    return x - 1e-3 * dx, w - 1e-3 * dw
  return step, (x, w)


def pgd_case() -> tuple[Callable[..., Any], tuple[jax.Array, ...]]:
  """PGD-7 on a float ResNet-20 (the attack's input gradients run inside a fori_loop)."""
  model = resnet_cifar.ResNet20(num_classes=10, layers=factory.FLOAT)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(size=(128, 32, 32, 3)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 10, 128))
  variables = model.init(jax.random.key(0), x, train=False)

  def step(x):
    adv = attacks.pgd(lambda z: model.apply(variables, z, train=False), x, y, num_steps=7,
                      rng=jax.random.key(0))
    return (adv,)
  return step, (x,)


def pc_darts_case() -> tuple[Callable[..., Any], tuple[Any, ...]]:
  """The bilevel train step of the PC-DARTS digits search (architecture step on)."""
  from configs.pc_darts import digits_search  # pylint: disable=g-import-not-at-top
  from jaxcompress import methods  # pylint: disable=g-import-not-at-top
  from jaxcompress.data import pipeline, sources  # pylint: disable=g-import-not-at-top
  cfg = digits_search.get_config()
  src = sources.get("digits", "train")
  f = cfg.data.search_split
  train, val = sources.SubsetSource(src, 0.0, f), sources.SubsetSource(src, f, 1.0)
  spe = pipeline.steps_per_epoch(len(train), cfg.data.batch_size)
  method = methods.get(cfg.method)(cfg, steps_per_epoch=spe, total_steps=8 * spe)
  ds = pipeline.train_dataset(train, global_batch_size=cfg.data.batch_size, num_steps=1, seed=0,
                              options=pipeline.ImageOptions.from_config(cfg.data), val_source=val)
  batch = jax.device_put(ds[0])
  state = jax.jit(lambda r, b: method.init(r, b))(jax.random.key(0), batch)
  state = state.replace(step=jnp.asarray(10 * spe, state.step.dtype))  # past the warm-up
  return (lambda s, b: (method.train_step(s, b)[0], b)), (state, batch)


def compiled(step: Callable[..., Any], args: tuple[Any, ...], impl: str,
             in_loop: bool) -> tuple[Callable[[], None], float]:
  conv_ops.set_conv_impl(impl)
  if in_loop:
    fn = jax.jit(lambda *a: lax.scan(lambda c, _: (step(*c), None), a, None, length=LOOP)[0])
  else:
    fn = jax.jit(lambda *a: step(*a))  # a fresh function: jit caches by function, not impl
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))  # compile with this impl
  seconds = time.perf_counter() - t0
  conv_ops.set_conv_impl("auto")
  return (lambda: jax.block_until_ready(fn(*args))), seconds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--reps", type=int, default=5)
  args = parser.parse_args()
  cases = {"dense 3x3 32->32 fwd+grads": conv_grad_case(1),
           "depthwise 3x3 x32 fwd+grads": conv_grad_case(32),
           "PGD-7 ResNet-20 b128": pgd_case(),
           "PC-DARTS digits search step": pc_darts_case()}
  print(f"jax {jax.__version__}, {jax.default_backend()}; compile s; ms per call (scan: per "
        f"iteration), best / median of {args.reps} interleaved reps")
  print(f"{'case':30s} {'where':6s} {'compile lax/auto':>17s} {'lax':>17s} {'auto':>17s} "
        f"{'lax/auto':>9s}")
  for name, (step, inputs) in cases.items():
    for in_loop in (False, True):
      if in_loop and name.startswith("PC-DARTS"):
        continue  # one compile of the supernet step is minutes already
      built = {impl: compiled(step, inputs, impl, in_loop) for impl in ("lax", "auto")}
      runners = {impl: run for impl, (run, _) in built.items()}
      compile_cell = f"{built['lax'][1]:7.1f} /{built['auto'][1]:7.1f}"
      times: dict[str, list[float]] = {impl: [] for impl in runners}
      for _ in range(args.reps):
        for impl, run in runners.items():
          t0 = time.perf_counter()
          run()
          times[impl].append((time.perf_counter() - t0) / (LOOP if in_loop else 1) * 1e3)
      cell = {k: f"{min(v):8.1f} /{statistics.median(v):7.1f}" for k, v in times.items()}
      print(f"{name:30s} {'scan' if in_loop else 'top':6s} {compile_cell:>17s} {cell['lax']:>17s} "
            f"{cell['auto']:>17s} {min(times['lax']) / min(times['auto']):9.1f}", flush=True)
  sys.stdout.flush()


if __name__ == "__main__":
  main()
