"""Tests for jaxcompress.selfsup.ema_update against the formula in NumPy."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from jaxcompress import selfsup


class EmaUpdateTest(parameterized.TestCase):

  @parameterized.parameters(True, False)
  def test_values_and_constant_params(self, jit):
    rng = np.random.default_rng(0)
    ema = {"a": rng.normal(size=(3, 4)).astype(np.float32), "b": [rng.normal(size=5).astype(np.float32)]}
    new = {"a": rng.normal(size=(3, 4)).astype(np.float32), "b": [rng.normal(size=5).astype(np.float32)]}
    fn = jax.jit(selfsup.ema_update) if jit else selfsup.ema_update
    out = fn(ema, new, 0.999)
    for e, p, o in zip(jax.tree.leaves(ema), jax.tree.leaves(new), jax.tree.leaves(out)):
      np.testing.assert_allclose(o, 0.999 * e.astype(np.float64) + 0.001 * p, rtol=1e-6, atol=1e-7)
      self.assertEqual(o.dtype, np.float32)
    # The averaged parameters get the momentum as gradient; the online ones none.
    g_ema, g_new = jax.grad(lambda e, p: jnp.sum(fn(e, p, 0.9)["a"]), argnums=(0, 1))(ema, new)
    np.testing.assert_allclose(g_ema["a"], 0.9 * np.ones((3, 4)), rtol=1e-6)
    np.testing.assert_array_equal(g_new["a"], np.zeros((3, 4)))

  def test_traced_momentum_does_not_recompile(self):
    traces = []

    @jax.jit
    def step(e, p, m):
      traces.append(1)
      return selfsup.ema_update(e, p, m)

    e, p = jnp.zeros(3), jnp.ones(3)
    for m in (0.0, 0.5, 0.999):
      np.testing.assert_allclose(step(e, p, jnp.asarray(m)), (1 - m) * np.ones(3), rtol=1e-4)
    self.assertLen(traces, 1)

  def test_momentum_zero_copies_and_one_keeps(self):
    ema, new = {"w": jnp.arange(3.0)}, {"w": jnp.full(3, 7.0)}
    np.testing.assert_array_equal(selfsup.ema_update(ema, new, 0.0)["w"], new["w"])
    np.testing.assert_array_equal(selfsup.ema_update(ema, new, 1.0)["w"], ema["w"])

  def test_float64(self):
    with jax.enable_x64(True):
      out = selfsup.ema_update(jnp.zeros(2, jnp.float64), jnp.full(2, 1 / 3, jnp.float64), 0.25)
      self.assertEqual(out.dtype, jnp.float64)
      np.testing.assert_allclose(out, 0.75 / 3 * np.ones(2), rtol=1e-15)


if __name__ == "__main__":
  absltest.main()
