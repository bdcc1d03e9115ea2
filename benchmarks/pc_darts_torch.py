"""The PyTorch peer of jaxcompress's PC-DARTS search step: the official search network, timed.

A re-implementation (not a copy) of the CIFAR-10 search network and search iteration of the
official PC-DARTS code, https://github.com/yuhuixu1993/PC-DARTS:
  * `operations.py`: the 8 primitives of `genotypes.py` (none, max_pool_3x3,
    avg_pool_3x3 with count_include_pad=False, skip_connect = identity or FactorizedReduce on
    stride 2, sep_conv_3x3/5x5, dil_conv_3x3/5x5), every op BatchNorm with affine=False;
  * `model_search.py`: the partial-channel MixedOp (K = 4: the first C/4 channels go through
    the ops weighted by softmax(alpha), the rest bypass them, through a 2x2 max pool on stride-2
    edges, then concat and a 4-group channel shuffle; pools followed by an affine-free
    BatchNorm), the Cell (preprocess0 = FactorizedReduce after a reduction cell, else
    ReLU-1x1 conv-BN; preprocess1 = ReLU-1x1 conv-BN; 4 steps, 14 edges; node i = sum_j
    softmax(beta_i)_j * edge_ij(state_j), the edge normalisation; output = concat of the last 4
    states) and the Network (C = 16, 8 cells, 3x3 conv stem to 3C + BatchNorm, reduction cells at
    layers // 3 and 2 * layers // 3, global average pool + linear, 10 classes; alphas (14, 8)
    and betas (14,) for normal and reduction cells, initialised 1e-3 * randn);
  * `architect.py` + `train_search.py` (first order, `--unrolled` off, an iteration after the
    architecture updates have started at epoch 15): the architect step, Adam(lr 6e-4, betas
    (0.5, 0.999), weight decay 1e-3) on the alphas and betas from the loss on a validation batch,
    then the weight step, SGD(lr 0.1, momentum 0.9, weight decay 3e-4) with gradient-norm clip 5
    on a training batch; model in train mode.

Inputs are a fixed, seeded synthetic batch (64 training + 64 validation 32x32x3 images with
labels), built once, so no data loading or augmentation is timed.

What it prints:
  * first iteration: measured in a fresh Python process (this script with `--child`, started by
    `subprocess`), from just before `import torch` to the loss of the first search iteration as
    a float: `import torch`, building the network, the two optimisers and the synthetic batch,
    and the first iteration (arch step + weight step) with all of PyTorch's one-time work in it
    (allocator warm-up, oneDNN primitive creation, lazy optimiser state). Interpreter start-up
    and importing this module (standard library only) are not in it; the wall time of the
    whole child process, which includes them, is printed beside it;
  * steady state: in this process, after one untimed warm-up iteration, the seconds of each of
    `--steps` further iterations, min and median;
  * the PyTorch version and its intra-op thread count (PyTorch's default, the number of
    physical cores, unless `--threads` is given) and the 1-minute load average. Keep the thread
    count at or below the idle cores: with a core busy elsewhere, PyTorch's OpenMP threads wait
    on each other at every op (on a 2-core machine with one core taken, 2 threads made a batch-8
    iteration about 40x slower than 1 thread).

Usage:
  python benchmarks/pc_darts_torch.py [--batch 64] [--steps 3] [--threads N]
  python benchmarks/pc_darts_torch.py --check   # batch 8: finite loss, alphas/betas move

From Python: `build(batch_size, threads)()` runs one search iteration and returns its loss;
`first_iteration_seconds(batch_size)` runs the fresh-process measurement.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

PRIMITIVES = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
              "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")

SEED = 2  # `train_search.py`'s default --seed.
_CHILD_PREFIX = "PC_DARTS_TORCH_CHILD "


def _make_network(torch: Any, c: int = 16, num_classes: int = 10, layers: int = 8,
                  steps: int = 4, multiplier: int = 4, stem_multiplier: int = 3,
                  k: int = 4) -> Any:
  """Returns the PC-DARTS search network of `model_search.py` as a `torch.nn.Module`.

  The module classes are defined here so that importing this file does not import torch.

  Args:
    torch: the imported `torch` module.
    c: initial channels (`--init_channels`).
    num_classes: classifier outputs.
    layers: number of cells (`--layers`).
    steps: intermediate nodes per cell.
    multiplier: number of last states concatenated as a cell's output.
    stem_multiplier: stem output channels / `c`.
    k: partial-channel proportion: 1 / k of the channels go through the mixed op.

  Returns:
    The network, with `arch_parameters()` returning [alphas_normal, alphas_reduce,
    betas_normal, betas_reduce] (leaf tensors, not registered as module parameters, as in the
    official code).
  """
  nn = torch.nn

  class Zero(nn.Module):
    """The `none` op: zeros of the (strided) input's shape."""

    def __init__(self, stride: int):
      super().__init__()
      self.stride = stride

    def forward(self, x):
      if self.stride == 1:
        return x.mul(0.0)
      return x[:, :, ::self.stride, ::self.stride].mul(0.0)

  class FactorizedReduce(nn.Module):
    """ReLU, two offset 1x1 stride-2 convs to half the channels each, concat, BatchNorm."""

    def __init__(self, c_in: int, c_out: int):
      super().__init__()
      assert c_out % 2 == 0
      self.relu = nn.ReLU()
      self.conv_a = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
      self.conv_b = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
      self.bn = nn.BatchNorm2d(c_out, affine=False)

    def forward(self, x):
      x = self.relu(x)
      return self.bn(torch.cat([self.conv_a(x), self.conv_b(x[:, :, 1:, 1:])], dim=1))

  def relu_conv_bn(c_in: int, c_out: int) -> Any:
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c_in, c_out, 1, bias=False),
                         nn.BatchNorm2d(c_out, affine=False))

  def depthwise_separable(ch: int, size: int, stride: int, padding: int, dilation: int) -> list:
    return [nn.ReLU(),
            nn.Conv2d(ch, ch, size, stride=stride, padding=padding, dilation=dilation,
                      groups=ch, bias=False),
            nn.Conv2d(ch, ch, 1, bias=False),
            nn.BatchNorm2d(ch, affine=False)]

  def make_op(name: str, ch: int, stride: int) -> Any:
    if name == "none":
      return Zero(stride)
    if name == "max_pool_3x3":
      return nn.Sequential(nn.MaxPool2d(3, stride=stride, padding=1),
                           nn.BatchNorm2d(ch, affine=False))
    if name == "avg_pool_3x3":
      return nn.Sequential(nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
                           nn.BatchNorm2d(ch, affine=False))
    if name == "skip_connect":
      return nn.Identity() if stride == 1 else FactorizedReduce(ch, ch)
    size = int(name[-1])
    if name.startswith("sep_conv"):  # two depthwise-separable blocks, the first strided.
      return nn.Sequential(*depthwise_separable(ch, size, stride, size // 2, 1),
                           *depthwise_separable(ch, size, 1, size // 2, 1))
    if name.startswith("dil_conv"):  # one dilation-2 depthwise-separable block.
      return nn.Sequential(*depthwise_separable(ch, size, stride, size - 1, 2))
    raise ValueError(f"unknown primitive {name}")

  class PartialMixedOp(nn.Module):
    """Weighted sum of all primitives on the first 1/k channels; the rest bypass; shuffle."""

    def __init__(self, ch: int, stride: int):
      super().__init__()
      self.part = ch // k
      self.ops = nn.ModuleList(make_op(name, self.part, stride) for name in PRIMITIVES)
      self.bypass = nn.MaxPool2d(2, 2) if stride == 2 else nn.Identity()

    def forward(self, x, weights):
      active, rest = x[:, :self.part], x[:, self.part:]
      mixed = sum(w * op(active) for w, op in zip(weights, self.ops))
      out = torch.cat([mixed, self.bypass(rest)], dim=1)
      n, ch, h, w = out.shape  # channel shuffle with k groups.
      return out.view(n, k, ch // k, h, w).transpose(1, 2).contiguous().view(n, ch, h, w)

  class Cell(nn.Module):
    """`steps` nodes, each the beta-weighted sum of mixed ops on all earlier states."""

    def __init__(self, c_pp: int, c_p: int, ch: int, reduction: bool, reduction_prev: bool):
      super().__init__()
      self.reduction = reduction
      self.preprocess0 = (FactorizedReduce(c_pp, ch) if reduction_prev
                          else relu_conv_bn(c_pp, ch))
      self.preprocess1 = relu_conv_bn(c_p, ch)
      self.edges = nn.ModuleList(
          PartialMixedOp(ch, 2 if reduction and j < 2 else 1)
          for i in range(steps) for j in range(2 + i))

    def forward(self, s0, s1, op_weights, edge_weights):
      states = [self.preprocess0(s0), self.preprocess1(s1)]
      offset = 0
      for _ in range(steps):
        node = sum(edge_weights[offset + j] * self.edges[offset + j](h, op_weights[offset + j])
                   for j, h in enumerate(states))
        offset += len(states)
        states.append(node)
      return torch.cat(states[-multiplier:], dim=1)

  class Network(nn.Module):
    """Stem, `layers` cells (two of them reduction cells), global pool, linear classifier."""

    def __init__(self):
      super().__init__()
      c_curr = stem_multiplier * c
      self.stem = nn.Sequential(nn.Conv2d(3, c_curr, 3, padding=1, bias=False),
                                nn.BatchNorm2d(c_curr))
      c_pp, c_p, c_curr = c_curr, c_curr, c
      self.cells = nn.ModuleList()
      reduction_prev = False
      for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        if reduction:
          c_curr *= 2
        self.cells.append(Cell(c_pp, c_p, c_curr, reduction, reduction_prev))
        reduction_prev = reduction
        c_pp, c_p = c_p, multiplier * c_curr
      self.global_pooling = nn.AdaptiveAvgPool2d(1)
      self.classifier = nn.Linear(c_p, num_classes)
      n_edges = sum(2 + i for i in range(steps))
      self.alphas_normal = (1e-3 * torch.randn(n_edges, len(PRIMITIVES))).requires_grad_()
      self.alphas_reduce = (1e-3 * torch.randn(n_edges, len(PRIMITIVES))).requires_grad_()
      self.betas_normal = (1e-3 * torch.randn(n_edges)).requires_grad_()
      self.betas_reduce = (1e-3 * torch.randn(n_edges)).requires_grad_()

    def arch_parameters(self) -> list:
      return [self.alphas_normal, self.alphas_reduce, self.betas_normal, self.betas_reduce]

    @staticmethod
    def _edge_weights(betas):
      """Softmax of the betas over the incoming edges of each node, concatenated."""
      parts, start = [], 0
      for i in range(steps):
        parts.append(torch.softmax(betas[start:start + 2 + i], dim=-1))
        start += 2 + i
      return torch.cat(parts)

    def forward(self, x):
      s0 = s1 = self.stem(x)
      for cell in self.cells:  # weights recomputed per cell, as in the official forward.
        if cell.reduction:
          op_w = torch.softmax(self.alphas_reduce, dim=-1)
          edge_w = self._edge_weights(self.betas_reduce)
        else:
          op_w = torch.softmax(self.alphas_normal, dim=-1)
          edge_w = self._edge_weights(self.betas_normal)
        s0, s1 = s1, cell(s0, s1, op_w, edge_w)
      return self.classifier(self.global_pooling(s1).flatten(1))

  return Network()


@dataclasses.dataclass
class Search:
  """A built search: the network, its architecture tensors and the one-iteration function."""
  model: Any
  arch_parameters: list
  step: Callable[[], float]


def setup(batch_size: int = 64, threads: int | None = None, seed: int = SEED) -> Search:
  """Builds network, optimisers and a seeded synthetic batch; see `build`."""
  import torch  # pylint: disable=import-outside-toplevel

  if threads:
    torch.set_num_threads(threads)
  torch.manual_seed(seed)
  model = _make_network(torch)
  model.train()
  arch = model.arch_parameters()
  weight_opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
  arch_opt = torch.optim.Adam(arch, lr=6e-4, betas=(0.5, 0.999), weight_decay=1e-3)
  criterion = torch.nn.CrossEntropyLoss()
  gen = torch.Generator().manual_seed(seed)
  x_train = torch.randn(batch_size, 3, 32, 32, generator=gen)
  y_train = torch.randint(0, 10, (batch_size,), generator=gen)
  x_valid = torch.randn(batch_size, 3, 32, 32, generator=gen)
  y_valid = torch.randint(0, 10, (batch_size,), generator=gen)

  def step() -> float:
    model.train()
    # Architect step (first order): Adam on alphas/betas from the validation loss.
    arch_opt.zero_grad()
    criterion(model(x_valid), y_valid).backward()
    arch_opt.step()
    # Weight step: SGD with momentum and gradient-norm clipping on the training batch. As in
    # the official code, its backward also fills the (unused) alpha/beta gradients.
    weight_opt.zero_grad()
    loss = criterion(model(x_train), y_train)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    weight_opt.step()
    return float(loss.item())

  return Search(model=model, arch_parameters=arch, step=step)


def build(batch_size: int = 64, threads: int | None = None) -> Callable[[], float]:
  """Builds the search network, both optimisers and a fixed synthetic batch (seeded).

  Args:
    batch_size: images in each of the training and validation batches.
    threads: PyTorch intra-op threads; None keeps PyTorch's default (the physical cores).

  Returns:
    A function that runs one full search iteration (architect step on the validation batch,
    then weight step on the training batch) and returns the training loss as a float.
  """
  return setup(batch_size, threads).step


def _child(batch_size: int, threads: int | None) -> None:
  """The fresh-process measurement; prints one JSON line of seconds after `_CHILD_PREFIX`."""
  already = "torch" in sys.modules
  t0 = time.perf_counter()
  import torch  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  t1 = time.perf_counter()
  step = build(batch_size, threads)
  t2 = time.perf_counter()
  loss = step()
  t3 = time.perf_counter()
  print(_CHILD_PREFIX + json.dumps({
      "import_s": t1 - t0, "build_s": t2 - t1, "first_step_s": t3 - t2, "total_s": t3 - t0,
      "loss": loss, "torch_preimported": already}), flush=True)


def first_iteration_breakdown(batch_size: int = 64, threads: int | None = None) -> dict:
  """Runs `--child` in a fresh Python process; returns its seconds by phase.

  Keys: import_s (`import torch`), build_s (`build`), first_step_s (the first iteration),
  total_s (their sum: from just before `import torch` to the first loss), process_s (wall time
  of the whole child process as seen from here, interpreter start-up and exit included) and
  loss.
  """
  cmd = [sys.executable, os.path.abspath(__file__), "--child", "--batch", str(batch_size)]
  if threads:
    cmd += ["--threads", str(threads)]
  t = time.perf_counter()
  out = subprocess.run(cmd, check=True, capture_output=True, text=True)
  process_s = time.perf_counter() - t
  line = [ln for ln in out.stdout.splitlines() if ln.startswith(_CHILD_PREFIX)][-1]
  result = json.loads(line[len(_CHILD_PREFIX):])
  result["process_s"] = process_s
  return result


def first_iteration_seconds(batch_size: int = 64, threads: int | None = None) -> float:
  """Seconds a user waits for the first search iteration in a fresh process.

  From just before `import torch` to the first iteration's loss: importing torch, building the
  network, optimisers and synthetic batch, and the first iteration. Interpreter start-up is not
  included (see `first_iteration_breakdown` for the whole process's wall time).
  """
  return first_iteration_breakdown(batch_size, threads)["total_s"]


def _check(threads: int | None) -> None:
  """Batch 8, one iteration: the loss is finite and every architecture tensor moved."""
  import math  # pylint: disable=import-outside-toplevel

  search = setup(batch_size=8, threads=threads)
  before = [p.detach().clone() for p in search.arch_parameters]
  loss = search.step()
  moved = [float((p.detach() - b).abs().max()) for p, b in zip(search.arch_parameters, before)]
  n_params = sum(p.numel() for p in search.model.parameters())
  print(f"check: loss {loss:.4f} (finite {math.isfinite(loss)}), weights {n_params}, max |change| "
        f"alphas_normal {moved[0]:.2e} alphas_reduce {moved[1]:.2e} betas_normal "
        f"{moved[2]:.2e} betas_reduce {moved[3]:.2e}", flush=True)
  if not (math.isfinite(loss) and all(m > 0 for m in moved)):
    raise SystemExit("check failed")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=64, help="training = validation batch size")
  parser.add_argument("--steps", type=int, default=3, help="timed steady-state iterations")
  parser.add_argument("--threads", type=int, default=None,
                      help="PyTorch intra-op threads (default: PyTorch's, the physical cores)")
  parser.add_argument("--check", action="store_true",
                      help="only the quick sanity check (batch 8, one iteration)")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    _child(args.batch, args.threads)
    return
  if args.check:
    _check(args.threads)
    return

  first = first_iteration_breakdown(args.batch, args.threads)
  print(f"first iteration (fresh process, batch {args.batch}+{args.batch}): "
        f"{first['total_s']:.2f} s = import torch {first['import_s']:.2f} + build "
        f"{first['build_s']:.2f} + first step {first['first_step_s']:.2f}; whole process "
        f"{first['process_s']:.2f} s; loss {first['loss']:.4f}", flush=True)

  import torch  # pylint: disable=import-outside-toplevel

  step = build(args.batch, args.threads)
  step()  # warm-up, untimed.
  times, loss = [], float("nan")
  for _ in range(args.steps):
    t = time.perf_counter()
    loss = step()
    times.append(time.perf_counter() - t)
  print(f"steady iteration (arch step + weight step): min {min(times):.3f} s, median "
        f"{statistics.median(times):.3f} s over {args.steps}; last loss {loss:.4f}", flush=True)
  print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} intra-op threads, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)
  print(f"first_iteration_s {first['total_s']:.3f} steady_s_min {min(times):.3f} "
        f"steady_s_median {statistics.median(times):.3f}", flush=True)


if __name__ == "__main__":
  main()
