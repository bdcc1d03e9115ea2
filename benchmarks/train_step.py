"""Training-step throughput: jaxcompress CIFAR ResNet-20 vs an equivalent PyTorch model.

One step = forward in train mode (batch statistics), softmax cross-entropy, backward, SGD with
momentum 0.9 and weight decay 5e-4, batch-norm running-stat update. Batch 128 of 32x32x3.
Every variant runs `--reps` times interleaved (A B C A B C ...) so that load from other
processes on the machine hits all of them alike; the table shows img/s at the best and the
median repetition, and the last line is `ratio <jaxcompress/torch>` of the best repetitions.

"jaxcompress" runs the steps as the engine does for the host pipeline: `config.steps_per_call`
(default 8) host batches stacked and trained by one jitted loop (`jaxcompress/train/
multi_step.py`); "1 step per call" is one jitted call per step (`--steps-per-call 1` alone, or
the `ratio 1 step per call` line). Every runner performs the same number of steps per run.
Where the native weight-gradient kernel is in use (`jaxcompress/ops/native_conv.py`, one CPU
device), "XLA weight gradients" is the same engine path with XLA's blocked weight-gradient
convolutions instead (`JAXCOMPRESS_NATIVE=0`'s path), in the same run.

Usage:
  python benchmarks/train_step.py --model resnet20 [--reps 10] [--steps 1] [--compare]
      [--steps-per-call 8]
"""
from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import time
from typing import Any, Callable
from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import common
from jaxcompress import distributed
from jaxcompress.models import factory, resnet_cifar
from jaxcompress.ops import batch_norm as bn_ops
from jaxcompress.ops import conv as conv_ops
from jaxcompress.ops import native_conv, xla_cpu
from jaxcompress.quant import rotation
from jaxcompress.train import multi_step

BATCH = 128
NUM_CLASSES = 10


def model_layers(model_name: str) -> factory.Layers:
  """The library's layer set for `model_name` ("resnet20": float, "rbnn_resnet20": RBNN)."""
  if model_name == "resnet20":
    return factory.FLOAT
  if model_name == "rbnn_resnet20":
    return factory.get("rbnn")
  raise ValueError(f"Unknown model {model_name!r}; expected resnet20 or rbnn_resnet20.")


# The library's state before the Eigen-convolution change (jaxcompress/ops/xla_cpu.py): XLA's
# default YNNPACK convolutions (+ its reductions) and the conv plan tuned for them. A variant of
# `--compare`, so that before and after are measured in one interleaved run.
YNN_CONVS = {"xla_cpu_experimental_ynn_fusion_type":
             "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION,LIBRARY_FUSION_TYPE_REDUCE"}


# Label of the runner whose weight gradients run on XLA instead of `native_conv` (same run).
XLA_DW = "XLA weight gradients"


def step_fn(model: nn.Module, consts: dict[str, Any],
            tx: optax.GradientTransformation) -> Callable[..., Any]:
  """The un-jitted training step `(params, batch_stats, opt_state, x, y) -> (..., loss)`.

  Args:
    model: the ResNet-20.
    consts: variable collections other than params and batch_stats (constant within a step).
    tx: the optimizer.

  Returns:
    The step function, returning new params, batch stats, optimizer state and the loss.
  """
  def step(params, batch_stats, opt_state, x, y):
    def loss_fn(p):
      logits, updates = model.apply({"params": p, "batch_stats": batch_stats, **consts}, x,
                                    train=True, mutable=["batch_stats"])
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      return loss, updates["batch_stats"]
    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_stats, opt_state, loss
  return step


def repeat_steps(run: Callable[[], Any], count: int) -> Callable[[], Any]:
  """`run` (one step) called `count` times per call, marked with `steps_per_run = count`."""
  def run_many() -> None:
    for _ in range(count):
      run()
  run_many.steps_per_run = count
  return run_many


def make_jax_step(layers: factory.Layers, label: str, impl: str = "auto",
                  ynn_convs: bool = False, steps_per_call: int = 1
                  ) -> tuple[Callable[[], Any], str]:
  """Builds a jitted ResNet-20 training step and returns a closure running it.

  Args:
    layers: the layer set the model is built from.
    label: name printed in the table.
    impl: conv implementation ("auto", "lax", "matmul"), fixed at trace time.
    ynn_convs: compile with YNNPACK convolutions and the conv plan tuned for them (the
      previous default) instead of the process's XLA flags.
    steps_per_call: > 1: the engine's `config.steps_per_call` path instead of one jitted call
      per step: that many host batches stacked (`multi_step.stack_batches`), put on the device
      and trained by one `multi_step.jit_train_steps` call, as `train/loop.py` does.

  Returns:
    (run, label): `run()` performs `run.steps_per_run` steps (1, or `steps_per_call`) and
    blocks until they are done.
  """
  conv_ops.set_conv_impl(impl)
  model = resnet_cifar.ResNet20(num_classes=NUM_CLASSES, layers=layers)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((BATCH, 32, 32, 3), dtype=np.float32))
  y = jnp.asarray(rng.integers(0, NUM_CLASSES, BATCH))
  variables = model.init(jax.random.key(0), x, train=False)
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  # Other collections (RBNN's rotations and surrogate schedule) are constants within a step.
  consts = {k: v for k, v in variables.items() if k not in ("params", "batch_stats")}
  tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.1, momentum=0.9))
  opt_state = tx.init(params)

  options = YNN_CONVS if ynn_convs else None
  if steps_per_call > 1:
    run = _engine_steps(step_fn(model, consts, tx), (params, batch_stats, opt_state),
                        {"image": np.asarray(x), "label": np.asarray(y)}, steps_per_call,
                        options)
  else:
    # Donating params / state lets XLA update them in place instead of allocating every step.
    step = jax.jit(step_fn(model, consts, tx), donate_argnums=(0, 1, 2),
                   compiler_options=options)
    state = [params, batch_stats, opt_state]

    def run() -> None:
      p, s, o, loss = step(state[0], state[1], state[2], x, y)
      state[:] = [p, s, o]
      loss.block_until_ready()
    run.steps_per_run = 1

  with mock.patch.object(xla_cpu, "eigen_convolutions", return_value=not ynn_convs) \
      if ynn_convs else contextlib.nullcontext():
    run()  # compile (the conv plan is chosen while tracing)
  conv_ops.set_conv_impl("auto")
  return run, label


def _engine_steps(step: Callable[..., Any], state: Any, host_batch: dict[str, np.ndarray],
                  steps_per_call: int, compiler_options: dict[str, Any] | None
                  ) -> Callable[[], Any]:
  """`steps_per_call` steps per call through the engine's own multi-step code."""
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), (distributed.DATA_AXIS,))

  def method_step(state, batch):
    p, s, o, loss = step(*state, batch["image"], batch["label"])
    return (p, s, o), {"loss": loss}

  loop_fn = multi_step.jit_train_steps(
      method_step, max_steps=steps_per_call, state_sharding=distributed.replicated(mesh),
      batch_sharding=distributed.batch_sharding(mesh),
      stacked_batch_sharding=distributed.stacked_batch_sharding(mesh),
      compiler_options=compiler_options)
  # Committed to the loop's state sharding, as the engine's jitted init leaves it: an
  # uncommitted first state would make the second call compile again, outside any patches that
  # `make_patched_steps` applied while the first call traced.
  holder = [jax.device_put(state, distributed.replicated(mesh))]

  def run() -> None:
    # The host side of the engine's call: stack the batches, put them on the device.
    stack = multi_step.stack_batches([host_batch] * steps_per_call, steps_per_call)
    holder[0], metrics = loop_fn(holder[0], distributed.global_batches(stack, mesh),
                                 steps_per_call)
    metrics["loss"].block_until_ready()
  run.steps_per_run = steps_per_call
  return run


def make_patched_steps(layers: factory.Layers,
                       variants: dict[str, tuple[tuple[Any, str, Any], ...]],
                       steps_per_call: int = 1) -> list[tuple[Callable[[], Any], str]]:
  """One jitted step per variant, each traced with its `mock.patch.object` patches applied.

  Args:
    layers: the layer set the model is built from.
    variants: label -> (object, attribute, replacement) patches ("before" code of a change).
    steps_per_call: steps per jitted call (`make_jax_step`).

  Returns:
    (run, label) pairs (`make_jax_step`), in the order of `variants`.
  """
  runners = []
  for label, patches in variants.items():
    with contextlib.ExitStack() as stack:
      # The step is traced (and the patches read) during make_jax_step's compiling call.
      for obj, attr, value in patches:
        stack.enter_context(mock.patch.object(obj, attr, value))
      runners.append(make_jax_step(layers, label, steps_per_call=steps_per_call))
  return runners


def make_torch_step(model_name: str, device: str = "cpu") -> tuple[Callable[[], Any], str]:
  """The same step in PyTorch (CPU: 2 threads, NCHW, oneDNN convolutions; or CUDA)."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn as tnn  # pylint: disable=g-import-not-at-top
  if device == "cpu":
    torch.set_num_threads(2)
  else:
    torch.backends.cudnn.benchmark = True
  torch.manual_seed(0)

  class Block(tnn.Module):
    """Basic block with the option-A shortcut (stride-2 subsample + zero channel padding)."""

    def __init__(self, cin: int, cout: int, stride: int, binary: bool):
      super().__init__()
      conv = BinConv2d if binary else tnn.Conv2d
      self.conv1 = conv(cin, cout, 3, stride, 1, bias=False)
      self.bn1 = tnn.BatchNorm2d(cout)
      self.conv2 = conv(cout, cout, 3, 1, 1, bias=False)
      self.bn2 = tnn.BatchNorm2d(cout)
      self.stride, self.pad = stride, cout - cin
      self.act = tnn.Hardtanh() if binary else tnn.ReLU()

    def forward(self, x):
      sc = x
      if self.stride != 1:
        sc = sc[:, :, ::self.stride, ::self.stride]
      if self.pad:
        sc = tnn.functional.pad(sc, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
      y = self.act(self.bn1(self.conv1(x)))
      return self.act(self.bn2(self.conv2(y)) + sc)

  class RBNNSign(torch.autograd.Function):
    """sign() with RBNN's training-aware surrogate gradient k * max(0, sqrt(2) t - t^2 |x|)."""

    @staticmethod
    def forward(ctx, x, k, t):
      ctx.save_for_backward(x)
      ctx.k, ctx.t = k, t
      return torch.sign(x)

    @staticmethod
    def backward(ctx, g):
      (x,) = ctx.saved_tensors
      surrogate = torch.clamp(math.sqrt(2) * ctx.t - ctx.t ** 2 * x.abs(), min=0)
      return ctx.k * surrogate * g, None, None

  class BinConv2d(tnn.Conv2d):
    """RBNN's official BinarizeConv2d forward: standardised weights and activations, bi-rotated
    weights mixed by |sin theta|, sign with the tanh surrogate, conv, times alpha."""

    def __init__(self, *args, **kwargs):
      super().__init__(*args, **kwargs)
      cout, cin, kh, kw = self.weight.shape
      self.a, self.b = rotation.rotation_shape(cin * kh * kw)
      self.register_buffer("r1", torch.linalg.qr(torch.randn(self.a, self.a))[0])
      self.register_buffer("r2", torch.linalg.qr(torch.randn(self.b, self.b))[0])
      self.rotate = tnn.Parameter(torch.full((cout, 1, 1, 1), math.pi / 2))
      self.alpha = tnn.Parameter(torch.rand(cout, 1, 1) * 0.1)
      self.k, self.t = 100.0, 0.01

    def forward(self, x):
      w = self.weight
      w1 = w - w.mean(dim=(1, 2, 3), keepdim=True)
      w2 = w1 / w1.std(dim=(1, 2, 3), keepdim=True)
      a1 = x - x.mean(dim=(1, 2, 3), keepdim=True)
      a2 = a1 / a1.std(dim=(1, 2, 3), keepdim=True)
      rotated = (self.r1.t() @ w2.view(w.shape[0], self.a, self.b) @ self.r2).view_as(w)
      w3 = w2 + torch.abs(torch.sin(self.rotate)) * (rotated.detach() - w2)
      bw = RBNNSign.apply(w3, self.k, self.t)
      ba = RBNNSign.apply(a2, 1.0, max(self.t, 1.0))
      out = tnn.functional.conv2d(ba, bw, None, self.stride, self.padding)
      return out * self.alpha

  class ResNet20(tnn.Module):

    def __init__(self, binary: bool):
      super().__init__()
      self.stem = tnn.Conv2d(3, 16, 3, 1, 1, bias=False)
      self.bn = tnn.BatchNorm2d(16)
      blocks, cin = [], 16
      for stage, width in enumerate((16, 32, 64)):
        for b in range(3):
          blocks.append(Block(cin, width, 2 if stage > 0 and b == 0 else 1, binary))
          cin = width
      self.blocks = tnn.Sequential(*blocks)
      self.fc = tnn.Linear(64, NUM_CLASSES)

    def forward(self, x):
      x = torch.relu(self.bn(self.stem(x)))
      x = self.blocks(x)
      return self.fc(x.mean(dim=(2, 3)))

  model = ResNet20(binary=model_name == "rbnn_resnet20").to(device)
  model.train()
  opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
  x = torch.randn(BATCH, 3, 32, 32, device=device)
  y = torch.randint(0, NUM_CLASSES, (BATCH,), device=device)
  loss_fn = tnn.CrossEntropyLoss()

  def run() -> None:
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
    if device != "cpu":
      torch.cuda.synchronize()

  run()
  run.steps_per_run = 1
  return run, "torch"


def time_interleaved(runners: list[tuple[Callable[[], Any], str]], reps: int,
                     steps: int) -> dict[str, list[float]]:
  """Seconds per step of each runner, `reps` rounds of `steps` runs, runners interleaved.

  Args:
    runners: (run, label) pairs; `run()` performs `run.steps_per_run` steps (default 1).
    reps: rounds; each round runs every runner once, in order, so load hits all alike.
    steps: calls of `run` per runner per round.

  Returns:
    label -> per-round seconds per step.
  """
  times: dict[str, list[float]] = {label: [] for _, label in runners}
  for _ in range(reps):
    for run, label in runners:
      t0 = time.perf_counter()
      for _ in range(steps):
        run()
      times[label].append((time.perf_counter() - t0) / (steps * getattr(run, "steps_per_run", 1)))
  return times


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="resnet20", choices=("resnet20", "rbnn_resnet20"))
  parser.add_argument("--reps", type=int, default=10, help="interleaved repetitions")
  parser.add_argument("--steps", type=int, default=1,
                      help="runs per runner per repetition (each run: --steps-per-call steps)")
  parser.add_argument("--compare", action="store_true",
                      help="also time the previous default (YNNPACK convolutions), plain flax "
                      "(nn.Conv + nn.BatchNorm) and each jaxcompress.ops layer separately, to "
                      "attribute the speed-up")
  parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                      help="where the PyTorch model runs (JAX uses its default backend)")
  parser.add_argument("--steps-per-call", type=int, default=common.base_config().steps_per_call,
                      help="training steps per jitted call, as the engine runs the host pipeline "
                      "(config.steps_per_call; default: the configs' default). The table also "
                      "shows one call per step; every runner does this many steps per run")
  args = parser.parse_args(argv)

  layers = model_layers(args.model)
  k = max(1, args.steps_per_call)
  runners = [make_jax_step(layers, "jaxcompress", steps_per_call=k)]
  if k > 1:
    one, _ = make_jax_step(layers, "1 step per call")
    runners.append((repeat_steps(one, k), "1 step per call"))
  if jax.default_backend() == "cpu" and native_conv.available():
    # XLA's weight gradient (native kernel off): the blocked XLA convolution instead of the
    # native kernel, same steps per call.
    runners += make_patched_steps(
        layers, {XLA_DW: ((conv_ops, "_native_dw_applies", lambda *a, **kw: False),)}, k)
  if args.compare:
    # Plain flax: nn.Conv wherever the layer set uses jaxcompress.ops.conv.Conv, nn.BatchNorm.
    plain = {f: nn.Conv for f in ("conv", "first_conv") if getattr(layers, f) is conv_ops.Conv}
    if jax.default_backend() == "cpu":
      # The previous default: YNNPACK convolutions, their conv plan, flax's BatchNorm.
      runners.append(make_jax_step(layers.replace(norm=nn.BatchNorm), "previous default",
                                   ynn_convs=True))
    runners.append(make_jax_step(layers.replace(norm=nn.BatchNorm, **plain), "flax baseline"))
    runners.append(make_jax_step(layers.replace(norm=nn.BatchNorm), "ops.conv + nn.BatchNorm"))
    runners.append(make_jax_step(layers.replace(norm=bn_ops.BatchNorm),
                                 "ops.conv + ops.BatchNorm"))
  torch_run, torch_label = make_torch_step(args.model, args.device)
  runners.append((repeat_steps(torch_run, k) if k > 1 else torch_run, torch_label))
  times = time_interleaved(runners, args.reps, args.steps)

  print(f"{args.model} training step, batch {BATCH}, {jax.default_backend()} "
        f"({args.reps} interleaved reps x {args.steps} runs of {k} steps; jaxcompress: {k} "
        f"steps per jitted call)")
  print(f"{'variant':24s} {'img/s best':>11s} {'img/s median':>13s}")
  best, med = {}, {}
  for label, ts in times.items():
    best[label], med[label] = BATCH / min(ts), BATCH / statistics.median(ts)
    print(f"{label:24s} {best[label]:11.1f} {med[label]:13.1f}")
  # The ratio uses the best repetition: on a loaded 2-core machine PyTorch's OpenMP threads
  # lose far more than XLA's under contention (medians fell to 1/7 of the best for torch, 2/3
  # for JAX, in the same run), so median ratios mostly measure the load, not the code.
  if "1 step per call" in best:
    print(f"ratio 1 step per call {best['1 step per call'] / best['torch']:.3f} "
          f"(median {med['1 step per call'] / med['torch']:.3f})")
  if XLA_DW in best:
    print(f"ratio {XLA_DW} {best[XLA_DW] / best['torch']:.3f} "
          f"(median {med[XLA_DW] / med['torch']:.3f}); native kernel speed-up "
          f"{best['jaxcompress'] / best[XLA_DW]:.3f}")
  print(f"median ratio {med['jaxcompress'] / med['torch']:.3f} (load-sensitive)")
  print(f"ratio {best['jaxcompress'] / best['torch']:.3f}")
  sys.stdout.flush()


if __name__ == "__main__":
  main()
