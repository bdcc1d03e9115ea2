"""The one training engine: `run(config, workdir)` for every method (DESIGN.md section 3).

The engine owns jit, sharding, donation, epoch hooks, evaluation, checkpoints, resumption,
logging and failure handling; a method only supplies pure steps (`jaxcompress.methods.base`).
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcompress import distributed
from jaxcompress import methods as methods_lib
from jaxcompress.data import on_device as on_device_lib
from jaxcompress.data import pipeline, sources, transforms
from jaxcompress.errors import ConfigError, PreemptedError, TrainingDivergedError
from jaxcompress.methods.base import Method
from jaxcompress.train import checkpoint as checkpoint_lib
from jaxcompress.train import compile_options
from jaxcompress.train import logging as logging_lib
from jaxcompress.train import multi_step
from jaxcompress.train import one_shot
from jaxcompress.train.state import TrainState


def _check_workdir(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_test_{os.getpid()}")
    with open(probe, "w", encoding="utf-8") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise ConfigError(f"Workdir {workdir!r} is not writable ({e.strerror}). Pass a --workdir you "
                      "can write to.") from None


def image_options(data_config: ml_collections.ConfigDict) -> pipeline.ImageOptions:
  """The pipeline's ImageOptions from a `config.data` block."""
  return pipeline.ImageOptions(mean=tuple(data_config.mean), std=tuple(data_config.std),
                               crop_padding=data_config.get("crop_padding", 0),
                               flip=data_config.get("flip", False))


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _overrides(method: Method, name: str) -> bool:
  return getattr(type(method), name) is not getattr(Method, name)


class _Preemption:
  """Turns SIGTERM into a flag the loop polls (save, then stop)."""

  def __init__(self):
    self.requested = False
    self._previous = None
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.requested = True

  def restore(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


class _MetricWindow:
  """The per-step training metrics not yet logged, kept on device until a log line needs them.

  Parts are either one step's metrics (host pipeline) or a scan's metrics stacked along a
  leading step axis (`data.on_device`).
  """

  def __init__(self):
    self._parts: list[tuple[Any, bool]] = []

  def add_step(self, metrics: dict[str, jax.Array]) -> None:
    self._parts.append((metrics, False))

  def add_steps(self, metrics: dict[str, jax.Array]) -> None:
    self._parts.append((metrics, True))

  def take_means(self, count: int) -> dict[str, float]:
    """Means over the oldest `count` steps, which leave the window."""
    # Consecutive single steps are stacked on device first: one transfer per metric, not one
    # per metric and step.
    blocks: list[Any] = []
    singles: list[Any] = []
    for tree, stacked in self._parts + [(None, True)]:
      if not stacked:
        singles.append(tree)
        continue
      if singles:
        blocks.append(jax.tree.map(lambda *x: jnp.stack(x), *singles))
        singles = []
      if tree is not None:
        blocks.append(tree)
    merged = jax.tree.map(lambda *x: np.concatenate([np.asarray(v) for v in x]),
                          *jax.device_get(blocks))
    self._parts = []
    rest = jax.tree.map(lambda x: x[count:], merged)
    leaves = jax.tree.leaves(rest)
    if leaves and len(leaves[0]):
      self._parts.append((rest, True))
    return {k: float(np.mean(v[:count])) for k, v in merged.items()}


def evaluate(eval_fn: Any, state: TrainState, eval_ds: Any,
             mesh: jax.sharding.Mesh) -> dict[str, float]:
  """Runs `eval_fn` over every eval batch; returns metric sums divided by the valid count.

  The valid count is summed from the global mask on device: with several processes the padded
  last batch holds different numbers of real examples per process.
  """
  totals: dict[str, jax.Array] = {}
  for local in pipeline.iterate(eval_ds):
    batch = distributed.global_batch(local, mesh)
    metrics = dict(eval_fn(state, batch), _count=_mask_sum(batch["mask"]))
    totals = metrics if not totals else jax.tree.map(jnp.add, totals, metrics)
  totals = jax.device_get(totals)
  count = max(float(totals.pop("_count")), 1.0)
  return {k: float(v) / count for k, v in totals.items()}


@jax.jit
def _mask_sum(mask: jax.Array) -> jax.Array:
  return jnp.sum(mask)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (or resumes) `config` in `workdir`.

  Args:
    config: an experiment config (see configs/).
    workdir: output directory (config.json, metrics.jsonl, summary.txt, checkpoints/, events).

  Returns:
    {"state": final TrainState, "eval": last eval metrics, "steps": total steps}.

  Raises:
    ConfigError, DatasetNotFoundError, CheckpointError: before compiling, with the fix.
    TrainingDivergedError: a non-finite metric; the last good checkpoint is kept.
    PreemptedError: SIGTERM/preemption; a checkpoint of the current step was saved.
  """
  # On a GPU, threefry draws lower to one kernel each while the engine runs: a supernet's init
  # otherwise compiles for minutes (compile_options module docstring).
  with compile_options.gpu_threefry_kernel():
    return _run(config, workdir)


def _run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """`run`'s body (see there)."""
  _check_workdir(workdir)
  step_options = compile_options.step_compiler_options(config)
  method_cls = methods_lib.get(config.method)
  num_devices = config.get("num_devices", -1)
  mesh = distributed.make_mesh(jax.devices()[:num_devices] if num_devices > 0 else None)
  batch_size = config.data.batch_size
  distributed.check_batch_size(batch_size, mesh)
  eval_batch_size = config.data.get("eval_batch_size", batch_size)
  distributed.check_batch_size(eval_batch_size, mesh)
  data_dir = config.data.get("data_dir", None)
  transforms.load_providers()  # registers task-specific sources (e.g. super-resolution sets)
  train_src = sources.get(config.data.name, config.data.train_split, data_dir=data_dir,
                          **config.data.get("source_kwargs", {}))
  eval_src = sources.get(config.data.name, config.data.eval_split, data_dir=data_dir,
                         **config.data.get("source_kwargs", {}))
  val_src = None
  search_fraction = config.data.get("search_split", 0.0)
  if search_fraction:  # bilevel NAS: weights on [0, f) of the train split, architecture on [f, 1)
    val_src = sources.SubsetSource(train_src, search_fraction, 1.0)
    train_src = sources.SubsetSource(train_src, 0.0, search_fraction)
  steps_per_epoch = pipeline.steps_per_epoch(len(train_src), batch_size)
  total_steps = (config.num_steps if config.get("num_steps", -1) > 0
                 else config.num_epochs * steps_per_epoch)
  method = method_cls(config, steps_per_epoch=steps_per_epoch, total_steps=total_steps)
  method.workdir = workdir
  options = image_options(config.data)
  transform_kwargs = dict(config.data.get("transform_kwargs", {}))
  train_fn_example = transforms.get(config.data.get("transform", ""), train=True,
                                    **transform_kwargs)
  eval_fn_example = transforms.get(config.data.get("transform", ""), train=False,
                                   **transform_kwargs)
  pidx, pcount = jax.process_index(), jax.process_count()
  train_ds = pipeline.train_dataset(train_src, global_batch_size=batch_size, num_steps=total_steps,
                                    seed=config.seed, options=options, process_index=pidx,
                                    process_count=pcount, val_source=val_src,
                                    example_fn=train_fn_example)
  eval_ds = pipeline.eval_dataset(eval_src, global_batch_size=eval_batch_size, options=options,
                                  process_index=pidx, process_count=pcount,
                                  example_fn=eval_fn_example)

  replicated = distributed.replicated(mesh)
  batch_sharding = distributed.batch_sharding(mesh)
  scan_fn = device_data = None
  if config.data.get("on_device", False):
    if config.data.get("transform", ""):
      raise ConfigError(f"config.data.on_device does not run per-example transforms (data.transform"
                        f" = {config.data.transform!r}); set config.data.on_device=False.")
    device_data = on_device_lib.put(
        train_src, replicated, val_source=val_src,
        max_bytes=config.data.get("on_device_max_bytes", on_device_lib.DEFAULT_MAX_BYTES))
    stream = on_device_lib.Stream(batch_size, steps_per_epoch, config.seed, options)
    scan_fn = on_device_lib.scan_train_steps(method.train_step, stream,
                                             state_sharding=replicated,
                                             batch_sharding=batch_sharding,
                                             compiler_options=step_options)
  steps_per_call = config.get("steps_per_call", 1)
  if not isinstance(steps_per_call, int) or steps_per_call < 1:
    raise ConfigError(f"config.steps_per_call must be an integer >= 1 (training steps per jitted "
                      f"call of the host pipeline), got {steps_per_call!r}.")
  loop_fn = None
  if scan_fn is None and steps_per_call > 1:
    loop_fn = multi_step.jit_train_steps(
        method.train_step, max_steps=steps_per_call, state_sharding=replicated,
        batch_sharding=batch_sharding,
        stacked_batch_sharding=distributed.stacked_batch_sharding(mesh),
        compiler_options=step_options)
  example = distributed.global_batch(train_ds[0], mesh)
  init_fn = one_shot.jit_once(method.init, out_shardings=replicated)
  train_fn = jax.jit(method.train_step, in_shardings=(replicated, batch_sharding),
                     out_shardings=(replicated, replicated), donate_argnums=0,
                     compiler_options=step_options)
  eval_fn = jax.jit(method.eval_step, in_shardings=(replicated, batch_sharding),
                    out_shardings=replicated, compiler_options=step_options)
  hook_kwargs = dict(out_shardings=replicated, donate_argnums=0, compiler_options=step_options)
  jit_hooks = getattr(method, "jit_hooks", True)
  epoch_start = (None if not _overrides(method, "on_epoch_start") else
                 jax.jit(method.on_epoch_start, **hook_kwargs) if jit_hooks
                 else method.on_epoch_start)
  epoch_end = (None if not _overrides(method, "on_epoch_end") else
               jax.jit(method.on_epoch_end, **hook_kwargs) if jit_hooks
               else method.on_epoch_end)

  main = distributed.is_main_process()
  checkpointer = checkpoint_lib.Checkpointer(workdir, config.get("max_to_keep", 3),
                                             async_save=config.get("async_checkpoint", True))
  state = init_fn(jax.random.key(config.seed), example)
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore(state)
  start_step = int(jax.device_get(state.step))

  if main:
    with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    table = method.summary(jax.tree.map(np.asarray, train_ds[0]))
    with open(os.path.join(workdir, "summary.txt"), "w", encoding="utf-8") as f:
      f.write(table + "\n")
  writer = logging_lib.MetricWriter(workdir, total_steps, start_step, enabled=main,
                                    progress=config.get("progress", "auto"))
  if main and start_step == 0 and table:
    writer.log(table)
  if start_step:
    writer.log(f"Resumed from checkpoint at step {start_step} in {checkpointer.directory}")

  log_every = max(1, config.get("log_every", 50))
  eval_every = config.get("eval_every", -1)
  eval_every = steps_per_epoch if eval_every <= 0 else eval_every
  checkpoint_every = config.get("checkpoint_every", -1)
  checkpoint_every = steps_per_epoch if checkpoint_every <= 0 else checkpoint_every
  scan_steps = config.data.get("scan_steps", -1)
  scan_steps = steps_per_epoch if scan_steps <= 0 else scan_steps
  preemption = _Preemption()
  window = _MetricWindow()
  eval_metrics: dict[str, float] = {}

  def save(current: TrainState) -> None:
    if not bool(jax.device_get(_all_finite(current.params))):
      raise TrainingDivergedError(
          f"Parameters became NaN/inf before step {int(current.step)}; not saving. The last good "
          f"checkpoint is in {checkpointer.directory}. Lower the learning rate.")
    checkpointer.save(current)

  try:
    step = last_logged = start_step
    t_start = time.time()
    batches = None if scan_fn else pipeline.iterate(
        train_ds, start_step, num_workers=config.data.get("num_workers", 0))
    while step < total_steps:
      epoch, in_epoch = divmod(step, steps_per_epoch)
      if in_epoch == 0 and epoch_start is not None:
        state = epoch_start(state, epoch)
      if scan_fn is not None:  # data.on_device: up to the next event in one jitted scan
        end = on_device_lib.chunk_end(step, total_steps=total_steps, max_steps=scan_steps,
                                      boundaries=(steps_per_epoch, eval_every, checkpoint_every))
        state, metrics = scan_fn(state, device_data, epoch, in_epoch, length=end - step)
        window.add_steps(metrics)
      elif loop_fn is not None:  # config.steps_per_call host batches in one jitted loop
        end = on_device_lib.chunk_end(step, total_steps=total_steps, max_steps=steps_per_call,
                                      boundaries=(steps_per_epoch, eval_every, checkpoint_every))
        stack = multi_step.stack_batches([next(batches) for _ in range(end - step)],
                                         steps_per_call)
        state, metrics = loop_fn(state, distributed.global_batches(stack, mesh), end - step)
        window.add_steps(jax.tree.map(lambda m, n=end - step: m[:n], metrics))
      else:
        end = step + 1
        state, metrics = train_fn(state, distributed.global_batch(next(batches), mesh))
        window.add_step(metrics)
      step = end
      writer.advance(step)
      for logged in range(last_logged + 1, step + 1):
        if logged % log_every and logged != total_steps:
          continue
        means = window.take_means(logged - last_logged)
        last_logged = logged
        bad = [k for k, v in means.items() if not np.isfinite(v)]
        if bad:
          checkpointer.wait()
          raise TrainingDivergedError(
              f"Metric {bad[0]!r} is {means[bad[0]]} at step {logged} (epoch "
              f"{(logged - 1) // steps_per_epoch}). Training stopped; the last good checkpoint is "
              f"kept in {checkpointer.directory} (step {checkpointer.latest_step()}). Lower the "
              "learning rate or check the data.")
        means["steps_per_second"] = (step - start_step) / max(time.time() - t_start, 1e-9)
        writer.write(logged, "train", means)
      if (step % steps_per_epoch == 0) and epoch_end is not None:
        state = epoch_end(state, epoch)
      if step % eval_every == 0 or step == total_steps:
        eval_metrics = evaluate(eval_fn, state, eval_ds, mesh)
        writer.write(step, "eval", eval_metrics)
      if step % checkpoint_every == 0 or step == total_steps:
        save(state)
      if preemption.requested or checkpointer.reached_preemption(step):
        save(state)
        checkpointer.wait()
        raise PreemptedError(f"Preempted at step {step}; checkpoint saved in "
                             f"{checkpointer.directory}. Rerun the same command to resume.")
    if start_step >= total_steps:  # a finished run re-launched: just report
      eval_metrics = evaluate(eval_fn, state, eval_ds, mesh)
      writer.write(int(state.step), "eval", eval_metrics)
    extras = method.final_report(state)
    if main and extras:
      with open(os.path.join(workdir, "final_report.json"), "w", encoding="utf-8") as f:
        json.dump(extras, f, indent=2, default=str)
  finally:
    preemption.restore()
    checkpointer.close()
    writer.close()
  return {"state": state, "eval": eval_metrics, "steps": total_steps}
