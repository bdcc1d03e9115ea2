"""How training steps reach the devices: one interface, three stepping modes.

* `OneStepRunner`: one jitted call per host-pipeline batch.
* `MultiStepRunner`: `config.steps_per_call` host batches stacked and trained in one jitted
  `fori_loop` (fewer dispatches, and XLA:CPU reuses the loop body's buffers).
* `ScanRunner`: `config.data.on_device`: the split lives on the devices and a jitted `lax.scan`
  draws, augments and trains up to the next event (epoch end, eval, checkpoint) in one call.

Every runner's `advance(state, step, end)` trains steps `step .. end-1` and returns the metrics
of each step stacked along a leading axis, so the engine's logging, NaN checks, checkpoints and
resumption are the same whatever the mode.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp

from jaxcompress import distributed
from jaxcompress.data import on_device as on_device_lib
from jaxcompress.data import pipeline
from jaxcompress.train import multi_step, program_store

TrainStep = Callable[[Any, dict[str, jax.Array]], tuple[Any, dict[str, jax.Array]]]


def chunk_end(step: int, *, total_steps: int, boundaries: tuple[int, ...],
              max_steps: int) -> int:
  """Where a call starting at `step` must stop: at the next multiple of any boundary period
  (epoch end, eval, checkpoint), at `total_steps`, or after `max_steps` steps."""
  stops = [total_steps, step + max(1, max_steps)]
  stops += [(step // period + 1) * period for period in boundaries if period > 0]
  return min(stops)


def one_step_program(train_step: TrainStep, mesh: jax.sharding.Mesh, *,
                     compiler_options: dict[str, Any] | None = None,
                     store: tuple[str, dict[str, Any]] | None = None) -> Callable[..., Any]:
  """The engine's one-step program: `train_step` jitted with the state replicated and donated.

  Args:
    train_step: the method's pure step.
    mesh: the device mesh.
    compiler_options: XLA options of the step.
    store: (directory, key parts) of `train.program_store`, to keep the step's exported form
      there; None: plainly jitted.

  Returns:
    `step(state, batch) -> (state, metrics)`, also offering `.trace(...).lower().compile()`.
  """
  replicated = distributed.replicated(mesh)
  shardings = (replicated, distributed.batch_sharding(mesh))
  if store is None:
    return jax.jit(train_step, in_shardings=shardings, out_shardings=(replicated, replicated),
                   donate_argnums=0, compiler_options=compiler_options)
  return program_store.StoredProgram(
      train_step, directory=store[0], name="train_step", key_parts=store[1],
      in_shardings=shardings, out_sharding=replicated, donate_argnums=(0,),
      compiler_options=compiler_options)


class OneStepRunner:
  """One jitted call per step, batches from the host pipeline.

  Args:
    train_step: the method's pure step.
    train_ds: the step-indexed training dataset (`pipeline.train_dataset`).
    mesh: the device mesh.
    num_workers: grain worker processes (0: threads only).
    compiler_options: XLA options of the step.
    store: (directory, key parts) of `train.program_store`, to keep the step's exported form
      there; None: plainly jitted.
  """

  max_steps = 1

  def __init__(self, train_step: TrainStep, train_ds: Any, mesh: jax.sharding.Mesh, *,
               num_workers: int = 0, compiler_options: dict[str, Any] | None = None,
               store: tuple[str, dict[str, Any]] | None = None):
    self.mesh = mesh
    self.train_ds = train_ds
    self.num_workers = num_workers
    self._fn = one_step_program(train_step, mesh, compiler_options=compiler_options, store=store)
    self._batches: Iterator[Any] | None = None

  def start(self, step: int) -> None:
    """(Re)starts reading the stream at `step` (after a resume or a change of sampler labels)."""
    self._batches = pipeline.iterate(self.train_ds, step, num_workers=self.num_workers)

  def warm(self, state: Any, batch: Any) -> None:
    """Traces, lowers and compiles the step for these shapes (`warm_start`), so that the first
    `advance` with arguments of these types finds it compiled.

    Args:
      state: the train state's shapes (`jax.ShapeDtypeStruct`s).
      batch: one global batch's shapes.
    """
    self._fn.trace(state, batch).lower().compile()

  def advance(self, state: Any, step: int, end: int) -> tuple[Any, dict[str, jax.Array]]:
    del step, end
    state, metrics = self._fn(state, distributed.global_batch(next(self._batches), self.mesh))
    return state, jax.tree.map(lambda m: m[None], metrics)


class MultiStepRunner(OneStepRunner):
  """`max_steps` host batches per jitted call (`config.steps_per_call`)."""

  def __init__(self, train_step: TrainStep, train_ds: Any, mesh: jax.sharding.Mesh, *,
               max_steps: int, num_workers: int = 0,
               compiler_options: dict[str, Any] | None = None,
               store: tuple[str, dict[str, Any]] | None = None):
    super().__init__(train_step, train_ds, mesh, num_workers=num_workers,
                     compiler_options=compiler_options)
    self.max_steps = max_steps
    replicated = distributed.replicated(mesh)
    if store is None:
      self._fn = multi_step.jit_train_steps(
          train_step, max_steps=max_steps, state_sharding=replicated,
          batch_sharding=distributed.batch_sharding(mesh),
          stacked_batch_sharding=distributed.stacked_batch_sharding(mesh),
          compiler_options=compiler_options)
    else:
      self._fn = program_store.StoredProgram(
          multi_step.train_steps_loop(train_step, max_steps=max_steps,
                                      batch_sharding=distributed.batch_sharding(mesh)),
          directory=store[0], name="train_step_loop", key_parts={**store[1], "steps": max_steps},
          in_shardings=(replicated, distributed.stacked_batch_sharding(mesh), None),
          out_sharding=replicated, donate_argnums=(0,), compiler_options=compiler_options)

  def warm(self, state: Any, batch: Any) -> None:
    sharding = distributed.stacked_batch_sharding(self.mesh)
    stack = jax.tree.map(lambda x: jax.ShapeDtypeStruct((self.max_steps, *x.shape), x.dtype,
                                                        sharding=sharding), batch)
    self._fn.trace(state, stack, 1).lower().compile()  # `count` is a Python int, as in advance

  def advance(self, state: Any, step: int, end: int) -> tuple[Any, dict[str, jax.Array]]:
    count = end - step
    stack = multi_step.stack_batches([next(self._batches) for _ in range(count)], self.max_steps)
    state, metrics = self._fn(state, distributed.global_batches(stack, self.mesh), count)
    return state, jax.tree.map(lambda m: m[:count], metrics)


def scan_train_steps(train_step: TrainStep, stream: on_device_lib.Stream, *,
                     state_sharding: jax.sharding.Sharding,
                     batch_sharding: jax.sharding.Sharding,
                     compiler_options: dict[str, Any] | None = None) -> Callable[..., Any]:
  """A jitted function running `length` consecutive training steps inside one epoch.

  Args:
    train_step: the method's pure `(state, batch) -> (state, metrics)`.
    stream: which batch each step reads.
    state_sharding: the train state's sharding (replicated).
    batch_sharding: how each batch is split over the mesh (along its leading axis).
    compiler_options: XLA options of the compiled scan (`config.compiler_options`), or None.

  Returns:
    `train_steps(state, data, epoch, start, length=n) -> (state, metrics)`: steps
    `start .. start+n-1` of epoch `epoch` (n static, the rest traced, so every epoch reuses one
    compilation), with each metric stacked along a leading axis of length n. The state argument
    is donated.
  """

  def train_steps(state: Any, data: on_device_lib.DeviceDataset, epoch: jax.Array,
                  start: jax.Array, *, length: int) -> tuple[Any, dict[str, jax.Array]]:
    perm, val_perm = stream.permutations(data, epoch)

    def body(state, i):
      batch = stream.batch(data, perm, val_perm, epoch, start + i)
      batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
      return train_step(state, batch)

    return jax.lax.scan(body, state, jnp.arange(length))

  # Named train_steps: XLA dumps, profiles and compilation-cache entries show "jit_train_steps".
  return jax.jit(train_steps, static_argnames="length", donate_argnums=0,
                 out_shardings=(state_sharding, state_sharding),
                 compiler_options=compiler_options)


class ScanRunner:
  """`config.data.on_device`: the whole split on the devices, one scan up to the next event.

  Args:
    train_step: the method's pure step.
    device_data: the split on the devices (`on_device.put`).
    stream: the on-device stream (permutation and augmentation per step).
    mesh: the device mesh.
    max_steps: most steps per scan (`config.data.scan_steps`).
    compiler_options: XLA options of the scan.
  """

  def __init__(self, train_step: TrainStep, device_data: Any, stream: on_device_lib.Stream,
               mesh: jax.sharding.Mesh, *, max_steps: int,
               compiler_options: dict[str, Any] | None = None):
    self.device_data = device_data
    self.steps_per_epoch = stream.steps_per_epoch
    self.max_steps = max_steps
    self._fn = scan_train_steps(train_step, stream,
                                state_sharding=distributed.replicated(mesh),
                                batch_sharding=distributed.batch_sharding(mesh),
                                compiler_options=compiler_options)

  def start(self, step: int) -> None:
    del step  # the stream is a pure function of the step

  def warm(self, state: Any, batch: Any) -> None:
    """Nothing: each call's scan length depends on where the run starts and stops."""
    del state, batch

  def advance(self, state: Any, step: int, end: int) -> tuple[Any, dict[str, jax.Array]]:
    epoch, in_epoch = divmod(step, self.steps_per_epoch)
    return self._fn(state, self.device_data, epoch, in_epoch, length=end - step)
