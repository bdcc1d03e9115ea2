"""CycleGAN costs measured side by side in one process: jaxcompress vs PyTorch, pruned vs full.

1. Training step (`--only train`): the official CycleGAN step (Zhu et al., arXiv 1703.10593;
   junyanz/pytorch-CycleGAN-and-pix2pix `models/cycle_gan_model.py`, `optimize_parameters`):
   forward of G_A and G_B, one Adam step of the generators with D_A and D_B frozen (LSGAN,
   cycle lambda 10, identity 0.5), then one Adam step of the discriminators on the 50-image
   pools' draws; Adam 2e-4 (0.5, 0.999); ResNet generators (ngf 64, 9 blocks) and 70x70
   PatchGANs (ndf 64, 3 layers), batch 1 of A and B. Both sides keep the image pools (50).
     * jaxcompress: `methods.cyclegan.CycleGAN` built from configs/gan/horse2zebra.py, its
       `train_step` jitted as the engine does (`jax.jit(method.train_step, donate_argnums=0)`).
     * torch: the official ResnetGenerator / NLayerDiscriminator / GANLoss / ImagePool and
       step written out below (`models/networks.py`, `util/image_pool.py`), NCHW float32,
       `torch.set_num_threads` = the core count; `--torch-threads 2,1` adds a runner per
       thread count (on a loaded machine PyTorch's OpenMP barriers wait for descheduled
       threads, so fewer threads than cores can be much faster there).
   img/s counts one A and one B image per step (batch 1: one step per pair, as an epoch of the
   official code counts them); ratio = jaxcompress img/s / torch img/s (> 1: jaxcompress faster).
2. Inference (`--only infer`): a materialized (channel-pruned) ResNet generator vs the full one,
   batch 1. The full `models.cyclegan.ResnetGenerator` gets `prune.MaskGate` gates whose masks
   keep a seeded random `--keep` fraction (1/4) of every role's channels (the residual stream's
   gates all keep the same channels, so DMAD's group rule keeps exactly those); `prune.
   materialize` cuts it down. Prints both models' MACs (`summary(..., mac_convention="gan")`),
   the MAC ratio next to the measured time ratio (pruned / full) of jitted forward passes, and
   max |pruned - masked full| (the materialized model equals the masked one).

Every variant is compiled (and run once) before timing; then `--rounds` rounds, each running
every variant `--steps` times, the order reversed every round so that load from other processes
hits all alike; the tables show the median (and best) seconds per step of the rounds. Only
ratios from one run are comparable on a loaded machine.

Usage:
  python benchmarks/gan_step.py [--sizes 128,256] [--rounds 3] [--steps 1] [--only all]
      [--torch-threads <cores>[,1]] [--infer-size 256] [--keep 0.25]
  python benchmarks/gan_step.py --quick      # smoke test: ngf = ndf = 8, 64x64, 2 rounds
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from configs.gan import horse2zebra
from jaxcompress import prune
from jaxcompress.methods.cyclegan import CycleGAN
from jaxcompress.models import cyclegan, factory
from jaxcompress.summary import summary

POOL_SIZE = 50
STEPS_PER_EPOCH = 1334  # horse2zebra trainB: the schedule only needs plausible step counts

Runner = Callable[[], None]


def time_alternating(runners: dict[str, Runner], rounds: int, steps: int) -> dict[str, list[float]]:
  """Seconds per call of each runner, `rounds` rounds of `steps` calls, order reversed each round.

  Args:
    runners: label -> `run()` (one step, blocking until done).
    rounds: rounds; each runs every runner `steps` times.
    steps: calls per runner per round.

  Returns:
    label -> per-round seconds per call.
  """
  times: dict[str, list[float]] = {k: [] for k in runners}
  order = list(runners)
  for _ in range(rounds):
    for label in order:
      run = runners[label]
      t0 = time.perf_counter()
      for _ in range(steps):
        run()
      times[label].append((time.perf_counter() - t0) / steps)
    order.reverse()
  return times


# -- 1. training step: jaxcompress ---------------------------------------------------------------

def make_jax_step(size: int, ngf: int, ndf: int, n_blocks: int) -> Runner:
  """The engine's jitted CycleGAN step at `size`x`size`, compiled and run once.

  Args:
    size: crop size (square RGB images, batch 1).
    ngf: generator width; ndf: discriminator width; n_blocks: residual blocks.

  Returns:
    `run()`: one training step, blocking until its metrics are ready.
  """
  config = horse2zebra.get_config()
  config.model.generator.kwargs.update({"ngf": ngf, "n_blocks": n_blocks})
  config.model.discriminator.kwargs.update({"ndf": ndf})
  config.gan.pool_size = POOL_SIZE
  method = CycleGAN(config, steps_per_epoch=STEPS_PER_EPOCH,
                    total_steps=config.num_epochs * STEPS_PER_EPOCH)
  rng = np.random.default_rng(0)
  batch = {k: jnp.asarray(rng.uniform(-1, 1, (1, size, size, 3)).astype(np.float32))
           for k in ("A", "B")}
  state = [jax.jit(method.init)(jax.random.key(0), batch)]
  step = jax.jit(method.train_step, donate_argnums=0)

  def run() -> None:
    state[0], metrics = step(state[0], batch)
    jax.block_until_ready(metrics)
  run()  # compile
  return run


# -- 1. training step: PyTorch -------------------------------------------------------------------

def make_torch_step(size: int, ngf: int, ndf: int, n_blocks: int,
                    threads: int) -> Runner:
  """The official PyTorch CycleGAN step (module docstring), set up and run once.

  Args:
    size, ngf, ndf, n_blocks: as `make_jax_step`.
    threads: `torch.set_num_threads` while the step runs (set on every call: it is global).

  Returns:
    `run()`: one `optimize_parameters`.
  """
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn as tnn  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  random.seed(0)

  def norm(c: int) -> tnn.Module:  # official norm='instance': affine-free, no running stats
    return tnn.InstanceNorm2d(c, affine=False, track_running_stats=False)

  class ResnetBlock(tnn.Module):
    """`networks.ResnetBlock`: reflection padding, instance norm, no dropout."""

    def __init__(self, dim: int):
      super().__init__()
      self.conv_block = tnn.Sequential(
          tnn.ReflectionPad2d(1), tnn.Conv2d(dim, dim, 3, bias=True), norm(dim), tnn.ReLU(True),
          tnn.ReflectionPad2d(1), tnn.Conv2d(dim, dim, 3, bias=True), norm(dim))

    def forward(self, x):
      return x + self.conv_block(x)

  def resnet_generator() -> tnn.Module:
    """`networks.ResnetGenerator(3, 3, ngf, norm='instance', use_dropout=False, n_blocks)`."""
    layers = [tnn.ReflectionPad2d(3), tnn.Conv2d(3, ngf, 7, bias=True), norm(ngf), tnn.ReLU(True)]
    for i in range(2):
      mult = 2 ** i
      layers += [tnn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=True),
                 norm(ngf * mult * 2), tnn.ReLU(True)]
    layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
    for i in range(2):
      mult = 2 ** (2 - i)
      layers += [tnn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1,
                                     output_padding=1, bias=True),
                 norm(ngf * mult // 2), tnn.ReLU(True)]
    layers += [tnn.ReflectionPad2d(3), tnn.Conv2d(ngf, 3, 7), tnn.Tanh()]
    return tnn.Sequential(*layers)

  def patchgan(n_layers: int = 3) -> tnn.Module:
    """`networks.NLayerDiscriminator(3, ndf, n_layers=3, norm_layer=InstanceNorm2d)`."""
    layers = [tnn.Conv2d(3, ndf, 4, stride=2, padding=1), tnn.LeakyReLU(0.2, True)]
    mult = 1
    for n in range(1, n_layers + 1):
      prev, mult = mult, min(2 ** n, 8)
      layers += [tnn.Conv2d(ndf * prev, ndf * mult, 4, stride=2 if n < n_layers else 1,
                            padding=1, bias=True), norm(ndf * mult), tnn.LeakyReLU(0.2, True)]
    layers += [tnn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
    return tnn.Sequential(*layers)

  def init_weights(net: tnn.Module) -> tnn.Module:  # official init_type='normal', gain 0.02
    for m in net.modules():
      if isinstance(m, (tnn.Conv2d, tnn.ConvTranspose2d)):
        tnn.init.normal_(m.weight, 0.0, 0.02)
        tnn.init.constant_(m.bias, 0.0)
    return net

  class ImagePool:
    """`util/image_pool.py`: 50 stored fakes, half the time one of them replaces the new one."""

    def __init__(self, pool_size: int):
      self.pool_size, self.images = pool_size, []

    def query(self, images):
      out = []
      for image in images:
        image = image.unsqueeze(0)
        if len(self.images) < self.pool_size:
          self.images.append(image)
          out.append(image)
        elif random.uniform(0, 1) > 0.5:
          i = random.randint(0, self.pool_size - 1)
          out.append(self.images[i].clone())
          self.images[i] = image
        else:
          out.append(image)
      return torch.cat(out, 0)

  g_a, g_b = init_weights(resnet_generator()), init_weights(resnet_generator())
  d_a, d_b = init_weights(patchgan()), init_weights(patchgan())
  opt_g = torch.optim.Adam(list(g_a.parameters()) + list(g_b.parameters()), lr=2e-4,
                           betas=(0.5, 0.999))
  opt_d = torch.optim.Adam(list(d_a.parameters()) + list(d_b.parameters()), lr=2e-4,
                           betas=(0.5, 0.999))
  pool_a, pool_b = ImagePool(POOL_SIZE), ImagePool(POOL_SIZE)
  mse, l1 = tnn.MSELoss(), tnn.L1Loss()
  lambda_a = lambda_b = 10.0
  lambda_idt = 0.5

  def gan_loss(pred, real: bool):  # GANLoss('lsgan'): MSE against a ones / zeros target
    return mse(pred, torch.ones_like(pred) if real else torch.zeros_like(pred))

  def set_requires_grad(nets, flag: bool) -> None:
    for net in nets:
      for p in net.parameters():
        p.requires_grad = flag

  def backward_d_basic(net, real, fake):
    loss = (gan_loss(net(real), True) + gan_loss(net(fake.detach()), False)) * 0.5
    loss.backward()
    return loss

  gen = torch.Generator().manual_seed(0)
  real_a = torch.rand(1, 3, size, size, generator=gen) * 2 - 1
  real_b = torch.rand(1, 3, size, size, generator=gen) * 2 - 1

  def run() -> None:
    torch.set_num_threads(threads)
    fake_b = g_a(real_a)
    rec_a = g_b(fake_b)
    fake_a = g_b(real_b)
    rec_b = g_a(fake_a)
    set_requires_grad([d_a, d_b], False)   # generators' step, discriminators frozen
    opt_g.zero_grad()
    loss_idt_a = l1(g_a(real_b), real_b) * lambda_b * lambda_idt
    loss_idt_b = l1(g_b(real_a), real_a) * lambda_a * lambda_idt
    loss_g = (gan_loss(d_a(fake_b), True) + gan_loss(d_b(fake_a), True)
              + l1(rec_a, real_a) * lambda_a + l1(rec_b, real_b) * lambda_b
              + loss_idt_a + loss_idt_b)
    loss_g.backward()
    opt_g.step()
    set_requires_grad([d_a, d_b], True)    # discriminators' step on the pools' draws
    opt_d.zero_grad()
    backward_d_basic(d_a, real_b, pool_b.query(fake_b))
    backward_d_basic(d_b, real_a, pool_a.query(fake_a))
    opt_d.step()
  run()
  return run


def bench_train(sizes: list[int], ngf: int, ndf: int, n_blocks: int, rounds: int,
                steps: int, torch_threads: list[int]) -> None:
  """Part 1: prints one table row per size and framework, and the ratios."""
  import torch  # pylint: disable=g-import-not-at-top
  print(f"CycleGAN training step (G_A, G_B, D_A, D_B; LSGAN, pools {POOL_SIZE}), ngf {ngf}, "
        f"ndf {ndf}, {n_blocks} blocks, batch 1; {rounds} alternating rounds x {steps} steps; "
        f"jax {jax.__version__} ({jax.default_backend()}, {os.cpu_count()} CPUs), torch "
        f"{torch.__version__}", flush=True)
  print(f"{'size':>5s} {'framework':18s} {'s/step med':>11s} {'s/step best':>12s} "
        f"{'img/s med':>10s} {'img/s best':>11s}", flush=True)
  for size in sizes:
    t0 = time.perf_counter()
    runners = {"jaxcompress": make_jax_step(size, ngf, ndf, n_blocks)}
    setup = {"jaxcompress": time.perf_counter() - t0}
    for n in torch_threads:
      t0 = time.perf_counter()
      runners[f"torch {n} thread{'s' if n > 1 else ''}"] = make_torch_step(
          size, ngf, ndf, n_blocks, n)
      setup[list(runners)[-1]] = time.perf_counter() - t0
    times = time_alternating(runners, rounds, steps)
    med = {k: statistics.median(t) for k, t in times.items()}
    best = {k: min(t) for k, t in times.items()}
    for label in runners:
      print(f"{size:5d} {label:18s} {med[label]:11.3f} {best[label]:12.3f} "
            f"{1 / med[label]:10.3f} {1 / best[label]:11.3f}")
    for label in list(runners)[1:]:
      print(f"{size:5d} ratio jaxcompress/{label} img/s: median "
            f"{med[label] / med['jaxcompress']:.3f} (best {best[label] / best['jaxcompress']:.3f})")
    print(f"{size:5d} setup + first step (s): " + ", ".join(
        f"{k} {v:.1f}" for k, v in setup.items()) + " (jaxcompress: init + compile)", flush=True)


# -- 2. inference: materialized generator vs the full one ----------------------------------------

def random_masks(model: cyclegan.ResnetGenerator, keep: float, seed: int
                 ) -> dict[str, np.ndarray]:
  """+-1 masks keeping round(keep * C) seeded random channels of every role (at least one).

  The residual stream's gates ("down2_gate" and every "block{b}/gate2") share one choice, so
  the group rule (a stream channel lives if any gate keeps it) keeps exactly that fraction.
  """
  rng = np.random.default_rng(seed)
  widths = model.layer_widths()
  masks = {}
  for role, r in model.prune_spec().roles.items():
    on = np.zeros(widths[role], bool)
    on[rng.choice(widths[role], max(1, round(keep * widths[role])), replace=False)] = True
    for g in r.gates:
      masks[g] = np.where(on, 1.0, -1.0).astype(np.float32)
  return masks


def bench_infer(size: int, ngf: int, n_blocks: int, keep: float, rounds: int,
                steps: int) -> None:
  """Part 2: prints MACs, widths, times and the ratios of the pruned and the full generator."""
  x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (1, size, size, 3)), jnp.float32)
  gated = cyclegan.ResnetGenerator(ngf=ngf, n_blocks=n_blocks,
                                   layers=factory.FLOAT.replace(gate=prune.MaskGate))
  variables = gated.init(jax.random.key(0), x)
  masks = random_masks(gated, keep, seed=0)
  small, small_vars = prune.materialize(gated, {"params": variables["params"]}, masks)
  full = cyclegan.ResnetGenerator(ngf=ngf, n_blocks=n_blocks)
  # The full model's weights: the gated model's without its masks (the values do not matter
  # for time; sharing them makes the masked-equality check below cheap to build).
  flat = traverse_util.flatten_dict(variables["params"], sep="/")
  full_vars = {"params": traverse_util.unflatten_dict(
      {k: v for k, v in flat.items() if not k.endswith("/mask")}, sep="/")}

  # The reference: the full model gated by the binary masks the materialized one equals.
  ref = full.clone(layers=factory.FLOAT.replace(gate=factory.ChannelGate))
  eff = prune.effective_masks(gated, masks)
  ref_params = traverse_util.unflatten_dict(
      {k: (jnp.asarray(eff[k[:-len("/mask")]]) if k.endswith("/mask") else v)
       for k, v in flat.items()}, sep="/")
  y_ref = jax.jit(ref.apply)({"params": ref_params}, x)

  fwd_full, fwd_small = jax.jit(full.apply), jax.jit(small.apply)
  y_small = fwd_small(small_vars, x)
  jax.block_until_ready(fwd_full(full_vars, x))
  err = float(jnp.max(jnp.abs(y_small - y_ref)))

  spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
  macs_full = summary(full, spec, mac_convention="gan").total_macs
  macs_small = summary(small, spec, mac_convention="gan").total_macs
  n_full = sum(v.size for v in jax.tree.leaves(full_vars))
  n_small = sum(v.size for v in jax.tree.leaves(small_vars))

  times = time_alternating(
      {"full": lambda: jax.block_until_ready(fwd_full(full_vars, x)),
       "pruned": lambda: jax.block_until_ready(fwd_small(small_vars, x))}, rounds, steps)
  med = {k: statistics.median(t) for k, t in times.items()}
  best = {k: min(t) for k, t in times.items()}

  widths = small.layer_widths()
  shown = {k: widths[k] for k in ("stem", "down1", "down2", "block0/conv1", "up1", "up2")}
  print(f"\nResnetGenerator inference, ngf {ngf}, {n_blocks} blocks, batch 1, {size}x{size}, "
        f"jitted apply; masks keep {keep:g} of each role (seeded); {rounds} alternating rounds "
        f"x {steps} forwards")
  print(f"pruned widths: {shown}")
  print(f"{'model':8s} {'MACs (gan)':>12s} {'params':>10s} {'ms med':>9s} {'ms best':>9s}")
  for label, macs, n in (("full", macs_full, n_full), ("pruned", macs_small, n_small)):
    print(f"{label:8s} {macs / 1e9:10.3f} G {n / 1e6:8.3f} M {med[label] * 1e3:9.1f} "
          f"{best[label] * 1e3:9.1f}")
  print(f"pruned/full: MAC ratio {macs_small / macs_full:.4f}, time ratio median "
        f"{med['pruned'] / med['full']:.4f} (best {best['pruned'] / best['full']:.4f}), "
        f"speed-up median {med['full'] / med['pruned']:.2f}x vs {macs_full / macs_small:.2f}x "
        f"by MACs; max |pruned - masked full| {err:.2e}", flush=True)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", default="128,256", help="training crop sizes, comma-separated")
  parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
  parser.add_argument("--steps", type=int, default=1, help="steps per variant per round")
  parser.add_argument("--infer-size", type=int, default=256, help="inference image size")
  parser.add_argument("--infer-steps", type=int, default=3,
                      help="forward passes per model per round (inference)")
  parser.add_argument("--keep", type=float, default=0.25,
                      help="fraction of each role's channels the pruned generator keeps")
  parser.add_argument("--ngf", type=int, default=64)
  parser.add_argument("--ndf", type=int, default=64)
  parser.add_argument("--blocks", type=int, default=9, help="residual blocks of the generators")
  parser.add_argument("--torch-threads", default=str(os.cpu_count() or 1),
                      help="comma-separated torch.set_num_threads values, one torch runner each "
                      "(default: the core count)")
  parser.add_argument("--only", default="all", choices=("all", "train", "infer"))
  parser.add_argument("--quick", action="store_true",
                      help="smoke test: ngf = ndf = 8, 64x64 training and inference, 2 rounds")
  args = parser.parse_args(argv)
  if not 0 < args.keep <= 1:
    parser.error(f"--keep must be in (0, 1], got {args.keep}")
  if args.quick:
    args.ngf, args.ndf, args.sizes, args.infer_size = 8, 8, "64", 64
    args.rounds, args.steps, args.infer_steps = 2, 1, 1
  sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
  if args.only in ("all", "train"):
    bench_train(sizes, args.ngf, args.ndf, args.blocks, args.rounds, args.steps,
                [int(n) for n in args.torch_threads.split(",") if n.strip()])
  if args.only in ("all", "infer"):
    bench_infer(args.infer_size, args.ngf, args.blocks, args.keep, args.rounds, args.infer_steps)
  sys.stdout.flush()


if __name__ == "__main__":
  main()
