"""Re-ID benchmarks, CPU: ResNet-50 training step and feature extraction vs PyTorch; k-means.

1. `step`: the re-ID ResNet-50 of MEB-Net / DDAN (`jaxcompress.methods.mebnet_nets.ReidNet` over
   `ReidResNet`: torchvision's ResNet-50 with the last stride 1, global average pooling, an
   affine-free-offset BN neck and a bias-free classifier over the 751 Market-1501 identities) on
   256 x 128 images, one training step = forward in train mode, softmax cross-entropy, backward,
   SGD with momentum 0.9 and weight decay 5e-4; and feature extraction (eval-mode forward,
   images/s). The PyTorch model has the same layers, strides and parameter count (checked),
   NCHW in channels-last memory format; runners interleaved in one process (A B A B ...), so load
   from other processes hits both alike. The last lines are `ratio <jaxcompress / torch>` of the
   best repetitions (> 1: jaxcompress is faster).
2. `kmeans`: `jaxcompress.reid.kmeans` (jitted, k-means++ seeding, a fixed number of Lloyd
   iterations) against scikit-learn's `KMeans` (k-means++, one init, Lloyd, the same iterations,
   tolerance 0) on the features of a Market-1501-sized target set (12,936 x 2,048, L2-normalised,
   drawn around 700 hidden identities) with MEB-Net's 500 clusters: inertia ratio and time.

Usage:
  python benchmarks/reid.py [--batch 64] [--reps 3] [--kmeans-iters 100] [--only step|kmeans]
      [--quick]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_step  # noqa: E402  (the interleaved timing loop)

from jaxcompress import reid  # noqa: E402
from jaxcompress.methods import mebnet_nets  # noqa: E402

NUM_IDS = 751


def make_jax_runners(batch: int, h: int, w: int) -> tuple[list[tuple[Callable, str]], int]:
  """(train step, feature extraction) closures of the jaxcompress ResNet-50 re-ID net."""
  model = mebnet_nets.ReidNet(backbone=mebnet_nets.ReidResNet(), num_classes=NUM_IDS)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((batch, h, w, 3), dtype=np.float32))
  y = jnp.asarray(rng.integers(0, NUM_IDS, batch))
  variables = model.init(jax.random.key(0), x[:1], train=False)
  params, stats = variables["params"], variables["batch_stats"]
  tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.1, momentum=0.9))

  def step(params, stats, opt_state, x, y):
    def loss_fn(p):
      out, upd = model.apply({"params": p, "batch_stats": stats}, x, train=True,
                             mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(out["logits"], y).mean(), upd
    (loss, upd), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), upd["batch_stats"], opt_state, loss

  jstep = jax.jit(step, donate_argnums=(0, 1, 2))
  state = [params, stats, tx.init(params)]

  def run_step() -> None:
    p, s, o, loss = jstep(state[0], state[1], state[2], x, y)
    state[:] = [p, s, o]
    loss.block_until_ready()

  extract = jax.jit(lambda v, x: model.apply(v, x, train=False)["feature"])

  def run_extract() -> None:
    extract({"params": state[0], "batch_stats": state[1]}, x).block_until_ready()

  count = int(sum(np.size(a) for a in jax.tree.leaves(params)))
  run_step()
  run_extract()
  return [(run_step, "jaxcompress step"), (run_extract, "jaxcompress features")], count


def make_torch_runners(batch: int, h: int, w: int) -> tuple[list[tuple[Callable, str]], int]:
  """The same network and step in PyTorch (2 threads, channels-last)."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn as tnn  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count() or 1)
  torch.manual_seed(0)

  class Bottleneck(tnn.Module):
    def __init__(self, cin: int, planes: int, stride: int):
      super().__init__()
      self.conv1 = tnn.Conv2d(cin, planes, 1, bias=False)
      self.bn1 = tnn.BatchNorm2d(planes)
      self.conv2 = tnn.Conv2d(planes, planes, 3, stride, 1, bias=False)
      self.bn2 = tnn.BatchNorm2d(planes)
      self.conv3 = tnn.Conv2d(planes, 4 * planes, 1, bias=False)
      self.bn3 = tnn.BatchNorm2d(4 * planes)
      self.down = None
      if stride != 1 or cin != 4 * planes:
        self.down = tnn.Sequential(tnn.Conv2d(cin, 4 * planes, 1, stride, bias=False),
                                   tnn.BatchNorm2d(4 * planes))

    def forward(self, x):
      r = x if self.down is None else self.down(x)
      y = torch.relu(self.bn1(self.conv1(x)))
      y = torch.relu(self.bn2(self.conv2(y)))
      return torch.relu(self.bn3(self.conv3(y)) + r)

  class ReidResNet50(tnn.Module):
    def __init__(self):
      super().__init__()
      self.stem = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
      self.bn = tnn.BatchNorm2d(64)
      self.pool = tnn.MaxPool2d(3, 2, 1)
      blocks, cin = [], 64
      for stage, n in enumerate((3, 4, 6, 3)):
        planes = 64 * 2**stage
        for b in range(n):
          stride = 1 if stage in (0, 3) or b > 0 else 2  # last stride 1
          blocks.append(Bottleneck(cin, planes, stride))
          cin = 4 * planes
      self.blocks = tnn.Sequential(*blocks)
      self.neck = tnn.BatchNorm1d(2048)
      self.neck.bias.requires_grad_(False)
      self.classifier = tnn.Linear(2048, NUM_IDS, bias=False)

    def features(self, x):
      return self.blocks(self.pool(self.bn(self.stem(x)))).mean(dim=(2, 3))

    def forward(self, x):
      return self.classifier(self.neck(self.features(x)))

  model = ReidResNet50().to(memory_format=torch.channels_last)
  opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1,
                        momentum=0.9, weight_decay=5e-4)
  x = torch.randn(batch, 3, h, w).contiguous(memory_format=torch.channels_last)
  y = torch.randint(0, NUM_IDS, (batch,))

  def run_step() -> None:
    model.train()
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()

  def run_extract() -> None:
    model.eval()
    with torch.no_grad():
      torch.nn.functional.normalize(model.neck(model.features(x)))

  run_step()
  run_extract()
  # The neck's frozen offset is not a parameter of the JAX BN neck (use_bias=False).
  count = sum(p.numel() for p in model.parameters() if p.requires_grad)
  return [(run_step, "torch step"), (run_extract, "torch features")], count


def bench_step(batch: int, reps: int) -> None:
  import torch  # pylint: disable=g-import-not-at-top
  h, w = 256, 128
  jax_runners, jax_count = make_jax_runners(batch, h, w)
  torch_runners, torch_count = make_torch_runners(batch, h, w)
  if jax_count != torch_count:
    raise SystemExit(f"parameter counts differ: jax {jax_count:,}, torch {torch_count:,}")
  runners = [jax_runners[0], torch_runners[0], jax_runners[1], torch_runners[1]]
  times = train_step.time_interleaved(runners, reps, 1)
  print(f"ResNet-50 re-ID (last stride 1, BN neck, {NUM_IDS} ids), batch {batch} of {h}x{w}, "
        f"{jax_count:,} parameters, {jax.default_backend()}, {os.cpu_count()} cores; jax "
        f"{jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads); "
        f"{reps} interleaved reps")
  print(f"{'runner':22s} {'images/s best':>14s} {'images/s median':>16s} {'s best':>8s}")
  best = {k: batch / min(v) for k, v in times.items()}
  med = {k: batch / statistics.median(v) for k, v in times.items()}
  for k, v in times.items():
    print(f"{k:22s} {best[k]:14.2f} {med[k]:16.2f} {min(v):8.3f}")
  for what in ("step", "features"):
    print(f"ratio {what} {best[f'jaxcompress {what}'] / best[f'torch {what}']:.3f} (median "
          f"{med[f'jaxcompress {what}'] / med[f'torch {what}']:.3f})")


def reid_features(n: int, dim: int, ids: int, seed: int = 0) -> np.ndarray:
  """L2-normalised features around `ids` random identity centres (a re-ID target set)."""
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((ids, dim)).astype(np.float32)
  x = centres[rng.integers(0, ids, n)] + 1.5 * rng.standard_normal((n, dim)).astype(np.float32)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def bench_kmeans(n: int, dim: int, k: int, iterations: int) -> None:
  import sklearn  # pylint: disable=g-import-not-at-top
  from sklearn.cluster import KMeans  # pylint: disable=g-import-not-at-top
  x = reid_features(n, dim, ids=700)
  xj = jnp.asarray(x)
  run: Any = jax.jit(lambda x, key: reid.kmeans(x, k, key, iterations=iterations))
  t0 = time.perf_counter()
  run(xj, jax.random.key(0))[2].block_until_ready()
  first = time.perf_counter() - t0
  t0 = time.perf_counter()
  _, _, inertia = run(xj, jax.random.key(1))
  inertia = float(inertia)
  jax_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  sk = KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=iterations, tol=0.0,
              algorithm="lloyd", random_state=0).fit(x)
  sk_s = time.perf_counter() - t0
  print(f"k-means, {n:,} x {dim:,} float32 features, k = {k}, {iterations} Lloyd iterations, "
        f"k-means++ seeding; jax {jax.__version__}, scikit-learn {sklearn.__version__} "
        f"({sk.n_iter_} iterations run)")
  print(f"jaxcompress: {jax_s:.2f} s (first call with compilation {first:.2f} s), inertia "
        f"{inertia:.2f}")
  print(f"scikit-learn: {sk_s:.2f} s, inertia {sk.inertia_:.2f}")
  # scikit-learn stops once no label changes (tol = 0); the same iteration count for jax:
  same: Any = jax.jit(lambda x, key: reid.kmeans(x, k, key, iterations=int(sk.n_iter_)))
  same(xj, jax.random.key(0))[2].block_until_ready()
  t0 = time.perf_counter()
  _, _, inertia_same = same(xj, jax.random.key(1))
  inertia_same = float(inertia_same)
  same_s = time.perf_counter() - t0
  print(f"jaxcompress, {sk.n_iter_} iterations: {same_s:.2f} s, inertia {inertia_same:.2f}")
  print(f"inertia ratio jax / sklearn {inertia / sk.inertia_:.4f} ({iterations} iterations), "
        f"{inertia_same / sk.inertia_:.4f} ({sk.n_iter_}); time ratio sklearn / jax at "
        f"{sk.n_iter_} iterations {sk_s / same_s:.3f}")


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--reps", type=int, default=3)
  parser.add_argument("--kmeans-iters", type=int, default=100)
  parser.add_argument("--only", choices=("step", "kmeans"), default=None)
  parser.add_argument("--quick", action="store_true",
                      help="smoke run: batch 2, 1 rep, k-means on 1,000 x 256 with k = 20")
  args = parser.parse_args(argv)
  if args.only in (None, "step"):
    bench_step(2 if args.quick else args.batch, 1 if args.quick else args.reps)
  if args.only in (None, "kmeans"):
    if args.quick:
      bench_kmeans(1000, 256, 20, 10)
    else:
      bench_kmeans(12936, 2048, 500, args.kmeans_iters)
  sys.stdout.flush()


if __name__ == "__main__":
  main()
