"""Tests for jaxcompress.ops.batch_norm: same outputs, gradients and statistics as nn.BatchNorm."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from jaxcompress.ops import batch_norm


def _run(cls, x, train, **kwargs):
  """Output, updated batch_stats and d(loss)/d(x, params) of a BN layer of class `cls`."""
  module = cls(use_running_average=not train, **kwargs)
  variables = module.init(jax.random.key(1), x)
  # Non-trivial parameters and statistics, identical for both classes.
  variables = jax.tree.map(lambda a: a + 0.3 * jnp.arange(a.size).reshape(a.shape) / a.size,
                           variables)
  weights = jnp.arange(x.size).reshape(x.shape) / x.size

  def loss(x, params):
    y, updates = module.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                              mutable=["batch_stats"])
    return jnp.sum(jnp.sin(y) * weights), (y, updates)

  (_, (y, updates)), grads = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(
      x, variables["params"])
  return y, updates, grads


class BatchNormTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("default", {}, True),
      ("no_scale", {"use_scale": False}, True),
      ("no_bias", {"use_bias": False}, True),
      ("torch_like", {"momentum": 0.9, "epsilon": 1e-3}, True),
      ("eval", {}, False),
      ("axis_1_fallback", {"axis": 1}, True),
  )
  def test_matches_flax(self, kwargs, train):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 5, 5, 6)) * 2 + 1, jnp.float32)
    got = _run(batch_norm.BatchNorm, x, train, **kwargs)
    want = _run(nn.BatchNorm, x, train, **kwargs)
    self.assertEqual(jax.tree.structure(got), jax.tree.structure(want))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-5), got, want)

  def test_bfloat16_input(self):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3, 3, 5)), jnp.bfloat16)
    got = _run(batch_norm.BatchNorm, x, True)
    want = _run(nn.BatchNorm, x, True)
    self.assertEqual(got[0].dtype, want[0].dtype)
    self.assertEqual(got[2][0].dtype, jnp.bfloat16)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a, np.float32),
                                                         np.asarray(b, np.float32),
                                                         rtol=2e-2, atol=2e-2), got, want)

  def test_statistics_gradients(self):
    # The mean/var outputs normally get zero cotangents; their gradients must still be right.
    x = jnp.asarray(np.random.default_rng(2).normal(size=(6, 4)), jnp.float32)
    scale, bias = jnp.full((4,), 1.5), jnp.full((4,), 0.2)
    def f(x, fn):
      y, mean, var = fn(x)
      return jnp.sum(jnp.sin(y)) + jnp.sum(mean**2) + jnp.sum(jnp.sqrt(var))
    def reference(x):
      mean = jnp.mean(x, 0)
      var = jnp.maximum(jnp.mean(x**2, 0) - mean**2, 0.0)
      return (x - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias, mean, var
    fast = lambda x: batch_norm.batch_norm_train(x, scale, bias, 1e-5, jnp.dtype(jnp.float32))
    np.testing.assert_allclose(jax.grad(f)(x, fast), jax.grad(f)(x, reference), rtol=1e-5,
                               atol=1e-5)

  @parameterized.named_parameters(("centred", 0.0), ("offset", 1.0), ("large_offset", 5.0))
  def test_gradients_match_numpy_float64(self, offset):
    # The closed-form backward against an independent float64 NumPy evaluation of it, with batch
    # means up to several standard deviations away from zero (the fast-variance cancellation).
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(32, 8, 8, 16)) * 2.0 + offset * 2.0).astype(np.float32)
    gy = rng.normal(size=x.shape).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, 16).astype(np.float32)
    bias = rng.normal(size=16).astype(np.float32)
    eps = 1e-5

    def reference(x, gy):  # the closed form in float64
      x, gy = x.astype(np.float64), gy.astype(np.float64)
      m = x.size // x.shape[-1]
      mean = x.mean((0, 1, 2))
      rstd = 1.0 / np.sqrt(x.var((0, 1, 2)) + eps)
      xhat = (x - mean) * rstd
      dbias = gy.sum((0, 1, 2))
      dscale = (gy * xhat).sum((0, 1, 2))
      dx = scale * rstd * (gy - dbias / m - xhat * dscale / m)
      return dx, dscale, dbias

    def f(x, scale, bias):
      y, _, _ = batch_norm.batch_norm_train(x, scale, bias, eps, jnp.dtype(jnp.float32))
      return jnp.sum(y * gy)

    want = reference(x, gy)
    for fn in (jax.grad(f, (0, 1, 2)), jax.jit(jax.grad(f, (0, 1, 2)))):
      got = fn(jnp.asarray(x), jnp.asarray(scale), jnp.asarray(bias))
      for g, w, name in zip(got, want, ("dx", "dscale", "dbias")):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=2e-4 * np.abs(w).max(),
                                   err_msg=name)

  def test_is_flax_batch_norm(self):
    self.assertIsInstance(batch_norm.BatchNorm(), nn.BatchNorm)


if __name__ == "__main__":
  absltest.main()
