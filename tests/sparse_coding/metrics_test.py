"""Tests for psnr_bt / ssim_bt against NumPy transcriptions of `PSNR_bt.m` / `SSIM_bt.m`."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from jaxcompress import sparse_coding as sc


def np_psnr_bt(x, z, pad):
  """Per image, loops: crop, min-max normalise both, PSNR with peak 1."""
  out = []
  for i in range(x.shape[0]):
    zi = z[i, pad:z.shape[1] - pad, pad:z.shape[2] - pad]
    xi = (x[i] - x[i].min()) / (x[i].max() - x[i].min())
    zi = (zi - zi.min()) / (zi.max() - zi.min())
    out.append(20 * np.log10(1) - 10 * np.log10(np.mean((zi - xi) ** 2)))
  return np.array(out)


def np_ssim_bt(x, z, pad, k1=0.01, k2=0.03, lv=1.0):
  """Per image: MATLAB std2 (N - 1) and cov(...)(1, 2) (N - 1) of the normalised images."""
  c1, c2 = (k1 * lv) ** 2, (k2 * lv) ** 2
  out = []
  for i in range(x.shape[0]):
    zi = z[i, pad:z.shape[1] - pad, pad:z.shape[2] - pad]
    xi = (x[i] - x[i].min()) / (x[i].max() - x[i].min())
    zi = (zi - zi.min()) / (zi.max() - zi.min())
    cov = np.cov(xi.ravel(), zi.ravel())[0, 1]
    sx, sy = np.std(xi, ddof=1), np.std(zi, ddof=1)
    out.append((2 * xi.mean() * zi.mean() + c1) * (2 * cov + c2)
               / ((xi.mean() ** 2 + zi.mean() ** 2 + c1) * (sx ** 2 + sy ** 2 + c2)))
  return np.array(out)


class MetricsTest(chex.TestCase, parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(jnp.float32, jnp.float64)
  def test_against_matlab_transcription(self, dtype):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 20, 20))
    z = np.pad(x, ((0, 0), (5, 5), (5, 5))) * 2.0 + 0.3 * rng.normal(size=(3, 30, 30))
    tol = dict(rtol=1e-5) if dtype == jnp.float32 else dict(rtol=1e-12)
    with jax.enable_x64(dtype == jnp.float64):
      psnr = self.variant(sc.psnr_bt)(jnp.asarray(x, dtype), jnp.asarray(z, dtype))
      ssim = self.variant(sc.ssim_bt)(jnp.asarray(x, dtype), jnp.asarray(z, dtype))
      self.assertEqual(psnr.dtype, dtype)
    np.testing.assert_allclose(psnr, np_psnr_bt(x, z, 5), **tol)
    np.testing.assert_allclose(ssim, np_ssim_bt(x, z, 5), **tol)

  def test_normalisation_makes_scale_irrelevant(self):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 8, 8))
    z = np.pad(x, ((0, 0), (2, 2), (2, 2)))
    z[:, :2] = 100.0  # the padding is cropped away
    self.assertTrue(np.all(np.asarray(sc.psnr_bt(x, 7 * z - 3)) > 100))
    np.testing.assert_allclose(sc.ssim_bt(x, 7 * z - 3), 1.0, rtol=1e-6)

  def test_shape_errors(self):
    with self.assertRaisesRegex(ValueError, "even padding"):
      sc.psnr_bt(np.zeros((1, 8, 8)), np.zeros((1, 11, 11)))
    with self.assertRaisesRegex(ValueError, r"\(N, h, w\)"):
      sc.ssim_bt(np.zeros((8, 8)), np.zeros((1, 10, 10)))


if __name__ == "__main__":
  absltest.main()
