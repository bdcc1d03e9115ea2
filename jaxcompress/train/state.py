"""The one training state every method uses.

Everything the next step needs lives here, so a checkpoint restores a run exactly: parameters,
non-trainable model state (batch statistics), one optimizer state per optimizer (a dict, so GAN
generator/discriminator or NAS weights/architecture fit without a new class), method state in
`extra` (rotation matrices, bandit statistics, EMA teachers, queues) and the base RNG key.
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from jaxcompress.optim import builder

PyTree = Any


@flax.struct.dataclass
class TrainState:
  """Training state: a pytree of arrays only.

  Attributes:
    step: number of gradient steps taken (int32 scalar).
    params: trainable parameters.
    model_state: non-trainable collections (e.g. {"batch_stats": ...}); {} when none.
    opt_state: {optimizer name: optax state}.
    extra: method state (any pytree of arrays; {} when none).
    rng: base PRNG key as raw uint32 key data (portable through checkpoints); use `step_rng`.
  """
  step: jax.Array
  params: PyTree
  model_state: PyTree
  opt_state: dict[str, PyTree]
  extra: PyTree
  rng: jax.Array

  @classmethod
  def create(cls, *, params: PyTree, rng: jax.Array, model_state: PyTree | None = None,
             optimizers: dict[str, tuple[optax.GradientTransformation, PyTree]] | None = None,
             extra: PyTree | None = None) -> "TrainState":
    """Builds a state at step 0.

    Args:
      params: trainable parameters.
      rng: a PRNG key (typed or raw).
      model_state: non-trainable collections.
      optimizers: {name: (optax transform, the params it updates)}; each gets `tx.init(params)`.
      extra: method state.

    Returns:
      The new TrainState.
    """
    opt_state = {name: tx.init(p) for name, (tx, p) in (optimizers or {}).items()}
    if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
      rng = jax.random.key_data(rng)
    return cls(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state or {},
               opt_state=opt_state, extra=extra if extra is not None else {}, rng=rng)

  def apply_gradients(self, tx: optax.GradientTransformation, grads: PyTree, *,
                      name: str = "model", **changes: Any) -> "TrainState":
    """One optimizer step on `params`: the state after `tx` applied `grads`.

    `tx.update(grads, opt_state[name], params)`, `optax.apply_updates`, `step + 1`; any other
    field given in `changes` (model_state, extra, ...) is replaced as well. For an optimizer over
    parameters kept elsewhere (architecture parameters, a teacher in `extra`) use
    `jaxcompress.optim.builder.apply_updates`.

    Args:
      tx: the optimizer whose state is `opt_state[name]`.
      grads: gradients with the structure of `params`.
      name: which optimizer state to use and update.
      **changes: other fields to replace (not step, params or opt_state).

    Returns:
      The new TrainState.
    """
    taken = {"step", "params", "opt_state"} & set(changes)
    if taken:
      raise TypeError(f"apply_gradients sets {sorted(taken)} itself; replace them separately.")
    if name not in self.opt_state:
      raise KeyError(f"No optimizer state {name!r}; this state has {sorted(self.opt_state)}.")
    params, opt = builder.apply_updates(tx, grads, self.opt_state[name], self.params)
    return self.replace(step=self.step + 1, params=params,
                        opt_state={**self.opt_state, name: opt}, **changes)

  def step_rng(self, *salt: int) -> jax.Array:
    """A typed key unique to this step (and salt): fold the step into the base key."""
    key = jax.random.fold_in(jax.random.wrap_key_data(self.rng), self.step)
    for s in salt:
      key = jax.random.fold_in(key, s)
    return key
