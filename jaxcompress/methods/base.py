"""The Method interface: how a paper plugs into the one training engine.

A method never jits its steps: the engine does, with mesh shardings and state donation. The
engine calls, in order: `init` once (or restores a checkpoint), then per epoch `on_epoch_start`,
the `train_step`s of the epoch, `on_epoch_end`; `eval_step` over the eval split at
`eval_every` and at the end.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable

import jax
import ml_collections

from jaxcompress.train.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


@dataclasses.dataclass
class HookContext:
  """What a host hook (a hook named in `Method.host_hooks`) may use besides the state.

  Attributes:
    mesh: the run's device mesh.
    workdir: the run's output directory.
    writer: the metric writer (`writer.write(step, split, metrics)`, `writer.log(text)`).
    evaluation: the run's evaluators and eval splits (`jaxcompress.train.evaluation`).
    train_source: the training split's random-access source.

  A hook changes what the training stream reads by writing new labels where the sampler takes
  them from (`config.data.sampler.labels = "state:<key>"`, `state.extra[<key>]`).
  """
  mesh: jax.sharding.Mesh
  workdir: str | None
  writer: Any
  evaluation: Any
  train_source: Any

  def map_batches(self, fn: Callable[[TrainState, Batch], dict[str, jax.Array]],
                  state: TrainState, split: str) -> dict[str, Any]:
    """Runs `fn(state, batch)` jitted over every batch of `split` (a split name of
    `config.data.name`, e.g. "train" for feature extraction before clustering).

    Returns:
      {output: NumPy array} with one row per example of the split, in split order (padding
      removed), the same on every process.
    """
    return self.evaluation.map_batches(fn, state, split)


class Method(abc.ABC):
  """Base class of every training method.

  Subclasses implement `init`, `train_step` and `eval_step`; the epoch hooks default to identity.

  Conventions:
    * `train_step` returns per-step metrics as scalar means; the engine averages them over the
      logging interval. A metric named "loss" must exist.
    * `eval_step` returns metric SUMS over the valid examples of the batch (`batch["mask"]` is 1
      for real examples, 0 for padding of the last batch); the engine sums over batches and
      divides by the number of valid examples.
    * Schedules that change per epoch live in `state.extra` (set by `on_epoch_start`) so the
      compiled step never changes.
    * Epoch hooks are jitted by the engine unless named in `host_hooks`: a host hook runs as
      plain Python with the signature `(state, epoch, context: HookContext) -> state` (k-means
      pseudo labels, feature extraction over a split with `context.map_batches`, files).
    * `predict(state, batch) -> {name: array}` (optional) gives the outputs evaluators read
      ("logits" for accuracy, "features" for retrieval).
  """

  # Names of the epoch hooks that run on the host with a HookContext instead of being jitted.
  host_hooks: frozenset[str] = frozenset()

  def __init__(self, config: ml_collections.ConfigDict, *, steps_per_epoch: int = 1,
               total_steps: int = 1):
    """Args: the experiment config; the run's steps per epoch and total steps (schedules)."""
    self.config = config
    self.steps_per_epoch = steps_per_epoch
    self.total_steps = total_steps
    # The run's output directory, set by the engine before `init` (None outside the engine):
    # methods write extra artefacts there (genotype.json, robust-accuracy tables).
    self.workdir: str | None = None

  @abc.abstractmethod
  def init(self, rng: jax.Array, example_batch: Batch) -> TrainState:
    """Returns the initial state for `example_batch`'s shapes."""

  @abc.abstractmethod
  def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    """One optimisation step; pure and jit-able."""

  @abc.abstractmethod
  def eval_step(self, state: TrainState, batch: Batch) -> Metrics:
    """Metric sums over the valid examples of `batch`; pure and jit-able."""

  def load_initial(self, state: TrainState) -> TrainState:
    """Host hook on a fresh start: values read from files into the jitted init's state.

    `init` is jitted, so it cannot read checkpoints; a method whose state starts from earlier
    runs (a frozen teacher, a materialized student) returns `state` with those arrays put in,
    same structure and shapes (the engine places them like `state`'s). Not called when a
    checkpoint is restored: the checkpoint holds them. Default: `state` unchanged.
    """
    return state

  def legacy_layout(self, state: TrainState) -> tuple[Any, Callable[[Any], Any]] | None:
    """An older layout of this method's state that its checkpoints may hold, or None.

    Args:
      state: the state in the current layout (arrays or shapes).

    Returns:
      (`state` in the older layout, the function mapping a state in that layout to the
      current one), or None (default) when there is no older layout.
    """
    del state
    return None

  def on_epoch_start(self, state: TrainState, epoch: int) -> TrainState:
    """Work outside the gradient step before the epoch's first batch (default: none)."""
    del epoch
    return state

  def on_epoch_end(self, state: TrainState, epoch: int) -> TrainState:
    """Work outside the gradient step after the epoch's last batch (default: none)."""
    del epoch
    return state

  def predict(self, state: TrainState, batch: Batch) -> dict[str, jax.Array]:
    """Model outputs for evaluators, e.g. {"logits": ...}; pure and jit-able."""
    raise NotImplementedError(f"{type(self).__name__} has no predict(state, batch); evaluators "
                              "other than type 'method' need it.")

  def summary(self, example_batch: Batch) -> str:
    """The model summary table written to summary.txt (default: none)."""
    del example_batch
    return ""

  def final_report(self, state: TrainState) -> dict[str, Any]:
    """Extra files/values written at the end of training (e.g. a genotype); default none."""
    del state
    return {}
