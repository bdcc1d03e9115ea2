"""Tests for jaxcompress.recording: the module-call recorder shared by the model analyses."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from jaxcompress import recording


class Block(nn.Module):
  features: int

  def helper(self, x):  # a method other than __call__: not a recorded call
    return x * 2.0

  @nn.compact
  def __call__(self, x, scale=1.0):
    y = nn.Dense(self.features, name="fc")(x)
    return self.helper(nn.relu(y)) * scale


class Net(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = Block(4, name="b0")(x)
    x = Block(3, name="b1")(x, scale=0.5)
    return nn.Dense(2, name="head")(x)


X = jax.ShapeDtypeStruct((5, 6), jnp.float32)


def _init_calls(**kwargs):
  return recording.record_calls(lambda x: Net().init(jax.random.key(0), x), X, **kwargs)


def test_calls_in_start_order_with_parents_and_return_order():
  calls, variables = _init_calls()
  assert [c.name for c in calls] == ["", "b0", "b0/fc", "b1", "b1/fc", "head"]
  assert [c.parent for c in calls] == [None, 0, 1, 0, 3, 0]
  # Children return before their parents.
  by_return = [c.name for c in sorted(calls, key=lambda c: c.returned)]
  assert by_return == ["b0/fc", "b0", "b1/fc", "b1", "head", ""]
  assert [type(c.module).__name__ for c in calls] == ["Net", "Block", "Dense", "Block", "Dense",
                                                      "Dense"]
  # Shape-only: the result is abstract, the variables are the model's.
  assert variables["params"]["b1"]["fc"]["kernel"].shape == (4, 3)
  assert isinstance(variables["params"]["head"]["bias"], jax.ShapeDtypeStruct)


def test_inputs_outputs_and_keyword_arguments():
  calls, _ = _init_calls()
  by_name = {c.name: c for c in calls}
  assert by_name["b0"].x.shape == (5, 6) and by_name["b0"].output.shape == (5, 4)
  assert by_name["b1"].kwargs == {"scale": 0.5}
  assert by_name["b1"].x is by_name["b0"].output   # the same traced array flows on
  assert by_name["head"].x is by_name["b1"].output
  assert by_name[""].output is by_name["head"].output


def test_variables_are_recorded_only_on_request():
  calls, _ = _init_calls()
  assert all(c.variables is None for c in calls)
  calls, _ = _init_calls(variables=True)
  by_name = {c.name: c for c in calls}
  assert set(by_name["b0/fc"].variables["params"]) == {"kernel", "bias"}
  assert set(by_name["b0"].variables["params"]) == {"fc"}


def test_apply_with_static_closure_and_several_arguments():
  variables = Net().init(jax.random.key(0), jnp.ones((5, 6)))
  calls, out = recording.record_calls(lambda v, x: Net().apply(v, x), variables, X)
  assert out.shape == (5, 2) and len(calls) == 6


def test_recording_is_isolated_from_outer_interceptors():
  seen = []

  def outer(next_fun, args, kwargs, context):
    seen.append("/".join(context.module.path))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(outer):
    calls, _ = _init_calls()
    assert len(calls) == 6 and not seen
    Net().init(jax.random.key(0), jnp.ones((5, 6)))   # the outer interceptor is back
  assert "b0/fc" in seen


def test_an_error_inside_the_model_propagates():
  class Bad(nn.Module):
    @nn.compact
    def __call__(self, x):
      raise ValueError("broken layer")

  with pytest.raises(ValueError, match="broken layer"):
    recording.record_calls(lambda x: Bad().init(jax.random.key(0), x), X)
