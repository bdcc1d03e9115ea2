"""Time to first step: seconds from process start to the end of the first training step, cold.

Each workload runs in a fresh Python process with an empty persistent compilation cache (a new
temporary directory), so every program compiles; the parent measures from the child's launch.
The child builds the method as the engine does (`methods.get(config.method)`), initialises the
state with the engine's `one_shot.jit_once(method.init)`, compiles `method.train_step` (jitted,
state donated) and runs it on synthetic data of the workload's shapes, then times a few steady
steps. Printed per workload: imports (and the method's construction: for pams the float
teacher's init and save), init+warm (the initial state built while the step compiles in a
background thread, as the engine does it: `train.warm_start`), of which init (tracing, compiling
and running the init program) and step comp (tracing, lowering and compiling the step, in the
background thread; the two overlap and share the cores), the first step's call, process
start to the end of the first step, steady seconds per step, minor page faults per steady step,
the first step after a 10-second pause over the next one (`--pause 0` skips it), and the HLO
instructions of the compiled init and step programs (after XLA's optimisation). With
`--warm` each workload runs a second time on the compilation cache its first run filled; with
`--cacheable` the programs are built as `config.cacheable_programs = True` makes the engine build
them: the step traced with convolutions off oneDNN's custom call (so the cache can store it),
both programs compiled without YNNPACK fusions, and the init and step programs (and the initial
state) kept in exported form by `train.program_store`, so that the warm run neither traces nor
compiles them.

Workloads:
  * pc_darts: the PC-DARTS CIFAR-10 search (configs/pc_darts/cifar10_search.py: 8 cells,
    C = 16, 4 nodes, K = 4), 32x32x3, batch 64 + 64 (weights / architecture halves), one device.
  * abandit: the ABanditNAS CIFAR-10 search (configs/abandit_nas/cifar10_search.py: 6 cells of
    10 edges, 9 candidate ops each, PGD-7 adversarial training), batch 128 + 128, one device.
  * pams: the PAMS 8-bit EDSR-baseline x4 student step (configs/pams/edsr_x4_8bit.py; frozen
    float teacher, SKT), batch 16, 48-px LR patches, after the calibration epoch.
  * resnet20: the float ResNet-20 CIFAR classification step (configs/baseline/cifar10_resnet20.py's
    model and optimizer), batch 128.

With `--torch`, the official PC-DARTS code's first search iteration (its PyTorch transcription,
`benchmarks/pc_darts_torch.py`, in a fresh process) is printed beside the PC-DARTS row, then its
steady iteration and the ratio official / jaxcompress of the steady times (above 1: jaxcompress
is faster).

Usage:
  python benchmarks/startup.py [--workloads pc_darts,abandit,pams,resnet20] [--steady 3] [--pause 10]
      [--torch] [--warm] [--cacheable]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOADS = ("pc_darts", "abandit", "pams", "resnet20")


def _pc_darts(batch_size: int):
  """The PC-DARTS CIFAR-10 search config on synthetic CIFAR-shaped data, and one batch."""
  from configs.pc_darts import cifar10_search  # pylint: disable=g-import-not-at-top
  cfg = cifar10_search.get_config()
  cfg.data.name = "synthetic"
  cfg.data.source_kwargs = {"num_examples": 4 * batch_size, "image_shape": (32, 32, 3),
                            "num_classes": 10}
  cfg.data.batch_size = batch_size
  cfg.num_devices = 1
  cfg.nas.arch_start_epoch = 0  # the architecture step is part of the first step
  return cfg, _search_batch(batch_size, "normal")


def _search_batch(batch_size: int, draw: str) -> dict:
  """A seeded CIFAR-shaped search batch: training and validation halves of `batch_size` each,
  pixels from `np.random.Generator.<draw>`."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  pixels = lambda: getattr(rng, draw)(size=(batch_size, 32, 32, 3)).astype(np.float32)  # noqa: E731
  batch = {"image": pixels(), "label": rng.integers(0, 10, batch_size).astype(np.int32),
           "val_image": pixels(), "val_label": rng.integers(0, 10, batch_size).astype(np.int32)}
  return {k: jnp.asarray(v) for k, v in batch.items()}


def _abandit(batch_size: int):
  """The ABanditNAS CIFAR-10 search config on synthetic CIFAR-shaped data, and one batch."""
  from configs.abandit_nas import cifar10_search  # pylint: disable=g-import-not-at-top
  cfg = cifar10_search.get_config()
  cfg.data.batch_size = batch_size
  cfg.num_devices = 1
  return cfg, _search_batch(batch_size, "uniform")  # pixels in [0, 1]: the model normalises


def _pams(batch_size: int, workdir: str):
  """The PAMS 8-bit EDSR-baseline x4 student (a saved random float teacher) and one batch."""
  import jax  # pylint: disable=g-import-not-at-top

  from configs.pams import edsr_teacher_x4, edsr_x4_8bit  # pylint: disable=g-import-not-at-top
  from jaxcompress.methods import pams  # pylint: disable=g-import-not-at-top
  lr = jax.random.uniform(jax.random.key(0), (batch_size, 48, 48, 3)) * 255
  batch = {"lr": lr, "hr": jax.random.uniform(jax.random.key(1), (batch_size, 192, 192, 3)) * 255}
  teacher = pams.SuperResolution(edsr_teacher_x4.get_config(), steps_per_epoch=1000,
                                 total_steps=30000)
  path = os.path.join(workdir, "teacher.msgpack")
  pams.save_params(path, jax.jit(teacher.init)(jax.random.key(2), batch).params)
  cfg = edsr_x4_8bit.get_config()
  cfg.pams.teacher_path = path
  return cfg, batch


def _resnet20(batch_size: int):
  """The float ResNet-20 CIFAR-10 classification config on synthetic data, and one batch."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from configs.baseline import cifar10_resnet20  # pylint: disable=g-import-not-at-top
  cfg = cifar10_resnet20.get_config()
  cfg.num_devices = 1
  rng = np.random.default_rng(0)
  batch = {"image": rng.normal(size=(batch_size, 32, 32, 3)).astype(np.float32),
           "label": rng.integers(0, 10, batch_size).astype(np.int32)}
  return cfg, {k: jnp.asarray(v) for k, v in batch.items()}


def child(name: str, steady: int, pause: float, cacheable: bool) -> None:
  """Runs one workload and prints a JSON line of `time.time()` marks."""
  marks = {"start": time.time()}
  sys.path.insert(0, ROOT)
  import resource  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top

  import jaxcompress  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  from jaxcompress import distributed, methods  # pylint: disable=g-import-not-at-top
  from jaxcompress.train import (  # pylint: disable=g-import-not-at-top
    compile_options,
    loop,
    program_store,
    runners,
    warm_start,
  )
  workdir = tempfile.mkdtemp(prefix="startup_")
  cfg, batch = {"pc_darts": lambda: _pc_darts(64), "abandit": lambda: _abandit(128),
                "pams": lambda: _pams(16, workdir), "resnet20": lambda: _resnet20(128)}[name]()
  cfg.cacheable_programs = cacheable
  method = methods.get(cfg.method)(cfg, steps_per_epoch=100, total_steps=1000)
  marks["imports"] = time.time()
  # As the engine starts (`loop.initial_state`, `runners.OneStepRunner` on a 1-device mesh):
  # the step compiles in a background thread from the initial state's shapes while that state
  # compiles and is built.
  mesh = distributed.make_mesh(jax.devices()[:1])
  batch = distributed.global_batch(batch, mesh)
  step_fn = compile_options.step_tracing(cfg)(method.train_step)
  store = program_store.for_config(cfg)
  key = program_store.run_key(cfg, method, steps_per_epoch=100, total_steps=1000)
  step = runners.one_step_program(step_fn, mesh,
                                  compiler_options=compile_options.step_compiler_options(cfg),
                                  store=None if store is None else (store, key))
  init_fn = loop.init_program(method, mesh, cfg, key)
  rng = jax.random.key(cfg.seed)
  init_start = time.time()
  shapes = warm_start.output_shapes(init_fn, rng, batch)

  def compile_step():
    start = time.time()
    compiled = step.trace(shapes, warm_start.shapes_of(batch)).lower().compile()
    marks["step_compile"] = time.time() - start
    return compiled

  warmup = warm_start.Warmup(compile_step)
  state = init_fn(rng, batch)
  program_store.settle()
  if hasattr(method, "on_epoch_start") and name == "pams":
    state = jax.jit(method.on_epoch_start)(state, 1)  # after calibration: the steady step
  jax.block_until_ready(state)
  marks["init_seconds"] = time.time() - init_start
  warmup.wait()
  marks["init"] = time.time()
  state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  marks["first_step"] = time.time()
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(steady):
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
  marks["steady"] = (time.time() - marks["first_step"]) / max(steady, 1)
  # HLO instructions of the compiled programs (after XLA's optimisation), counted afterwards.
  hlo = lambda compiled: sum(" = " in l for l in compiled.as_text().splitlines())  # noqa: E731
  marks["init_hlo"] = hlo(init_fn.trace(rng, batch).lower().compile())
  marks["step_hlo"] = hlo(warmup.result) if warmup.result is not None else -1
  marks["faults"] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / max(steady, 1)
  if pause > 0:
    times = []
    time.sleep(pause)
    for _ in range(2):
      t = time.time()
      state, metrics = step(state, batch)
      jax.block_until_ready(metrics)
      times.append(time.time() - t)
    marks["after_pause"] = times[0] / times[1]
  print("MARKS " + json.dumps(marks), flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workloads", default=",".join(WORKLOADS))
  parser.add_argument("--steady", type=int, default=3, help="steady steps timed after the first")
  parser.add_argument("--pause", type=float, default=10.0,
                      help="seconds of pause before the after-pause step (0: skip)")
  parser.add_argument("--torch", action="store_true",
                      help="also time the official PC-DARTS code's first iteration (PyTorch)")
  parser.add_argument("--warm", action="store_true",
                      help="run each workload again with the compilation cache of its first run")
  parser.add_argument("--cacheable", action="store_true",
                      help="trace the steps as config.cacheable_programs = True does")
  parser.add_argument("--child", default="", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    child(args.child, args.steady, args.pause, args.cacheable)
    return
  import jax  # pylint: disable=g-import-not-at-top
  print(f"jax {jax.__version__}, {os.cpu_count()} CPUs; empty compilation cache per workload"
        f"{' (warm: the same cache again)' if args.warm else ''}"
        f"{'; cacheable steps' if args.cacheable else ''}")
  print(f"{'workload':15s} {'imports':>8s} {'init+warm':>10s} {'init':>6s} {'step comp':>10s} "
        f"{'1st step':>9s} "
        f"{'start->1st':>11s} {'steady/step':>12s} {'faults/step':>12s} {'pause/next':>11s} "
        f"{'HLO init':>9s} {'HLO step':>9s}")
  first, steady = {}, {}
  for name in args.workloads.split(","):
    with tempfile.TemporaryDirectory() as cache:
      for label in (name, f"{name} warm")[:2 if args.warm else 1]:
        env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": cache}
        launched = time.time()
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", name,
                              "--steady", str(args.steady), "--pause", str(args.pause)]
                             + ["--cacheable"] * args.cacheable,
                             env=env, capture_output=True, text=True, check=False)
        lines = [l for l in out.stdout.splitlines() if l.startswith("MARKS ")]
        if out.returncode or not lines:
          print(f"{label}: failed (exit {out.returncode})\n{out.stderr[-2000:]}")
          break
        m = json.loads(lines[-1][len("MARKS "):])
        first[label] = m["first_step"] - launched
        steady.setdefault(name, m["steady"])
        print(f"{label:15s} {m['imports'] - launched:8.1f} {m['init'] - m['imports']:10.1f} "
              f"{m['init_seconds']:6.1f} {m.get('step_compile', float('nan')):10.1f} "
              f"{m['first_step'] - m['init']:9.1f} {first[label]:11.1f} "
              f"{m['steady']:12.3f} {m['faults']:12.0f} "
              f"{m.get('after_pause', float('nan')):11.2f} {m['init_hlo']:9d} "
              f"{m['step_hlo']:9d}", flush=True)
  if "pc_darts" in first and args.torch:
    # The official code's first search iteration (import, build, first arch + weight step) in
    # a fresh process: its PyTorch transcription in benchmarks/pc_darts_torch.py.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import pc_darts_torch  # pylint: disable=g-import-not-at-top
    print(f"pc_darts official PyTorch code, first iteration: "
          f"{pc_darts_torch.first_iteration_seconds(64):.1f} s", flush=True)
    # Its steady iteration in this process, after the jaxcompress children have exited.
    step = pc_darts_torch.build(64)
    step()
    times = []
    for _ in range(max(args.steady, 1)):
      t = time.time()
      step()
      times.append(time.time() - t)
    print(f"pc_darts official PyTorch code, steady iteration: {min(times):.3f} s (best of "
          f"{len(times)}); official / jaxcompress steady time: "
          f"{min(times) / steady['pc_darts']:.2f}", flush=True)
  if "pc_darts" in first:
    print(f"first_step_seconds {first['pc_darts']:.1f}")


if __name__ == "__main__":
  main()
