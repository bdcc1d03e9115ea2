"""Exponential moving average (EMA) of a model: parameters and, by rule, batch-norm statistics.

    ema <- decay_t * ema + (1 - decay_t) * live

with, when `warmup` is on, the decay of TensorFlow's `tf.train.ExponentialMovingAverage` given
`num_updates`:

    decay_t = min(decay, (1 + t) / (10 + t)),   t = number of EMA updates done before this one,

so the average follows the live model closely at first (0.1, 0.18, 0.25, ...) instead of staying
near its initial value for ~1 / (1 - decay) steps.

Non-trainable model state (batch-norm running mean/var) is handled by an explicit rule:
  "copy": the EMA model uses the live model's current statistics;
  "average": the statistics are averaged with the same decay as the parameters (as timm's
    `ModelEmaV2`, which averages every entry of the state dict, buffers included);
  "keep": the EMA statistics are left untouched (e.g. re-estimated separately before eval).

Only floating-point leaves are averaged; integer leaves (counters, step schedules) are copied
from the live model whatever the rule ("keep" leaves them as they are).

Everything is pure and jit-able; keep the `EMAState` in `TrainState.extra`:

  >>> extra = {"ema": ema.init(state.params, state.model_state)}
  >>> # in the train step, after the optimizer step:
  >>> new_ema = ema.update(extra["ema"], new.params, new.model_state, decay=0.999)
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp

from jaxcompress.errors import ConfigError

PyTree = Any

BATCH_STATS_RULES = ("copy", "average", "keep")


@flax.struct.dataclass
class EMAState:
  """The averaged model.

  Attributes:
    params: EMA of the parameters (same structure and dtypes as the live ones).
    model_state: the EMA model's non-trainable state (per the batch-stats rule).
    count: number of updates applied (int32 scalar): `t` of the warm-up decay.
  """
  params: PyTree
  model_state: PyTree
  count: jax.Array


def init(params: PyTree, model_state: PyTree | None = None) -> EMAState:
  """An EMA starting at the given model (count 0).

  Args:
    params: the live parameters (copied).
    model_state: the live non-trainable state ({} when None).

  Returns:
    The initial EMAState.
  """
  copy = lambda tree: jax.tree.map(jnp.array, tree)
  return EMAState(params=copy(params), model_state=copy(model_state or {}),
                  count=jnp.zeros((), jnp.int32))


def decay_at(decay: float | jax.Array, count: jax.Array | int,
             warmup: bool = True) -> jax.Array:
  """The decay of update number `count` (0-based).

  Args:
    decay: the target decay (e.g. 0.999).
    count: EMA updates done before this one.
    warmup: apply TF's `min(decay, (1 + t) / (10 + t))` (ExponentialMovingAverage with
      `num_updates`); False returns `decay`.

  Returns:
    float32 scalar decay_t.
  """
  decay = jnp.asarray(decay, jnp.float32)
  if not warmup:
    return decay
  t = jnp.asarray(count, jnp.float32)
  return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


def average(ema_tree: PyTree, tree: PyTree, decay_t: jax.Array) -> PyTree:
  """`ema + (1 - decay_t) * (live - ema)` per floating leaf; integer/bool leaves take `live`.

  The update form of tf.train.ExponentialMovingAverage (`shadow -= (1 - decay) * (shadow -
  value)`), equal to decay_t * ema + (1 - decay_t) * live.

  Args:
    ema_tree: the averaged tree.
    tree: the live tree (same structure).
    decay_t: scalar decay.

  Returns:
    The new averaged tree (leaf dtypes of `ema_tree`).
  """
  def one(e, x):
    if not jnp.issubdtype(jnp.result_type(e), jnp.inexact):
      return jnp.asarray(x)
    d = jnp.asarray(decay_t).astype(jnp.result_type(e))
    return (e + (1 - d) * (jnp.asarray(x, e.dtype) - e)).astype(e.dtype)
  return jax.tree.map(one, ema_tree, tree)


def update(ema: EMAState, params: PyTree, model_state: PyTree | None = None, *,
           decay: float | jax.Array, warmup: bool = True,
           batch_stats: str = "copy") -> EMAState:
  """One EMA update towards the live model.

  Args:
    ema: the current EMAState.
    params: the live parameters.
    model_state: the live non-trainable state (needed for "copy" and "average").
    decay: target decay.
    warmup: TF's num_updates warm-up of the decay (see `decay_at`).
    batch_stats: rule for `model_state`: "copy", "average" or "keep".

  Returns:
    The new EMAState (count + 1).

  Raises:
    ConfigError: unknown rule, or a rule that needs `model_state` without it.
  """
  if batch_stats not in BATCH_STATS_RULES:
    raise ConfigError(f"Unknown EMA batch-stats rule {batch_stats!r}; use one of "
                      f"{', '.join(BATCH_STATS_RULES)}.")
  if model_state is None and batch_stats != "keep" and jax.tree.leaves(ema.model_state):
    raise ConfigError(f"EMA batch-stats rule {batch_stats!r} needs the live model_state; pass "
                      "it, or use batch_stats='keep'.")
  d = decay_at(decay, ema.count, warmup)
  if batch_stats == "copy":
    new_ms = jax.tree.map(jnp.asarray, model_state)
  elif batch_stats == "average":
    new_ms = average(ema.model_state, model_state, d)
  else:
    new_ms = ema.model_state
  return EMAState(params=average(ema.params, params, d),
                  model_state=new_ms if new_ms is not None else {}, count=ema.count + 1)
