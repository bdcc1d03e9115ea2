"""Checkpoints through orbax's CheckpointManager (args API): atomic, periodic, on preemption, checked.

orbax writes each step into a temporary directory and renames it when complete, so a kill at any
moment leaves either the previous checkpoints or a complete new one, never a half-written step.
All processes call save/restore together; orbax coordinates multi-host writes.

A rename protects against a crash, not against bytes that change on disk afterwards (a bad
disk, a truncated copy, a synced folder). So every save also records a 64-bit fingerprint of
each array in the step's orbax metadata (`custom_metadata`, written by process 0 inside the step
directory, so it is atomic with the step, works with async saves and is garbage-collected with
it by `max_to_keep`). `restore` recomputes the fingerprints of what it read and, when the newest
step is unreadable or differs, falls back to the next older step with a one-line warning and
deletes the damaged newer steps, so the resumed run saves them again. Checkpoints without
fingerprints (written by older versions) restore unchecked.

The fingerprint is computed on device in one jitted call (only 8 bytes per array reach the
host, and sharded arrays are reduced where they live): each element's bits, as 32-bit words,
are mixed with its flat index by MurmurHash3's 32-bit finalizer `fmix32`
(https://github.com/aappleby/smhasher, src/MurmurHash3.cpp) and summed modulo 2**32, in two
independently keyed lanes. Modular sums are independent of the reduction order, so every
process and every device layout computes the same value. `fmix32` is a bijection, so changing
any single element always changes the sum; wider damage goes unnoticed with probability about
2**-64.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxcompress.errors import CheckpointError, ConfigError
from jaxcompress.train.state import TrainState

_log = logging.getLogger(__name__)

# Key of the fingerprints in orbax's per-step custom metadata, and the version of their format.
METADATA_KEY = "jaxcompress_checksums"
_FORMAT = "fmix32-sum-2x32-v1"
# Seeds of the two lanes (arbitrary odd constants; any two distinct values work).
_LANE_SEEDS = (0x9E3779B9, 0x7F4A7C15)
_GOLDEN = np.uint32(0x9E3779B9)  # index multiplier: spreads consecutive indices over the words


def _fmix32(h: jax.Array) -> jax.Array:
  """MurmurHash3's 32-bit finalizer (uint32 in, uint32 out, a bijection); multiplies wrap."""
  h = h ^ (h >> 16)
  h = h * np.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * np.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def _as_words(x: jax.Array) -> jax.Array:
  """The bits of `x` as uint32 words, keeping its axes (8-byte types get a trailing axis of 2)."""
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if jnp.issubdtype(x.dtype, jnp.complexfloating):
    x = jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1)
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  size = jnp.dtype(x.dtype).itemsize
  if size == 4:
    return jax.lax.bitcast_convert_type(x, jnp.uint32)
  if size in (1, 2):
    narrow = jnp.uint8 if size == 1 else jnp.uint16
    return jax.lax.bitcast_convert_type(x, narrow).astype(jnp.uint32)
  if size == 8:
    return jax.lax.bitcast_convert_type(x, jnp.uint32)  # (..., 2)
  raise TypeError(f"cannot fingerprint dtype {x.dtype}")


def _leaf_fingerprint(x: jax.Array) -> jax.Array:
  """The two uint32 lanes of one array's fingerprint (see the module docstring)."""
  words = _as_words(jnp.asarray(x))
  # Row-major flat index of each word, built from per-axis iotas instead of a reshape, so a
  # sharded array is hashed in place (no resharding to one flat axis).
  index = jnp.zeros(words.shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(words.ndim)):
    iota = jax.lax.broadcasted_iota(jnp.uint32, words.shape, axis)
    index = index + iota * np.uint32(stride % (1 << 32))
    stride *= words.shape[axis]
  key = index * _GOLDEN
  lanes = [jnp.sum(_fmix32(words ^ _fmix32(key + np.uint32(seed))), dtype=jnp.uint32)
           for seed in _LANE_SEEDS]
  return jnp.stack(lanes)


@jax.jit
def _fingerprints_on_device(leaves: list[jax.Array]) -> jax.Array:
  return jnp.stack([_leaf_fingerprint(x) for x in leaves]) if leaves else jnp.zeros(
      (0, 2), jnp.uint32)


def _to_host(x: jax.Array) -> np.ndarray:
  """A small replicated device array on this host (also when other processes hold devices)."""
  if x.is_fully_addressable:
    return np.asarray(x)
  if x.is_fully_replicated:
    return np.asarray(x.addressable_data(0))
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def fingerprints(tree: Any) -> dict[str, str]:
  """64-bit fingerprints of every array in `tree`, computed on device.

  Args:
    tree: a pytree of arrays (jax or NumPy, sharded or not).

  Returns:
    {leaf path (`jax.tree_util.keystr`): "<dtype>:<16 hex digits>"}; equal trees give equal
    values on every process and device layout.
  """
  pairs = jax.tree_util.tree_leaves_with_path(tree)
  paths, leaves = [p for p, _ in pairs], [x for _, x in pairs]
  lanes = _to_host(_fingerprints_on_device(leaves))
  return {jax.tree_util.keystr(p): f"{jnp.dtype(x.dtype).name}:{int(a):08x}{int(b):08x}"
          for p, x, (a, b) in zip(paths, leaves, lanes)}


def _first_line(e: BaseException) -> str:
  # TensorStore appends a long, unhelpful repr of its error details.
  text = str(e).split(" See full TensorStore details")[0].strip().splitlines()
  return f"{type(e).__name__}: {text[0][:200] if text else ''}".rstrip(": ")


def _any_process(flag: bool) -> bool:
  """True when `flag` is true on any process (every process must call this together)."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


class Checkpointer:
  """Saves and restores TrainStates under `<workdir>/checkpoints`, with per-array checksums.

  Args:
    workdir: the run's directory.
    max_to_keep: most recent checkpoints kept.
    async_save: write in a background thread (the step loop continues).
  """

  def __init__(self, workdir: str, max_to_keep: int = 3, async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=async_save)
    # The handler is named up front so reading a step's metadata before its first restore knows
    # the item (orbax otherwise warns that it cannot restore "default").
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_handlers=ocp.StandardCheckpointHandler())

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step, or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """The complete checkpoints' steps, oldest first."""
    return sorted(self._manager.all_steps())

  def save(self, state: TrainState, *, force: bool = False) -> None:
    """Saves `state` at its step with its fingerprints (skipped when that step is saved).

    Args:
      state: the state to save (every process passes its part of the same global state).
      force: save even when orbax's save policy would skip this step.
    """
    step = int(jax.device_get(state.step))
    if step in self._manager.all_steps():
      return
    # Computed from the same device arrays orbax copies, before the caller can donate them.
    metadata = {METADATA_KEY: {"format": _FORMAT, "leaves": fingerprints(state)}}
    self._manager.save(step, args=ocp.args.StandardSave(state), force=force,
                       custom_metadata=metadata)

  def restore(self, like: TrainState, step: int | None = None, *,
              legacy: tuple[Any, Callable[[Any], Any]] | None = None) -> TrainState:
    """Restores a checkpoint with `like`'s structure and shardings, verifying its checksums.

    With `step=None` the newest step is tried first; a step that cannot be read or whose
    arrays differ from their recorded fingerprints is reported in one warning line and the
    next older step is tried. Once an intact step is restored, the damaged newer steps are
    deleted, so the resumed run saves those steps again and later restarts resume from them.

    Args:
      like: a state with the structure, dtypes and shardings to restore into.
      step: the step to restore; an explicit step is never replaced by another one.
      legacy: (`like` in an older layout, its conversion to `like`'s layout)
        (`Method.legacy_layout`): a step that does not restore as `like` is read in that
        layout, checked against its fingerprints and converted.

    Returns:
      The restored state.

    Raises:
      CheckpointError: no intact checkpoint (or `step` itself is damaged, missing or written
        by a different config/model).
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    if legacy is not None:  # (abstract state in the older layout, conversion and placement)
      legacy_like, convert = legacy
      shardings = jax.tree.map(lambda x: x.sharding, abstract)
      legacy = (jax.tree.map(ocp.utils.to_shape_dtype_struct, legacy_like),
                lambda old: jax.device_put(convert(old), shardings))
    if step is not None:
      if step not in self._manager.all_steps():
        self.close()
        raise CheckpointError(
            f"No checkpoint step {step} in {self.directory} (steps: {self.all_steps()}). "
            "Pass one of the saved steps.")
      state, problem = self._restore_checked(step, abstract, legacy)
      if problem is None:
        return state
      self.close()  # stop orbax's background threads before reporting
      raise CheckpointError(
          f"Cannot restore checkpoint step {step} in {self.directory}: {problem}. The step is "
          "damaged or was written by a different config/model. Restore another step, delete "
          f"{self.directory}/{step}, or use a new --workdir.")
    steps = sorted(self._manager.all_steps(), reverse=True)
    if not steps:
      self.close()
      raise CheckpointError(f"No checkpoint to restore in {self.directory}.")
    damaged: list[tuple[int, str]] = []
    for i, candidate in enumerate(steps):
      state, problem = self._restore_checked(candidate, abstract, legacy)
      if problem is None:
        if damaged:
          # A damaged newer step would make orbax skip (or refuse) saving that step again and
          # would stay `latest_step`: remove it so the resumed run checkpoints normally.
          for bad, _ in damaged:
            self._manager.delete(bad)
        return state
      damaged.append((candidate, problem))
      if jax.process_index() == 0:
        older = (f"falling back to step {steps[i + 1]}" if i + 1 < len(steps)
                 else "no older checkpoint left")
        _log.warning("Checkpoint step %d in %s is damaged or unreadable (%s); %s.", candidate,
                     self.directory, problem, older)
    self.close()
    newest, problem = damaged[0]
    others = [s for s, _ in damaged[1:]]
    also = f"; steps {others} cannot be restored either" if others else ""
    raise CheckpointError(
        f"Cannot restore checkpoint step {newest} in {self.directory}: {problem}{also}. No "
        "intact checkpoint is left (the files are damaged, or were written by a different "
        f"config/model). Remove {self.directory} to train from scratch, or use a new --workdir.")

  def _restore_checked(self, step: int, abstract: Any,
                       legacy: tuple[Any, Callable[[Any], Any]] | None = None
                       ) -> tuple[Any, str | None]:
    """(state, None) when `step` restores and matches its fingerprints, else (None, problem);
    a step that does not read as `abstract` is tried as `legacy`'s abstract state and then
    converted with its function."""
    state, problem, recorded = None, None, None
    convert = None
    try:
      custom = self._manager.metadata(step).custom_metadata or {}
      recorded = custom.get(METADATA_KEY)
      state = self._read(step, abstract)
    except Exception as e:  # pylint: disable=broad-except
      problem = _first_line(e)  # orbax raises many types for unreadable or mismatched files
      if legacy is not None:
        legacy_abstract, convert = legacy
        try:  # written in the method's older layout?
          state, problem = self._read(step, legacy_abstract), None
        except Exception:  # pylint: disable=broad-except
          convert = None  # report the problem of the current layout
    if problem is None and recorded is not None:
      problem = _compare(recorded, fingerprints(state))
    if problem is None and convert is not None:
      state = convert(state)
    # Read errors can differ between processes (each reads its own shards): agree, so all of
    # them restore the same step.
    if _any_process(problem is not None):
      return None, problem or "damaged on another process"
    return state, None

  def _read(self, step: int, abstract: Any) -> Any:
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def reached_preemption(self, step: int) -> bool:
    """True when the cluster (or a SIGTERM on multi-host) asked the job to stop at `step`."""
    return self._manager.reached_preemption(step)

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and stops orbax's background threads."""
    self._manager.wait_until_finished()
    self._manager.close()


def _compare(recorded: Any, actual: dict[str, str]) -> str | None:
  """None when `actual` matches the recorded fingerprints, else what differs (one line)."""
  if not isinstance(recorded, dict) or recorded.get("format") != _FORMAT:
    return None  # a format this version does not know: restore unchecked, as before checksums
  saved = recorded.get("leaves", {})
  bad = []
  for path, value in actual.items():
    expected = saved.get(path)
    if expected is None:
      bad.append(path)
    elif expected.split(":")[0] == value.split(":")[0] and expected != value:
      bad.append(path)  # a different dtype is a legitimate cast by orbax, not damage
  if not bad:
    return None
  more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
  return f"checksum mismatch in {', '.join(bad[:3])}{more}"


def load_run_state(workdir: str) -> dict[str, Any]:
  """The newest checkpoint of another run as a tree of NumPy arrays ({"params", "model_state",
  "extra", ...}), without knowing its model (stage hand-overs, teachers of distillation).

  Raises:
    ConfigError: the run has no checkpoint.
  """
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  checkpointer = Checkpointer(workdir, async_save=False)
  try:
    step = checkpointer.latest_step()
  finally:
    checkpointer.close()
  if step is None:
    raise ConfigError(f"No checkpoint in {directory!r} to load; train that run first.")
  step_dir = os.path.join(directory, str(step))
  if os.path.isdir(os.path.join(step_dir, "default")):
    step_dir = os.path.join(step_dir, "default")
  with ocp.StandardCheckpointer() as reader:
    tree = reader.restore(step_dir)
  return jax.tree.map(np.asarray, tree)
