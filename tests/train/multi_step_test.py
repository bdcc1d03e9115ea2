"""multi_step: several host batches per jitted call give the steps of one call per batch."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from jaxcompress import distributed, errors
from jaxcompress.train import multi_step


def _step(state, batch):
  # A step whose result depends on the order of the batches (not just on their sum).
  w, n = state
  grad = jnp.mean(batch["x"], axis=0) - w
  w = 0.5 * w + 0.3 * grad * (1.0 + n)
  return (w, n + 1), {"loss": jnp.sum(grad ** 2), "count": n}


def _batches(k, b=8, d=3, seed=0):
  rng = np.random.default_rng(seed)
  return [{"x": rng.standard_normal((b, d)).astype(np.float32)} for _ in range(k)]


def test_stack_pads_with_the_last_batch():
  batches = _batches(2)
  stack = multi_step.stack_batches(batches, 4)
  assert stack["x"].shape == (4, 8, 3)
  np.testing.assert_array_equal(stack["x"][1], batches[1]["x"])
  np.testing.assert_array_equal(stack["x"][3], batches[1]["x"])


@pytest.mark.parametrize("batches,match", [
    ([], "1 to 4 batches"), (_batches(5), "1 to 4 batches"),
    ([{"x": np.zeros((8, 3))}, {"x": np.zeros((7, 3))}], "same shapes")])
def test_stack_rejects_bad_inputs(batches, match):
  with pytest.raises(ValueError, match=match):
    multi_step.stack_batches(batches, 4)


@pytest.mark.parametrize("count", [1, 3, 4])
def test_loop_equals_one_call_per_batch(count):
  mesh = Mesh(np.array(jax.devices()[:1]), (distributed.DATA_AXIS,))
  fn = multi_step.jit_train_steps(
      _step, max_steps=4, state_sharding=distributed.replicated(mesh),
      batch_sharding=distributed.batch_sharding(mesh),
      stacked_batch_sharding=distributed.stacked_batch_sharding(mesh))
  batches = _batches(count)
  state = (jnp.zeros(3), jnp.asarray(0))
  expected, losses = state, []
  one = jax.jit(_step)
  for batch in batches:
    expected, metrics = one(expected, batch)
    losses.append(float(metrics["loss"]))
  stack = distributed.global_batches(multi_step.stack_batches(batches, 4), mesh)
  (w, n), history = fn(state, stack, count)
  assert int(n) == count
  np.testing.assert_allclose(np.asarray(w), np.asarray(expected[0]), rtol=1e-6)
  assert history["loss"].shape == (4,)
  np.testing.assert_allclose(np.asarray(history["loss"][:count]), losses, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(history["count"][:count]), np.arange(count))
  assert not np.any(np.asarray(history["loss"][count:]))  # untrained padding stays zero


@pytest.mark.skipif(jax.device_count() < 2, reason="needs several devices")
def test_stacked_batches_are_split_along_the_batch_axis():
  mesh = Mesh(np.array(jax.devices()), (distributed.DATA_AXIS,))
  b = 2 * jax.device_count()
  stack = distributed.global_batches(
      multi_step.stack_batches(_batches(2, b=b), 3), mesh)
  shard_shapes = {s.data.shape for s in stack["x"].addressable_shards}
  assert shard_shapes == {(3, 2, 3)}


def test_step_is_traced_once():
  # The metric-shape query and the loop body share one trace (supernet traces take seconds).
  traces = []

  def counting_step(state, batch):
    traces.append(1)
    return _step(state, batch)

  mesh = Mesh(np.array(jax.devices()[:1]), (distributed.DATA_AXIS,))
  fn = multi_step.jit_train_steps(
      counting_step, max_steps=3, state_sharding=distributed.replicated(mesh),
      batch_sharding=distributed.batch_sharding(mesh),
      stacked_batch_sharding=distributed.stacked_batch_sharding(mesh))
  # Placed as the engine places the state (replicated), so both calls see one input type.
  state = jax.device_put((jnp.zeros(3), jnp.asarray(0, jnp.int32)), distributed.replicated(mesh))
  for count in (3, 1):
    stack = distributed.global_batches(multi_step.stack_batches(_batches(count), 3), mesh)
    state, _ = fn(state, stack, count)
  assert len(traces) == 1


def _loop_fn(step, max_steps=2):
  mesh = Mesh(np.array(jax.devices()[:1]), (distributed.DATA_AXIS,))
  fn = multi_step.jit_train_steps(
      step, max_steps=max_steps, state_sharding=distributed.replicated(mesh),
      batch_sharding=distributed.batch_sharding(mesh),
      stacked_batch_sharding=distributed.stacked_batch_sharding(mesh))
  return fn, mesh


@pytest.mark.parametrize("bad_step,match", [
    (lambda s, b: ((s[0].astype(jnp.float16), s[1]), {}), r"\[0\] goes from float32\[3\] to float16"),
    (lambda s, b: ((s[0][:2], s[1]), {}), r"\[0\] goes from float32\[3\] to float32\[2\]"),
    (lambda s, b: ((s[0],), {}), "structure of the old one"),
])
def test_state_type_changes_name_the_leaf_and_the_fix(bad_step, match):
  fn, mesh = _loop_fn(bad_step)
  state = jax.device_put((jnp.zeros(3), jnp.asarray(0, jnp.int32)), distributed.replicated(mesh))
  stack = distributed.global_batches(multi_step.stack_batches(_batches(1), 2), mesh)
  with pytest.raises(errors.ConfigError, match=match) as info:
    fn(state, stack, 1)
  assert "steps_per_call=1" in str(info.value)


def test_weak_type_changes_are_accepted():
  # A weakly typed counter that the step makes strong is promoted by the loop, not refused.
  fn, mesh = _loop_fn(lambda s, b: ((s[0] + 1.0, s[1].astype(jnp.int32) + 1), {}))
  state = jax.device_put((jnp.zeros(3), jnp.asarray(0)), distributed.replicated(mesh))
  stack = distributed.global_batches(multi_step.stack_batches(_batches(2), 2), mesh)
  (w, n), _ = fn(state, stack, 2)
  assert int(n) == 2 and float(w[0]) == 2.0
