"""Several host-pipeline training steps in one jitted call (`config.steps_per_call`).

The host pipeline hands each step a batch from Python. Calling the jitted step once per batch
costs, per step, one dispatch and, on CPU, one fresh temporary buffer: XLA:CPU allocates all of
a step's intermediate values (about 300 MB for a CIFAR ResNet-20 at batch 128) in one block per
execution, glibc maps that block anew each time and the kernel faults in every page on first
touch (50,000 minor faults per float ResNet-20 step; BENCHMARKS.md). PyTorch's caching allocator
keeps its pages, so the cost is XLA's alone.

Here up to `max_steps` consecutive host batches are stacked along a new leading axis and run by
one jitted `lax.fori_loop`: the loop body's buffers are allocated once per call and reused by
every step in it, and the step count is a traced argument, so a shorter run of steps (before an
epoch end, an evaluation or a checkpoint) reuses the same compilation. The steps are the
method's own `train_step`, in order, on the same batches: only the grouping changes (Keras's
`steps_per_execution`, TPUEstimator's `iterations_per_loop`). The price is memory for
`max_steps` batches on the host and on each device.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress.errors import ConfigError

Batch = dict[str, Any]
TrainStep = Callable[[Any, Batch], tuple[Any, dict[str, jax.Array]]]


def stack_batches(batches: list[Batch], max_steps: int) -> Batch:
  """Stacks host batches along a new leading axis, padded to `max_steps` entries.

  The padding repeats the last batch; those entries are never trained on (the loop stops after
  `len(batches)` steps). A fixed leading size keeps one compilation for every run length.

  Args:
    batches: 1 to `max_steps` batches with equal structure and shapes.
    max_steps: the leading size of the result.

  Returns:
    The batch tree with leaves of shape (max_steps, *leaf shape).

  Raises:
    ValueError: no batches, more than `max_steps`, or batches of different shapes.
  """
  if not 1 <= len(batches) <= max_steps:
    raise ValueError(f"stack_batches needs 1 to {max_steps} batches, got {len(batches)}.")
  padded = list(batches) + [batches[-1]] * (max_steps - len(batches))
  try:
    return jax.tree.map(lambda *leaves: np.stack([np.asarray(x) for x in leaves]), *padded)
  except ValueError as e:
    raise ValueError(f"The host batches of one call differ in structure or shape ({e}); every "
                     "training batch must have the same shapes (drop the remainder batch).") from e


def _check_state_types(state: Any, new_state: Any) -> None:
  """Raises a ConfigError naming the leaf when a step changes the state's structure or types.

  One call per step tolerates that (each call is traced for its own input types); a loop needs
  the state it carries to keep its types, and JAX's own error does not say which config to change.
  """
  before, after = jax.tree.structure(state), jax.tree.structure(new_state)
  if before != after:
    raise ConfigError(f"config.steps_per_call > 1 runs train_step in a loop, which needs the new "
                      f"state to have the structure of the old one; got {after} from {before}. "
                      "Return the same pytree from train_step, or set config.steps_per_call=1.")
  for (path, old), new in zip(jax.tree_util.tree_leaves_with_path(state),
                              jax.tree.leaves(new_state)):
    # Weak types may differ: the loop promotes those itself.
    old_type, new_type = (jnp.shape(old), jnp.result_type(old)), (new.shape, new.dtype)
    if old_type != new_type:
      raise ConfigError(
          f"config.steps_per_call > 1 runs train_step in a loop, which needs every state leaf to "
          f"keep its shape and dtype; {jax.tree_util.keystr(path)} goes from "
          f"{old_type[1]}{list(old_type[0])} to {new_type[1]}{list(new_type[0])}. Cast it in "
          "train_step (e.g. jnp.asarray(x, old.dtype)), or set config.steps_per_call=1.")


def jit_train_steps(train_step: TrainStep, *, max_steps: int,
                    state_sharding: jax.sharding.Sharding,
                    batch_sharding: jax.sharding.Sharding,
                    stacked_batch_sharding: jax.sharding.Sharding,
                    compiler_options: dict[str, Any] | None = None) -> Callable[..., Any]:
  """Jits `count` consecutive steps over a stack of `max_steps` batches (count <= max_steps).

  Args:
    train_step: the method's pure `(state, batch) -> (state, metrics)`.
    max_steps: the stack's leading size (`config.steps_per_call`).
    state_sharding: the train state's sharding (replicated).
    batch_sharding: how one batch is split over the mesh (its leading axis).
    stacked_batch_sharding: the same for the stack (its second axis).
    compiler_options: XLA options (`config.compiler_options`), or None.

  Returns:
    `train_step_loop(state, batches, count) -> (state, metrics)` (`train_steps_loop`), jitted
    with the state donated; `count` is traced, so every count shares one compilation.
  """
  return jax.jit(train_steps_loop(train_step, max_steps=max_steps, batch_sharding=batch_sharding),
                 donate_argnums=0, in_shardings=(state_sharding, stacked_batch_sharding, None),
                 out_shardings=(state_sharding, state_sharding),
                 compiler_options=compiler_options)


def train_steps_loop(train_step: TrainStep, *, max_steps: int,
                     batch_sharding: jax.sharding.Sharding) -> Callable[..., Any]:
  """The function `jit_train_steps` jits: `count` steps over a stack of `max_steps` batches.

  Args:
    train_step: the method's pure `(state, batch) -> (state, metrics)`.
    max_steps: the stack's leading size (`config.steps_per_call`).
    batch_sharding: how one batch is split over the mesh (its leading axis).

  Returns:
    `train_step_loop(state, batches, count) -> (state, metrics)`: steps on `batches[0 ..
    count-1]` in order; each metric is stacked along a leading axis of size `max_steps`, of
    which the first `count` entries are the steps' values (the rest are zeros).
  """

  # Called through its own jit: the shape query below and the loop body then share one trace
  # (JAX caches the traced step by argument types), which matters for supernets whose trace
  # takes seconds. XLA inlines the nested call, so the compiled loop is the same.
  step = jax.jit(train_step)

  def train_step_loop(state: Any, batches: Batch, count: jax.Array
                      ) -> tuple[Any, dict[str, jax.Array]]:
    def one_batch(i):
      batch = jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, i, keepdims=False),
                           batches)
      return jax.lax.with_sharding_constraint(batch, batch_sharding)

    state_shapes, metric_shapes = jax.eval_shape(step, state, one_batch(0))
    _check_state_types(state, state_shapes)
    history = jax.tree.map(lambda s: jnp.zeros((max_steps,) + s.shape, s.dtype), metric_shapes)

    def body(i, carry):
      state, history = carry
      state, metrics = step(state, one_batch(i))
      history = jax.tree.map(lambda h, m: h.at[i].set(m), history, metrics)
      return state, history

    return jax.lax.fori_loop(0, count, body, (state, history))

  return train_step_loop
