"""Native depthwise convolution kernels vs lax's grouped convolution (values and gradients)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxcompress.ops import conv as conv_ops
from jaxcompress.ops import depthwise_conv

pytestmark = pytest.mark.skipif(not depthwise_conv.available(),
                                reason="native depthwise kernels not built here "
                                       "(no compiler, JAXCOMPRESS_NATIVE=0 or not a CPU)")

CASES = [  # (input shape, kernel, strides, pads, dilation)
    ((4, 12, 12, 4), (5, 5), (1, 1), ((2, 2), (2, 2)), (1, 1)),   # PC-DARTS sep_conv_5x5
    ((4, 12, 12, 8), (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1)),   # stride-2 edge
    ((2, 9, 11, 6), (3, 3), (1, 1), ((2, 2), (2, 2)), (2, 2)),    # dil_conv_3x3
    ((2, 9, 11, 6), (5, 5), (2, 2), ((4, 4), (4, 4)), (2, 2)),    # dil_conv_5x5, stride 2
    ((3, 7, 6, 17), (3, 1), (1, 2), ((0, 2), (1, 0)), (1, 1)),    # uneven pads, odd channels
]


def _lax(x, w, strides, pads, rhs_dil):
  return lax.conv_general_dilated(x, w, strides, pads, rhs_dilation=rhs_dil,
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                  feature_group_count=x.shape[-1], precision="highest")


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-s{c[2][0]}-d{c[4][0]}")
@pytest.mark.parametrize("jit", [False, True])
def test_values_and_gradients_match_lax(case, jit):
  shape, kshape, strides, pads, rhs_dil = case
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
  w = jnp.asarray(rng.standard_normal((*kshape, 1, shape[-1])), jnp.float32)

  def loss(conv):
    return lambda a, b: jnp.sum(jnp.sin(conv(a, b, strides, pads, rhs_dil)))

  got_fn = jax.value_and_grad(loss(depthwise_conv.depthwise_conv), (0, 1))
  got_fn = jax.jit(got_fn) if jit else got_fn
  value, (dx, dw) = got_fn(x, w)
  want, (want_dx, want_dw) = jax.value_and_grad(loss(_lax), (0, 1))(x, w)
  np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(dx, want_dx, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(dw, want_dw, rtol=1e-5, atol=1e-4)


def test_weight_gradient_is_the_same_bits_on_every_call():
  # Several row ranges run on the thread pool; their partial sums must not be added in the
  # order the threads finish.
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((32, 16, 16, 16)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((3, 3, 1, 16)), jnp.float32)
  grad = jax.jit(jax.grad(lambda b: jnp.sum(jnp.sin(depthwise_conv.depthwise_conv(
      x, b, (1, 1), ((1, 1), (1, 1)), (1, 1))))))
  first = np.asarray(grad(w))
  for _ in range(30):
    np.testing.assert_array_equal(np.asarray(grad(w)), first)


def test_one_instruction_per_convolution_and_gradient():
  x = jnp.ones((2, 8, 8, 4))
  w = jnp.ones((5, 5, 1, 4))
  grad = jax.jit(jax.grad(lambda a, b: jnp.sum(depthwise_conv.depthwise_conv(
      a, b, (1, 1), ((2, 2), (2, 2)), (1, 1)) ** 2), (0, 1)))
  text = grad.lower(x, w).as_text()
  assert text.count(depthwise_conv.FORWARD_TARGET) == 2  # forward and input gradient
  assert text.count(depthwise_conv.WEIGHT_GRAD_TARGET) == 1


def test_library_convolution_uses_it_on_one_device(monkeypatch):
  # The tests run with several CPU devices, where the FFI call (no SPMD rule) is not used;
  # pretend one device to see the library's choice.
  monkeypatch.setattr(jax, "device_count", lambda *a, **k: 1)
  x = jnp.ones((2, 8, 8, 4))
  w = jnp.ones((3, 3, 1, 4))
  fn = jax.jit(lambda a, b: conv_ops.conv_general_dilated(
      a, b, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=4))
  assert depthwise_conv.FORWARD_TARGET in fn.lower(x, w).as_text()
  np.testing.assert_allclose(fn(x, w), _lax(x, w, (1, 1), ((1, 1), (1, 1)), (1, 1)), rtol=1e-6)


def test_rejects_what_it_cannot_run():
  with pytest.raises(ValueError, match="float32"):
    depthwise_conv.depthwise_conv(jnp.ones((1, 4, 4, 2), jnp.float16),
                                  jnp.ones((3, 3, 1, 2), jnp.float16), (1, 1),
                                  ((1, 1), (1, 1)), (1, 1))
  with pytest.raises(ValueError, match="padding >= 0"):
    depthwise_conv.depthwise_conv(jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 1, 2)), (1, 1),
                                  ((-1, 1), (1, 1)), (1, 1))
