"""Checkpoints through orbax's CheckpointManager (args API): atomic, periodic, on preemption.

orbax writes each step into a temporary directory and renames it when complete, so a kill at any
moment leaves either the previous checkpoints or a complete new one, never a half-written step.
All processes call save/restore together; orbax coordinates multi-host writes.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxcompress.errors import CheckpointError
from jaxcompress.train.state import TrainState


class Checkpointer:
  """Saves and restores TrainStates under `<workdir>/checkpoints`.

  Args:
    workdir: the run's directory.
    max_to_keep: most recent checkpoints kept.
    async_save: write in a background thread (the step loop continues).
  """

  def __init__(self, workdir: str, max_to_keep: int = 3, async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step, or None."""
    return self._manager.latest_step()

  def save(self, state: TrainState, *, force: bool = False) -> None:
    """Saves `state` at its step (skipped when that step is already saved)."""
    step = int(jax.device_get(state.step))
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.StandardSave(state), force=force)

  def restore(self, like: TrainState, step: int | None = None) -> TrainState:
    """Restores the checkpoint at `step` (default newest) with `like`'s structure and shardings.

    Raises:
      CheckpointError: the checkpoint is unreadable or does not match the model.
    """
    step = self.latest_step() if step is None else step
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    try:
      return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # pylint: disable=broad-except
      self.close()  # stop orbax's background threads before reporting
      raise CheckpointError(
          f"Cannot restore checkpoint step {step} in {self.directory}: "
          f"{type(e).__name__}: {str(e).splitlines()[0][:200]}. The checkpoint is corrupted or "
          "was written by a different config/model. Delete that step directory to resume from an "
          "older one, or use a new --workdir.") from None

  def reached_preemption(self, step: int) -> bool:
    """True when the cluster (or a SIGTERM on multi-host) asked the job to stop at `step`."""
    return self._manager.reached_preemption(step)

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


