"""TrainState: create, step_rng and apply_gradients (equal to the manual optax sequence)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcompress.train.state import TrainState


def _state():
  params = {"dense": {"kernel": jnp.arange(6.0).reshape(2, 3), "bias": jnp.ones(3)}}
  arch = {"alpha": jnp.zeros(4)}
  model_tx = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1, momentum=0.9))
  arch_tx = optax.adam(0.05)
  state = TrainState.create(params=params, rng=jax.random.key(3),
                            model_state={"batch_stats": {"mean": jnp.zeros(3)}},
                            optimizers={"model": (model_tx, params), "arch": (arch_tx, arch)},
                            extra={"arch": arch})
  return state, model_tx, arch_tx


def _grads(params, seed):
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])


def _equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b) and len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_create_initialises_every_optimizer_and_raw_rng():
  state, model_tx, arch_tx = _state()
  assert int(state.step) == 0 and state.step.dtype == jnp.int32
  assert set(state.opt_state) == {"model", "arch"}
  _equal(state.opt_state["arch"], arch_tx.init(state.extra["arch"]))
  _equal(state.opt_state["model"], model_tx.init(state.params))
  assert state.rng.dtype == jnp.uint32  # raw key data, portable through checkpoints


def test_apply_gradients_equals_the_manual_sequence():
  state, model_tx, _ = _state()
  new_ms = {"batch_stats": {"mean": jnp.full(3, 2.0)}}

  @jax.jit
  def two_steps(state):
    for seed in (1, 2):
      state = state.apply_gradients(model_tx, _grads(state.params, seed), model_state=new_ms,
                                    extra={"arch": state.extra["arch"], "seen": state.step})
    return state

  @jax.jit
  def manual(state):
    for seed in (1, 2):
      grads = _grads(state.params, seed)
      updates, opt = model_tx.update(grads, state.opt_state["model"], state.params)
      state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                            model_state=new_ms, extra={"arch": state.extra["arch"],
                                                       "seen": state.step},
                            opt_state={**state.opt_state, "model": opt})
    return state

  got, want = two_steps(state), manual(state)
  _equal(got, want)
  assert int(got.step) == 2 and int(got.extra["seen"]) == 1
  # the step really moved the parameters and left the other optimizer alone.
  assert not np.allclose(np.asarray(got.params["dense"]["kernel"]),
                         np.asarray(state.params["dense"]["kernel"]))
  _equal(got.opt_state["arch"], state.opt_state["arch"])
  _equal(got.rng, state.rng)


def test_apply_gradients_with_a_named_optimizer():
  # A second optimizer over `params` (e.g. a GAN discriminator state kept under another name).
  params = {"w": jnp.array([1.0, -1.0])}
  tx = optax.sgd(0.5)
  state = TrainState.create(params=params, rng=jax.random.key(0),
                            optimizers={"model": (optax.adam(1.0), params), "other": (tx, params)})
  new = state.apply_gradients(tx, {"w": jnp.array([1.0, 2.0])}, name="other")
  np.testing.assert_allclose(np.asarray(new.params["w"]), [0.5, -2.0])
  _equal(new.opt_state["model"], state.opt_state["model"])
  with pytest.raises(KeyError, match="'arch'"):
    state.apply_gradients(tx, params, name="arch")
  with pytest.raises(TypeError, match="params"):
    state.apply_gradients(tx, params, params=params)


def test_step_rng_depends_on_step_and_salt():
  state, _, _ = _state()
  k0 = jax.random.key_data(state.step_rng())
  assert not np.array_equal(k0, jax.random.key_data(state.step_rng(1)))
  assert not np.array_equal(k0, jax.random.key_data(state.replace(step=state.step + 1).step_rng()))
  np.testing.assert_array_equal(k0, jax.random.key_data(state.step_rng()))
