"""The one training engine: `run(config, workdir)` for every method.

`run` reads top-down: build the data, the mesh, the method and the state; run the steps (through
one of the runners of `jaxcompress.train.runners`); evaluate (the evaluators of `config.evals`);
report. A config with `stages` is an ordered list of such runs (`jaxcompress.train.stages`).

The engine owns jit, sharding, donation, epoch hooks, evaluation, checkpoints, resumption,
logging and failure handling; a method only supplies pure steps (`jaxcompress.methods.base`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcompress import distributed
from jaxcompress import methods as methods_lib
from jaxcompress.data import augment, pipeline, sources, transforms
from jaxcompress.data import on_device as on_device_lib
from jaxcompress.errors import ConfigError, PreemptedError, TrainingDivergedError
from jaxcompress.methods.base import HookContext, Method
from jaxcompress.train import checkpoint as checkpoint_lib
from jaxcompress.train import (
  compile_options,
  evaluation,
  one_shot,
  program_store,
  runners,
  sampling,
  warm_start,
)
from jaxcompress.train import logging as logging_lib
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


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


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

  Each part holds some steps' metrics stacked along a leading step axis.
  """

  def __init__(self):
    self._parts: list[Any] = []

  def add(self, metrics: dict[str, jax.Array]) -> None:
    self._parts.append(metrics)

  def take_means(self, count: int) -> dict[str, float]:
    """Means over the oldest `count` steps, which leave the window."""
    # One concatenation on device, then one transfer per metric.
    merged = jax.device_get(jax.tree.map(lambda *x: jnp.concatenate(x), *self._parts))
    rest = jax.tree.map(lambda x: x[count:], merged)
    leaves = jax.tree.leaves(rest)
    self._parts = [rest] if leaves and len(leaves[0]) else []
    return {k: float(np.mean(v[:count])) for k, v in merged.items()}


@dataclasses.dataclass
class Setup:
  """Everything a run builds from its config before the first step.

  Attributes:
    config: the experiment config.
    mesh: the device mesh.
    method: the Method instance.
    train_ds: the step-indexed training dataset (host pipeline).
    train_source: the training split's source (after `data.search_split`).
    val_source: the held-out part of a bilevel search, or None.
    order: the stream's epoch order (sampler and its labels).
    stream_orders: the epoch orders of the named extra streams (`config.data.streams`).
    steps_per_epoch, total_steps: the run's length.
    options: normalisation and augmentation of images.
    step_options: XLA compiler options of the steps.
  """
  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  method: Method
  train_ds: Any
  train_source: Any
  val_source: Any
  order: sampling.EpochOrder
  stream_orders: dict[str, sampling.EpochOrder]
  steps_per_epoch: int
  total_steps: int
  options: pipeline.ImageOptions
  step_options: dict[str, Any] | None

  def example_batch(self) -> dict[str, jax.Array]:
    return distributed.global_batch(self.train_ds[0], self.mesh)

  def program_key(self) -> dict[str, Any]:
    """What identifies the run's programs beside their arguments (`train.program_store`)."""
    return program_store.run_key(self.config, self.method, steps_per_epoch=self.steps_per_epoch,
                                 total_steps=self.total_steps)

  def refresh_labels(self, state: Any) -> bool:
    """Every stream's sampler labels from the state; True when any changed."""
    changed = [o.refresh(state) for o in (self.order, *self.stream_orders.values())]
    return any(changed)


def _stream(config: ml_collections.ConfigDict, name: str, k: int, mesh: jax.sharding.Mesh,
            steps_per_epoch: int, total_steps: int) -> tuple[Any, sampling.EpochOrder]:
  """The step-indexed dataset and epoch order of `config.data.streams[name]`.

  A stream block has `name` (dataset), `split`, `batch_size` and optionally `source_kwargs`,
  `sampler`, `augment`, `mean`, `std`, `crop_padding`, `flip`, `transform` (defaults: those of
  `config.data`). Its epochs are the main stream's (`steps_per_epoch`); its data seed is
  `config.seed + 1 + k`.
  """
  data = config.data
  block = data.streams[name]
  merged = ml_collections.ConfigDict(data.to_dict())
  del merged["streams"]
  for key in ("sampler", "augment", "source_kwargs", "transform", "transform_kwargs"):
    if key in merged:
      del merged[key]
  merged.update(block.to_dict() if hasattr(block, "to_dict") else dict(block))
  distributed.check_batch_size(merged.batch_size, mesh)
  source = sources.get_configured(merged.name, merged.split, merged.get("data_dir", None),
                                 merged.get("source_kwargs", {}))
  seed = config.seed + 1 + k
  order = sampling.EpochOrder(merged.get("sampler", None), source, seed, merged.batch_size,
                              steps_per_epoch)
  ds = pipeline.train_dataset(
      source, global_batch_size=merged.batch_size, num_steps=total_steps, seed=seed,
      options=pipeline.ImageOptions.from_config(merged), process_index=jax.process_index(),
      process_count=jax.process_count(), epoch_steps=steps_per_epoch, order_fn=order,
      augment_fn=augment.compose(merged.augment) if merged.get("augment", None) else None,
      example_fn=transforms.get(merged.get("transform", ""), train=True,
                                **dict(merged.get("transform_kwargs", {}))))
  return ds, order


def build(config: ml_collections.ConfigDict, workdir: str | None = None) -> Setup:
  """Data, mesh and method of `config` (no compilation yet).

  Raises:
    ConfigError, DatasetNotFoundError: a bad config or a missing dataset, with the fix.
  """
  method_cls = methods_lib.get(config.method)
  num_devices = config.get("num_devices", -1)
  mesh = distributed.make_mesh(jax.devices()[:num_devices] if num_devices > 0 else None)
  data = config.data
  distributed.check_batch_size(data.batch_size, mesh)
  transforms.load_providers()  # registers task-specific sources (e.g. super-resolution sets)
  train_src = sources.get_configured(data.name, data.train_split, data.get("data_dir", None),
                                    data.get("source_kwargs", {}))
  val_src = None
  search_fraction = data.get("search_split", 0.0)
  if search_fraction:  # bilevel NAS: weights on [0, f) of the train split, architecture on [f, 1)
    val_src = sources.SubsetSource(train_src, search_fraction, 1.0)
    train_src = sources.SubsetSource(train_src, 0.0, search_fraction)
  fixed_epoch = config.get("steps_per_epoch", -1)
  order = sampling.EpochOrder(data.get("sampler", None), train_src, config.seed, data.batch_size,
                              fixed_epoch if fixed_epoch and fixed_epoch > 0 else None)
  steps_per_epoch = order.num_batches
  total_steps = (config.num_steps if config.get("num_steps", -1) > 0
                 else config.num_epochs * steps_per_epoch)
  method = method_cls(config, steps_per_epoch=steps_per_epoch, total_steps=total_steps)
  method.workdir = workdir
  options = pipeline.ImageOptions.from_config(data)
  train_ds = pipeline.train_dataset(
      train_src, global_batch_size=data.batch_size, num_steps=total_steps, seed=config.seed,
      options=options, process_index=jax.process_index(), process_count=jax.process_count(),
      val_source=val_src, epoch_steps=steps_per_epoch, order_fn=order,
      augment_fn=augment.compose(data.augment) if data.get("augment", None) else None,
      example_fn=transforms.get(data.get("transform", ""), train=True,
                                **dict(data.get("transform_kwargs", {}))))
  streams, stream_orders = {}, {}
  for k, name in enumerate((data.get("streams", None) or {}).keys()):
    streams[name], stream_orders[name] = _stream(config, name, k, mesh, steps_per_epoch,
                                                 total_steps)
  train_ds = pipeline.with_streams(train_ds, streams)
  return Setup(config=config, mesh=mesh, method=method, train_ds=train_ds, train_source=train_src,
               val_source=val_src, order=order, stream_orders=stream_orders,
               steps_per_epoch=steps_per_epoch, total_steps=total_steps,
               options=options, step_options=compile_options.step_compiler_options(config))


def make_runner(setup: Setup, *, eval_every: int, checkpoint_every: int) -> Any:
  """The stepping mode the config asks for (see `jaxcompress.train.runners`)."""
  config, method, mesh = setup.config, setup.method, setup.mesh
  data = config.data
  train_step = compile_options.step_tracing(config)(method.train_step)
  if data.get("on_device", False):
    for key in ("streams", "sampler", "augment"):
      if data.get(key, None):
        raise ConfigError(f"config.data.on_device draws its own uniform batches and has no "
                          f"config.data.{key}; set config.data.on_device=False.")
    if data.get("transform", ""):
      raise ConfigError(f"config.data.on_device does not run per-example transforms (data.transform"
                        f" = {data.transform!r}); set config.data.on_device=False.")
    device_data = on_device_lib.put(
        setup.train_source, distributed.replicated(mesh), val_source=setup.val_source,
        max_bytes=data.get("on_device_max_bytes", on_device_lib.DEFAULT_MAX_BYTES))
    stream = on_device_lib.Stream(data.batch_size, setup.steps_per_epoch, config.seed,
                                  setup.options)
    scan_steps = data.get("scan_steps", -1)
    return runners.ScanRunner(train_step, device_data, stream, mesh,
                              max_steps=setup.steps_per_epoch if scan_steps <= 0 else scan_steps,
                              compiler_options=setup.step_options)
  steps_per_call = config.get("steps_per_call", 1)
  if not isinstance(steps_per_call, int) or steps_per_call < 1:
    raise ConfigError(f"config.steps_per_call must be an integer >= 1 (training steps per jitted "
                      f"call of the host pipeline), got {steps_per_call!r}.")
  workers = data.get("num_workers", 0)
  directory = program_store.for_config(config)
  store = None if directory is None else (directory, setup.program_key())
  if steps_per_call > 1:
    return runners.MultiStepRunner(train_step, setup.train_ds, mesh,
                                   max_steps=steps_per_call, num_workers=workers,
                                   compiler_options=setup.step_options, store=store)
  return runners.OneStepRunner(train_step, setup.train_ds, mesh, num_workers=workers,
                               compiler_options=setup.step_options, store=store)


def _hooks(setup: Setup) -> dict[str, Callable[..., Any]]:
  """The method's epoch hooks: jitted (state, epoch) or host (state, epoch, context)."""
  method = setup.method
  replicated = distributed.replicated(setup.mesh)
  traced = compile_options.step_tracing(setup.config)
  hooks = {}
  for name in ("on_epoch_start", "on_epoch_end"):
    if getattr(type(method), name) is getattr(Method, name):
      continue  # not overridden
    fn = getattr(method, name)
    if name in method.host_hooks:
      hooks[name] = fn
    else:
      hooks[name] = jax.jit(traced(fn), out_shardings=replicated, donate_argnums=0,
                            compiler_options=setup.step_options)
  return hooks


def init_program(method: Method, mesh: jax.sharding.Mesh, config: ml_collections.ConfigDict,
                 key_parts: dict[str, Any]) -> Callable[..., Any]:
  """The engine's initial-state program, `init(rng, example_batch) -> state` (replicated).

  Args:
    method: the run's method.
    mesh: the device mesh.
    config: the run's config (`cacheable_programs` puts the program in `train.program_store`).
    key_parts: what identifies the run's programs (`Setup.program_key`).

  Returns:
    `one_shot.jit_once(method.init)`, or with the store on, a `program_store.StoredProgram` that
    a restart finds exported (and compiled, in the persistent cache) with its result; its
    abstract trace for `method.init`'s effects on the method ends at `program_store.settle()`.
  """
  replicated = distributed.replicated(mesh)
  store = program_store.for_config(config)
  if store is None:
    return one_shot.jit_once(method.init, out_shardings=replicated)
  return program_store.StoredProgram(
      method.init, directory=store, name="init", key_parts=key_parts,
      in_shardings=(replicated, distributed.batch_sharding(mesh)), out_sharding=replicated,
      replay_trace=True, store_result=True,
      compiler_options={**one_shot.compiler_options(),
                        **compile_options.cacheable_compiler_options(config)})


def initial_state(setup: Setup, checkpointer: checkpoint_lib.Checkpointer | None,
                  initialize: Callable[[TrainState], TrainState] | None = None, *,
                  warm: Callable[[Any, Any], None] | None = None) -> TrainState:
  """The method's initial state, restored from the newest intact checkpoint when there is one.

  On a fresh start the method's host hook `load_initial` fills the state from files (a
  teacher, a materialized student), then `initialize` (a stage hand-over: params of an earlier
  run) applies; a restored checkpoint already holds both.

  Args:
    setup: the run's pieces (`build`).
    checkpointer: the run's checkpoints, or None.
    initialize: a stage hand-over applied to a fresh state.
    warm: `warm(state_shapes, batch_shapes)` compiles the training step (a runner's `warm`);
      it runs in a background thread while the state is built (`warm_start`), and has
      finished when this returns the state.

  Returns:
    The state.
  """
  init_fn = init_program(setup.method, setup.mesh, setup.config, setup.program_key())
  rng, batch = jax.random.key(setup.config.seed), setup.example_batch()
  warmup = None
  if warm is not None:
    shapes = warm_start.output_shapes(init_fn, rng, batch)
    warmup = warm_start.Warmup(lambda: warm(shapes, warm_start.shapes_of(batch)))
  state = init_fn(rng, batch)
  program_store.settle()  # a stored init's effects on the method (its optimizers) are in place
  if checkpointer is not None and checkpointer.latest_step() is not None:
    state = checkpointer.restore(state, legacy=setup.method.legacy_layout(state))
  else:
    loaded = setup.method.load_initial(state)
    if loaded is not state:  # host arrays from files: placed as the jitted init placed its own
      loaded = jax.device_put(loaded, jax.tree.map(lambda x: x.sharding, state))
    state = initialize(loaded) if initialize is not None else loaded
  # The first step then finds its program compiled. (On an error above the warm-up thread, a
  # daemon, finishes or ends with the process: the error is not delayed by its compilation.)
  if warmup is not None:
    warmup.wait()
  return state


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (or resumes) `config` in `workdir`; a config with `stages` runs each in turn.

  Args:
    config: an experiment config (see configs/).
    workdir: output directory (config.json, metrics.jsonl, summary.txt, checkpoints/, events;
      with stages, one such directory per stage: `workdir/<stage>/`).

  Returns:
    {"state": final TrainState, "eval": last eval metrics, "steps": total steps} (with stages:
    the last stage's, plus "stages": {name: its eval metrics}).

  Raises:
    ConfigError, DatasetNotFoundError, CheckpointError: before compiling, with the fix.
    TrainingDivergedError: a non-finite metric; the last good checkpoint is kept.
    PreemptedError: SIGTERM/preemption; a checkpoint of the current step was saved.
  """
  # On a GPU, threefry draws lower to one kernel each while the engine runs: a supernet's init
  # otherwise compiles for minutes (compile_options module docstring).
  with compile_options.gpu_threefry_kernel():
    if config.get("stages", None):
      from jaxcompress.train import stages  # pylint: disable=g-import-not-at-top
      return stages.run_stages(config, workdir)
    return run_single(config, workdir)


def _write_outputs(setup: Setup, workdir: str) -> str:
  """config.json and summary.txt (process 0); returns the summary table."""
  with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
    f.write(setup.config.to_json_best_effort(indent=2, sort_keys=True))
  table = setup.method.summary(jax.tree.map(np.asarray, setup.train_ds[0]))
  with open(os.path.join(workdir, "summary.txt"), "w", encoding="utf-8") as f:
    f.write(table + "\n")
  return table


def _append_best(workdir: str, best: dict[str, float]) -> None:
  if not best:
    return
  with open(os.path.join(workdir, "summary.txt"), "a", encoding="utf-8") as f:
    f.write("\nBest eval metrics\n" + "".join(f"  best_{k}: {v:.6g}\n" for k, v in sorted(
        best.items())))


def run_single(config: ml_collections.ConfigDict, workdir: str, *,
               initialize: Callable[[TrainState], TrainState] | None = None) -> dict[str, Any]:
  """One engine run (see `run`); `initialize` maps the fresh initial state (stage hand-over)."""
  _check_workdir(workdir)
  setup = build(config, workdir)
  log_every = max(1, config.get("log_every", 50))
  eval_every = config.get("eval_every", -1)
  eval_every = setup.steps_per_epoch if eval_every <= 0 else eval_every
  checkpoint_every = config.get("checkpoint_every", -1)
  checkpoint_every = setup.steps_per_epoch if checkpoint_every <= 0 else checkpoint_every
  evaluators = evaluation.Evaluation(config, setup.method, setup.mesh, eval_every, setup.options,
                                     setup.step_options)
  runner = make_runner(setup, eval_every=eval_every, checkpoint_every=checkpoint_every)
  hooks = _hooks(setup)
  checkpointer = checkpoint_lib.Checkpointer(workdir, config.get("max_to_keep", 3),
                                             async_save=config.get("async_checkpoint", True))
  main = distributed.is_main_process()
  total_steps, steps_per_epoch = setup.total_steps, setup.steps_per_epoch
  try:
    state = initial_state(setup, checkpointer, initialize, warm=runner.warm)
  except BaseException:
    checkpointer.close()
    raise
  start_step = int(jax.device_get(state.step))
  table = _write_outputs(setup, workdir) if main else ""
  writer = logging_lib.MetricWriter(workdir, total_steps, start_step, enabled=main,
                                    progress=config.get("progress", "auto"))
  if main and start_step == 0 and table:
    writer.log(table)
  if start_step:
    writer.log(f"Resumed from checkpoint at step {start_step} in {checkpointer.directory}")
    evaluators.restore_best(os.path.join(workdir, "metrics.jsonl"))
  context = HookContext(mesh=setup.mesh, workdir=workdir, writer=writer, evaluation=evaluators,
                        train_source=setup.train_source)
  preemption = _Preemption()
  window = _MetricWindow()
  eval_metrics: dict[str, Any] = {}

  def call_hook(name: str, state: TrainState, epoch: int) -> TrainState:
    if name not in hooks:
      return state
    if name in setup.method.host_hooks:
      return hooks[name](state, epoch, context)
    return hooks[name](state, epoch)

  def save(current: TrainState) -> None:
    if not bool(jax.device_get(_all_finite(current.params))):
      raise TrainingDivergedError(
          f"Parameters became NaN/inf before step {int(current.step)}; not saving. The last good "
          f"checkpoint is in {checkpointer.directory}. Lower the learning rate.")
    checkpointer.save(current)

  def log_train(step: int, last_logged: int, t_start: float) -> int:
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
    return last_logged

  def run_evals(state: TrainState, due: list[Any]) -> dict[str, Any]:
    metrics = evaluators.evaluate(state, due)
    metrics.update(evaluators.update_best(metrics))
    writer.write(int(jax.device_get(state.step)), "eval", metrics)
    return metrics

  try:
    step = last_logged = start_step
    t_start = time.time()
    setup.refresh_labels(state)  # labels of a resumed epoch come from the checkpoint
    runner.start(step)
    while step < total_steps:
      epoch, in_epoch = divmod(step, steps_per_epoch)
      if in_epoch == 0:
        state = call_hook("on_epoch_start", state, epoch)
        if setup.refresh_labels(state):  # new sampler labels: the next batches follow them
          runner.start(step)
      end = runners.chunk_end(step, total_steps=total_steps, max_steps=runner.max_steps,
                              boundaries=(steps_per_epoch, eval_every, checkpoint_every))
      state, metrics = runner.advance(state, step, end)
      window.add(metrics)
      step = end
      writer.advance(step)
      last_logged = log_train(step, last_logged, t_start)
      if step % steps_per_epoch == 0:
        state = call_hook("on_epoch_end", state, epoch)
      due = evaluators.due(step, total_steps)
      if due:
        eval_metrics = run_evals(state, due)
      if step % checkpoint_every == 0 or step == total_steps:
        save(state)
      if preemption.requested or checkpointer.reached_preemption(step):
        save(state)
        checkpointer.wait()
        raise PreemptedError(f"Preempted at step {step}; checkpoint saved in "
                             f"{checkpointer.directory}. Rerun the same command to resume.")
    if start_step >= total_steps:  # a finished run re-launched: just report
      eval_metrics = run_evals(state, evaluators.evaluators)
    extras = setup.method.final_report(state)
    if main:
      _append_best(workdir, evaluators.best)
      if extras:
        with open(os.path.join(workdir, "final_report.json"), "w", encoding="utf-8") as f:
          json.dump(extras, f, indent=2, default=str)
  finally:
    preemption.restore()
    checkpointer.close()
    writer.close()
  return {"state": state, "eval": eval_metrics, "steps": total_steps}


def evaluate(config: ml_collections.ConfigDict, workdir_or_state: str | TrainState,
             names: list[str] | tuple[str, ...] | None = None) -> dict[str, Any]:
  """Evaluates a run or a state with the evaluators of `config.evals`, without training.

  Args:
    config: the experiment config (for a staged config, pass the stage's config).
    workdir_or_state: a run's workdir (its newest intact checkpoint is restored) or a TrainState.
    names: the evaluators to run (default: all).

  Returns:
    {metric: value} under the logged names.

  Raises:
    ConfigError: unknown evaluator names, or a workdir without checkpoints.
  """
  with compile_options.gpu_threefry_kernel():
    setup = build(config, workdir_or_state if isinstance(workdir_or_state, str) else None)
    evaluators = evaluation.Evaluation(config, setup.method, setup.mesh, 1, setup.options,
                                       setup.step_options)
    chosen = evaluators.evaluators
    if names is not None:
      known = {e.name: e for e in chosen}
      missing = [n for n in names if n not in known]
      if missing:
        raise ConfigError(f"Unknown evaluator(s) {missing}; config.evals has {sorted(known)}.")
      chosen = [known[n] for n in names]
    if isinstance(workdir_or_state, str):
      checkpointer = checkpoint_lib.Checkpointer(workdir_or_state, async_save=False)
      try:
        if checkpointer.latest_step() is None:
          raise ConfigError(f"No checkpoint in {workdir_or_state!r}: train it first (python -m "
                            "launch.main --config=... --workdir=...) or pass a TrainState.")
        state = initial_state(setup, checkpointer)
      finally:
        checkpointer.close()
    else:
      state = workdir_or_state
    return evaluators.evaluate(state, chosen)
