"""Tests for the FFCSC sub-steps against spatial-domain NumPy references on tiny grids."""
from __future__ import annotations

import os
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from jaxcompress.sparse_coding import admm

sys.path.insert(0, os.path.dirname(__file__))
import csc_refs  # noqa: E402  (a sibling module of the tests)

_TOL = {jnp.float32: dict(rtol=2e-4, atol=2e-5), jnp.float64: dict(rtol=1e-9, atol=1e-10)}


def _arrays(seed=0, n=2, k=3, h=6, w=7):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(k, h, w)), rng.normal(size=(n, k, h, w)), rng.normal(size=(n, h, w)),
          rng.normal(size=(k, h, w)), rng.normal(size=(n, k, h, w)))


class AdmmTest(chex.TestCase, parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(jnp.float32, jnp.float64)
  def test_reconstruct_is_circular_convolution(self, dtype):
    d, z, *_ = _arrays()
    with jax.enable_x64(dtype == jnp.float64):
      fn = self.variant(lambda d_, z_: admm.irfft2(
          admm.reconstruct_hat(admm.rfft2(d_), admm.rfft2(z_)), d_.shape[1:]))
      out = fn(jnp.asarray(d, dtype), jnp.asarray(z, dtype))
      self.assertEqual(out.dtype, dtype)
      fn2 = self.variant(lambda d_, z_: admm.irfft2(admm.reconstruct_hat_by_frequency(
          admm.rfft2(d_), admm.by_frequency(admm.rfft2(z_))), d_.shape[1:]))
      out2 = fn2(jnp.asarray(d, dtype), jnp.asarray(z, dtype))
    ref = np.stack([sum(csc_refs.circ_conv(d[j], z[i, j]) for j in range(3)) for i in range(2)])
    np.testing.assert_allclose(out, ref, **_TOL[dtype])
    np.testing.assert_allclose(out2, ref, **_TOL[dtype])

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(jnp.float32, jnp.float64)
  def test_filter_solve_matches_dense_normal_equations(self, dtype):
    _, z, xi1, xi2, _ = _arrays(1)
    rho = 3.0  # small rho: the data term matters
    with jax.enable_x64(dtype == jnp.float64):
      def fn(z_, a1, a2):
        zf = admm.by_frequency(admm.rfft2(z_))
        return admm.irfft2(admm.filter_solve(zf, admm.filter_solve_factor(zf, rho),
                                             admm.rfft2(a1), admm.rfft2(a2), rho), z_.shape[2:])
      out = self.variant(fn)(*(jnp.asarray(v, dtype) for v in (z, xi1, xi2)))
    ref = csc_refs.dense_filter_solve(z, xi1, xi2, rho)
    np.testing.assert_allclose(out, ref, **_TOL[dtype])

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(jnp.float32, jnp.float64)
  def test_code_solve_matches_dense_normal_equations(self, dtype):
    d, _, xi1, _, xi2 = _arrays(2)
    rho = 2.0
    with jax.enable_x64(dtype == jnp.float64):
      fn = self.variant(lambda d_, a1, a2: admm.irfft2(
          admm.code_solve(admm.rfft2(d_), admm.rfft2(a1), admm.rfft2(a2), rho), d_.shape[1:]))
      out = fn(*(jnp.asarray(v, dtype) for v in (d, xi1, xi2)))
    ref = csc_refs.dense_code_solve(d, xi1, xi2, rho)
    np.testing.assert_allclose(out, ref, **_TOL[dtype])

  @parameterized.parameters(jnp.float32, jnp.float64)
  def test_kernel_projection(self, dtype):
    rng = np.random.default_rng(3)
    u = rng.normal(size=(4, 9, 8)) * np.array([0.05, 0.1, 1.0, 3.0])[:, None, None]
    with jax.enable_x64(dtype == jnp.float64):
      out = jax.jit(admm.kernel_constraint_proj, static_argnums=1)(jnp.asarray(u, dtype), 2)
    ref = csc_refs.kernel_proj(u, 2)
    np.testing.assert_allclose(out, ref, **_TOL[dtype])
    norms = np.sqrt((ref ** 2).sum((1, 2)))
    self.assertLess(norms[0], 1)  # small filters stay inside the ball
    np.testing.assert_allclose(norms[2:], 1, rtol=1e-6)

  def test_data_prox_minimises_its_objective(self):
    rng = np.random.default_rng(4)
    u, b = rng.normal(size=(2, 5, 5)), rng.normal(size=(2, 5, 5))
    m = (rng.random((2, 5, 5)) < 0.6).astype(float)
    theta = 0.7
    with jax.enable_x64(True):
      out = np.asarray(admm.data_prox(u, m, m * b, theta))
    # Per pixel: (m v - m b)^2 / 2 + (v - u)^2 / (2 theta); stationary point by hand.
    ref = np.where(m > 0, (b * theta + u) / (theta + 1), u)
    np.testing.assert_allclose(out, ref, rtol=1e-12)

  def test_sparse_prox(self):
    u = np.array([-3.0, -1.0, -0.2, 0.0, 0.5, 1.0, 2.5])
    with jax.enable_x64(True):
      out = np.asarray(admm.sparse_prox(u, 1.0))
    np.testing.assert_allclose(out, [-2.0, 0, 0, 0, 0, 0, 1.5], atol=1e-15)

  @parameterized.parameters((None,), (0.6,))
  def test_objective_and_residual(self, keep):
    rng = np.random.default_rng(5)
    d, z = rng.normal(size=(3, 8, 8)), rng.normal(size=(2, 3, 8, 8))
    b = rng.normal(size=(2, 4, 4))
    mask = None if keep is None else (rng.random(b.shape) < keep).astype(float)
    with jax.enable_x64(True):
      obj = admm.objective(admm.rfft2(jnp.asarray(d)), admm.rfft2(jnp.asarray(z)), z, b, mask,
                           0.7, 0.3, 2)
      res = admm.residual(admm.rfft2(jnp.asarray(d)), admm.rfft2(jnp.asarray(z)), b, mask, 2,
                          (8, 8))
    np.testing.assert_allclose(obj, csc_refs.objective(d, z, b, mask, 0.7, 0.3), rtol=1e-10)
    dz = np.stack([sum(csc_refs.circ_conv(d[j], z[i, j]) for j in range(3))[2:6, 2:6]
                   for i in range(2)])
    m = 1.0 if mask is None else mask
    np.testing.assert_allclose(res, m * dz - m * b, atol=1e-10)

  def test_init_filters_support(self):
    d = np.asarray(admm.init_filters(jax.random.PRNGKey(0), 3, 5, (12, 12), jnp.float32))
    sup = np.zeros((12, 12), bool)
    for a in range(-2, 3):
      for b in range(-2, 3):
        sup[a % 12, b % 12] = True
    self.assertTrue(np.all(d[:, ~sup] == 0))
    self.assertTrue(np.all(d[:, sup] != 0))


if __name__ == "__main__":
  absltest.main()
