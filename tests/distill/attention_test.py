"""Tests for jaxcompress.distill.attention (PAMS SKT loss)."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from jaxcompress import distill
from jaxcompress.distill import attention

try:
  import torch  # pylint: disable=g-import-not-at-top
except ImportError:  # optional cross-check against the official PyTorch formulation
  torch = None


def np_at(f):
  """NumPy reference of the official `at`: F.normalize(x.pow(2).mean(1).view(N, -1)) on NCHW."""
  f = np.transpose(np.asarray(f, np.float64), (0, 3, 1, 2))  # NHWC -> NCHW as the official code
  a = (f ** 2).mean(1).reshape(f.shape[0], -1)
  return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


class AttentionTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_against_numpy(self):
    with jax.enable_x64(True):
      rng = np.random.default_rng(0)
      s = jnp.asarray(rng.standard_normal((2, 3, 5, 4)))
      t = jnp.asarray(rng.standard_normal((2, 3, 5, 6)) * 3)
      a = self.variant(attention.attention_map)(s)
      self.assertEqual(a.shape, (2, 15))
      self.assertEqual(a.dtype, jnp.float64)
      np.testing.assert_allclose(a, np_at(s), rtol=1e-12)
      np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-12)
      loss = self.variant(attention.skt_loss)(s, t)
      np.testing.assert_allclose(loss, np.mean((np_at(s) - np_at(t)) ** 2), rtol=1e-12)

  def test_row_major_positions(self):
    f = np.zeros((1, 2, 3, 2), np.float32)
    f[0, 1, 0, :] = 2.0  # (h=1, w=0) -> flat index 1 * 3 + 0
    np.testing.assert_allclose(attention.attention_map(f)[0], [0, 0, 0, 1, 0, 0])

  def test_zero_map_and_identical_features(self):
    np.testing.assert_array_equal(attention.attention_map(jnp.zeros((1, 2, 2, 3))), 0.0)
    f = jnp.asarray(np.random.default_rng(2).standard_normal((2, 4, 4, 8)), jnp.float32)
    self.assertEqual(float(distill.skt_loss(f, f)), 0.0)
    g = jax.grad(distill.skt_loss)(f, f * 1.5 + 0.3)
    self.assertTrue(np.all(np.isfinite(g)) and np.any(g != 0))


  @absltest.skipIf(torch is None, "PyTorch not installed")
  def test_against_torch(self):
    rng = np.random.default_rng(5)
    s, t = rng.standard_normal((2, 4, 3, 6)), rng.standard_normal((2, 4, 3, 5))
    # Official utils/common.py on NCHW: F.normalize(x.pow(2).mean(1).view(N, -1)).
    at = lambda f: torch.nn.functional.normalize(f.pow(2).mean(1).view(f.size(0), -1))
    ts, tt = (torch.tensor(np.transpose(a, (0, 3, 1, 2))) for a in (s, t))
    with jax.enable_x64(True):
      np.testing.assert_allclose(attention.attention_map(s), at(ts).numpy(), rtol=1e-12)
      np.testing.assert_allclose(attention.skt_loss(s, t),
                                 (at(ts) - at(tt)).pow(2).mean().item(), rtol=1e-12)


class ZeroFeatureTest(absltest.TestCase):

  def test_all_zero_sample_has_zero_not_nan_gradient(self):
    # torch's F.normalize backward is 0 at a zero norm; sqrt's slope at 0 must not leak a NaN.
    f = jnp.concatenate([jnp.zeros((1, 2, 2, 3)), jnp.ones((1, 2, 2, 3))])
    np.testing.assert_array_equal(attention.attention_map(f)[0], 0.0)
    g = jax.grad(lambda x: attention.attention_map(x).sum())(f)
    self.assertTrue(np.all(np.isfinite(g)))
    np.testing.assert_array_equal(g[0], 0.0)
    t = jnp.asarray(np.random.default_rng(0).standard_normal((2, 2, 2, 3)))
    gs = jax.grad(attention.skt_loss)(f, t)
    self.assertTrue(np.all(np.isfinite(gs)))


if __name__ == "__main__":
  absltest.main()
