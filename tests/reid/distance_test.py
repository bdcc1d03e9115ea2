"""Tests for jaxcompress.reid.distance against NumPy references (values and gradients)."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from jaxcompress import reid


def np_sq_dist(x, y):
  """Direct (x_i - y_j)**2 sums in float64: no expansion, an independent reference."""
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)


def np_euclidean_grads(x, y, w):
  """d/dx, d/dy of sum(w * sqrt(max(d2, 1e-12))); zero where the clamp is active."""
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  d2 = np_sq_dist(x, y)
  active = d2 > 1e-12
  coef = np.where(active, w / np.sqrt(np.where(active, d2, 1.0)), 0.0)  # w_ij / d_ij
  diff = x[:, None, :] - y[None, :, :]  # d d2 / d x_i = 2 (x_i - y_j); d sqrt = 1 / (2 d)
  gx = (coef[:, :, None] * diff).sum(1)
  gy = -(coef[:, :, None] * diff).sum(0)
  return gx, gy


def np_sq_grads(x, y, w):
  """d/dx, d/dy of sum(w * d2) with d2 = ||x_i - y_j||**2."""
  diff = np.asarray(x, np.float64)[:, None, :] - np.asarray(y, np.float64)[None, :, :]
  return 2 * (w[:, :, None] * diff).sum(1), -2 * (w[:, :, None] * diff).sum(0)


def _data(seed=0, m=5, n=7, d=6):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(m, d))
  y = rng.normal(size=(n, d))
  w = rng.normal(size=(m, n))
  # Row 2 of x equals row 4 of y: a zero distance, where euclidean_dist's clamp is active. Values
  # on a dyadic grid make ||x||**2 + ||y||**2 - 2 x.y exactly 0 in float32 and float64.
  x = np.round(x * 8) / 8
  y = np.round(y * 8) / 8
  x[2] = y[4]
  return x, y, w


class DistanceTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_values_float32(self):
    x, y, _ = _data()
    ref = np_sq_dist(x, y)
    x32, y32 = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    sq = self.variant(reid.pairwise_sq_dist)(x32, y32)
    eu = self.variant(reid.euclidean_dist)(x32, y32)
    self.assertEqual(sq.shape, (5, 7))
    self.assertEqual(sq.dtype, jnp.float32)
    self.assertEqual(eu.dtype, jnp.float32)
    np.testing.assert_allclose(sq, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(eu, np.sqrt(np.maximum(ref, 1e-12)), rtol=1e-5, atol=1e-5)
    # The identical pair: exactly 0 unclamped, 1e-6 after the clamp and the square root.
    self.assertEqual(float(sq[2, 4]), 0.0)
    np.testing.assert_allclose(float(eu[2, 4]), 1e-6, rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_values_float64(self):
    with jax.enable_x64(True):
      rng = np.random.default_rng(1)
      x, y = rng.normal(size=(4, 9)), rng.normal(size=(6, 9))
      sq = self.variant(reid.pairwise_sq_dist)(jnp.asarray(x), jnp.asarray(y))
      eu = self.variant(reid.euclidean_dist)(jnp.asarray(x), jnp.asarray(y))
      self.assertEqual(sq.dtype, jnp.float64)
      self.assertEqual(eu.dtype, jnp.float64)
      ref = np_sq_dist(x, y)
      np.testing.assert_allclose(sq, ref, rtol=1e-12, atol=1e-12)
      np.testing.assert_allclose(eu, np.sqrt(ref), rtol=1e-12, atol=1e-12)
      # Self-distances: 1e-6 on the diagonal (clamped), the rest as the reference.
      self_d = np.asarray(self.variant(reid.euclidean_dist)(jnp.asarray(x), jnp.asarray(x)))
      np.testing.assert_allclose(np.diag(self_d), 1e-6, rtol=1e-6)
      off = ~np.eye(4, dtype=bool)
      np.testing.assert_allclose(self_d[off], np.sqrt(np_sq_dist(x, x))[off], rtol=1e-12)

  def test_pairwise_sq_dist_is_not_clamped(self):
    # Near-identical rows: the expansion can go below 0 by rounding; it must not be clamped, and
    # whatever its sign it agrees with the float64 reference (which is ~1e-14) to rounding error.
    with jax.enable_x64(True):
      x = np.array([[1.0, 2.0, 3.0]])
      y = np.array([[1.0, 2.0, 3.0 + 1e-7], [1.0, 2.0, 3.0]])
      sq = np.asarray(reid.pairwise_sq_dist(jnp.asarray(x), jnp.asarray(y)))
      self.assertEqual(sq[0, 1], 0.0)
      self.assertLess(sq[0, 0], 1e-12)  # the clamp would have given 1e-12
      np.testing.assert_allclose(sq[0, 0], 1e-14, atol=1e-13)

  @chex.variants(with_jit=True, without_jit=True)
  def test_gradients(self):
    with jax.enable_x64(True):
      x, y, w = _data(seed=3)
      xj, yj, wj = jnp.asarray(x), jnp.asarray(y), jnp.asarray(w)
      gx, gy = self.variant(jax.grad(lambda a, b: jnp.sum(wj * reid.euclidean_dist(a, b)),
                                     argnums=(0, 1)))(xj, yj)
      rgx, rgy = np_euclidean_grads(x, y, w)
      np.testing.assert_allclose(gx, rgx, rtol=1e-10, atol=1e-10)
      np.testing.assert_allclose(gy, rgy, rtol=1e-10, atol=1e-10)
      self.assertTrue(np.isfinite(np.asarray(gx)).all())
      # The clamped pair contributes nothing: a weight on it alone gives zero gradients.
      only = np.zeros_like(w)
      only[2, 4] = 1.0
      g0 = self.variant(jax.grad(
          lambda a, b: jnp.sum(jnp.asarray(only) * reid.euclidean_dist(a, b)),
          argnums=(0, 1)))(xj, yj)
      np.testing.assert_array_equal(g0[0], np.zeros_like(x))
      np.testing.assert_array_equal(g0[1], np.zeros_like(y))
      # Unclamped squared distance: gradient 2 (x_i - y_j) everywhere, the zero pair included.
      sx, sy = self.variant(jax.grad(lambda a, b: jnp.sum(wj * reid.pairwise_sq_dist(a, b)),
                                     argnums=(0, 1)))(xj, yj)
      rsx, rsy = np_sq_grads(x, y, w)
      np.testing.assert_allclose(sx, rsx, rtol=1e-10, atol=1e-10)
      np.testing.assert_allclose(sy, rsy, rtol=1e-10, atol=1e-10)

  def test_gradients_float32(self):
    x, y, w = _data(seed=4)
    gx, gy = jax.jit(jax.grad(lambda a, b: jnp.sum(jnp.asarray(w, jnp.float32)
                                                   * reid.euclidean_dist(a, b)),
                              argnums=(0, 1)))(jnp.asarray(x, jnp.float32),
                                               jnp.asarray(y, jnp.float32))
    self.assertEqual(gx.dtype, jnp.float32)
    rgx, rgy = np_euclidean_grads(x, y, w)
    np.testing.assert_allclose(gx, rgx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gy, rgy, rtol=1e-4, atol=1e-4)

  def test_shape_errors(self):
    with self.assertRaisesRegex(ValueError, "same width"):
      reid.euclidean_dist(jnp.ones((3, 4)), jnp.ones((2, 5)))
    with self.assertRaisesRegex(ValueError, "2-D"):
      reid.pairwise_sq_dist(jnp.ones((3,)), jnp.ones((2, 3)))


if __name__ == "__main__":
  absltest.main()
