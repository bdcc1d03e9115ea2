"""Tests for jaxcompress.ops.onednn_conv: oneDNN convolutions through XLA:CPU's custom call."""
from __future__ import annotations

import os
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from jax import lax

from jaxcompress.ops import conv as conv_ops
from jaxcompress.ops import onednn_conv


def _numpy_conv(x: np.ndarray, w: np.ndarray, strides, pads, dil) -> np.ndarray:
  """Direct channel-last convolution in float64 (independent of XLA and oneDNN)."""
  nsp = x.ndim - 2
  xp = np.pad(x.astype(np.float64), [(0, 0)] + [tuple(p) for p in pads] + [(0, 0)])
  kshape = w.shape[:nsp]
  out_sp = [(xp.shape[1 + i] - (kshape[i] - 1) * dil[i] - 1) // strides[i] + 1
            for i in range(nsp)]
  out = np.zeros((x.shape[0], *out_sp, w.shape[-1]))
  for tap in np.ndindex(*kshape):
    view = xp[(slice(None),) + tuple(
        slice(t * d, t * d + (o - 1) * s + 1, s)
        for t, d, o, s in zip(tap, dil, out_sp, strides))]
    out += np.einsum("n...c,co->n...o", view, w[tap].astype(np.float64))
  return out


# (name, lhs shape, kernel spatial shape, out channels, strides, pads, dilation)
CASES = [
    ("3x3_s1", (2, 8, 8, 3), (3, 3), 4, (1, 1), ((1, 1), (1, 1)), (1, 1)),
    ("3x3_s2_asym", (2, 9, 7, 3), (3, 3), 5, (2, 2), ((1, 2), (0, 1)), (1, 1)),
    ("3x3_dilated", (1, 11, 10, 2), (3, 3), 3, (1, 2), ((2, 2), (3, 1)), (2, 3)),
    ("1x1_s2", (3, 7, 7, 4), (1, 1), 6, (2, 2), ((0, 0), (0, 0)), (1, 1)),
    ("5x2_valid", (2, 9, 6, 2), (5, 2), 3, (1, 1), ((0, 0), (0, 0)), (1, 1)),
    ("1d", (2, 13, 3), (3,), 4, (2,), ((1, 1),), (1,)),
    ("3d", (1, 5, 6, 4, 2), (3, 3, 2), 3, (1, 2, 1), ((1, 1), (0, 1), (1, 0)), (1, 1, 1)),
]


def _case_inputs(lhs_shape, kshape, out_ch):
  rng = np.random.default_rng(sum(lhs_shape) + out_ch)
  x = rng.standard_normal(lhs_shape).astype(np.float32)
  w = rng.standard_normal((*kshape, lhs_shape[-1], out_ch)).astype(np.float32)
  return x, w


class OneDnnConvTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    if not onednn_conv.available():
      # Only where jaxlib has no usable `__onednn$convolution` (not x86-64, another jaxlib
      # minor version, opt-out set); `test_unavailable_*` cover the conditions themselves.
      self.skipTest("oneDNN convolutions are not available in this process")

  @parameterized.named_parameters(*CASES)
  def test_matches_numpy_reference_jitted_and_not(self, lhs_shape, kshape, out_ch, strides,
                                                  pads, dil):
    x, w = _case_inputs(lhs_shape, kshape, out_ch)
    want = _numpy_conv(x, w, strides, pads, dil)
    eager = onednn_conv.onednn_conv(jnp.asarray(x), jnp.asarray(w), strides, pads, dil)
    jitted = jax.jit(onednn_conv.onednn_conv, static_argnums=(2, 3, 4))(
        jnp.asarray(x), jnp.asarray(w), strides, pads, dil)
    for got in (eager, jitted):
      self.assertEqual(got.shape, want.shape)
      self.assertEqual(got.dtype, jnp.float32)
      np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)

  def test_lowers_to_the_onednn_custom_call(self):
    x, w = _case_inputs((2, 8, 8, 3), (3, 3), 4)
    hlo = jax.jit(lambda a, b: onednn_conv.onednn_conv(
        a, b, (1, 1), ((1, 1), (1, 1)), (1, 1))).lower(x, w).compile().as_text()
    self.assertIn(onednn_conv.CUSTOM_CALL_TARGET, hlo)
    self.assertNotIn(" convolution(", hlo)

  def test_gradients_vmap_and_loop_bodies(self):
    x, w = _case_inputs((3, 9, 8, 2), (3, 3), 4)
    params = dict(strides=(2, 1), pads=((1, 1), (2, 0)), rhs_dil=(1, 2))
    fast = lambda a, b: onednn_conv.onednn_conv(a, b, **params)
    ref = lambda a, b: onednn_conv._reference(a, b, **params)
    loss = lambda f: (lambda a, b: jnp.sum(jnp.sin(f(a, b))))
    for got, want in zip(jax.jit(jax.grad(loss(fast), (0, 1)))(x, w),
                         jax.grad(loss(ref), (0, 1))(x, w)):
      np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    # Second order (through the JVP rule): a Hessian-vector product.
    hvp = lambda f: jax.jvp(jax.grad(lambda a: jnp.sum(jnp.sin(f(a, w)))), (x,),
                            (jnp.ones_like(x),))[1]
    np.testing.assert_allclose(np.asarray(hvp(fast)), np.asarray(hvp(ref)), rtol=1e-4,
                               atol=1e-4)
    # vmap over a leading axis of the input (the batching rule).
    xs = np.stack([x, 2 * x])
    np.testing.assert_allclose(np.asarray(jax.vmap(lambda a: fast(a, w))(xs)),
                               np.asarray(jax.vmap(lambda a: ref(a, w))(xs)), rtol=1e-5,
                               atol=1e-5)
    # Inside a lax.scan body (on-device epochs, PGD attacks run convolutions there).
    body = lambda c, a: (c + jnp.sum(fast(a, w)), None)
    got = jax.jit(lambda s: lax.scan(body, 0.0, s)[0])(xs)
    np.testing.assert_allclose(float(got), float(jnp.sum(ref(xs[0], w)) + jnp.sum(ref(xs[1], w))),
                               rtol=1e-5)

  def test_rejects_what_the_custom_call_cannot_take(self):
    x, w = _case_inputs((1, 6, 6, 2), (3, 3), 2)
    with self.assertRaisesRegex(ValueError, "float32"):
      onednn_conv.onednn_conv(jnp.asarray(x, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16),
                              (1, 1), ((1, 1), (1, 1)), (1, 1))
    with self.assertRaisesRegex(ValueError, "padding >= 0"):
      onednn_conv.onednn_conv(x, w, (1, 1), ((-1, 1), (1, 1)), (1, 1))
    with self.assertRaisesRegex(ValueError, "channel-last pair"):
      onednn_conv.onednn_conv(x, w[:, :, :1], (1, 1), ((1, 1), (1, 1)), (1, 1))


class AvailabilityTest(absltest.TestCase):

  def test_unavailable_when_opted_out_or_elsewhere(self):
    with mock.patch.dict(os.environ, {onednn_conv.OPT_OUT_ENV: "0"}):
      self.assertFalse(onednn_conv.available())
    with mock.patch.object(onednn_conv.platform, "machine", return_value="aarch64"):
      self.assertFalse(onednn_conv.available())
    with mock.patch.object(onednn_conv.xla_cpu.jaxlib, "__version__", "0.99.0"):
      self.assertFalse(onednn_conv.available())

  def test_conv_layer_takes_onednn_only_where_it_applies(self):
    big = jnp.ones((128, 32, 32, 16), jnp.float32)   # 604 MFLOP with a 3x3 16->16 kernel
    small = jnp.ones((8, 8, 8, 16), jnp.float32)     # 2.4 MFLOP
    w = jnp.ones((3, 3, 16, 16), jnp.float32)
    applies = lambda x, pet=None, kernel=w: conv_ops._onednn_applies(
        x, kernel, (1, 1), ((1, 1), (1, 1)), (1, 1), pet)
    with mock.patch.object(conv_ops.jax, "device_count", return_value=1):
      self.assertEqual(applies(big), onednn_conv.available())
      self.assertFalse(applies(small))  # below _ONEDNN_MIN_FLOPS: XLA's convolution
      self.assertFalse(applies(big.astype(jnp.bfloat16), kernel=w.astype(jnp.bfloat16)))
      self.assertFalse(applies(big, jnp.dtype(jnp.float64)))
      with mock.patch.object(conv_ops, "_ONEDNN_MIN_FLOPS", 0):
        self.assertEqual(applies(small), onednn_conv.available())
    with mock.patch.object(conv_ops.jax, "device_count", return_value=8):
      # Several devices: the custom call has no partitioning rule, so XLA's convolution.
      self.assertFalse(applies(big))


if __name__ == "__main__":
  absltest.main()
