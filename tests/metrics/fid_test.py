"""Tests for jaxcompress.metrics.fid against closed forms and an eigen-decomposition reference."""
from __future__ import annotations

import tempfile
from unittest import mock

import numpy as np
from absl.testing import absltest
from scipy import linalg

from jaxcompress.metrics import fid


def np_trace_sqrt_product(s1, s2):
  """tr(sqrtm(s1 s2)) = sum of sqrt(eigenvalues of s1^(1/2) s2 s1^(1/2)) (similar matrices)."""
  w, v = np.linalg.eigh(s1)
  half = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  lam = np.linalg.eigvalsh(half @ s2 @ half)
  return float(np.sqrt(np.clip(lam, 0, None)).sum())


def np_frechet(mu1, s1, mu2, s2):
  return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2)
               - 2 * np_trace_sqrt_product(s1, s2))


def _features(seed, n, d, shift=0.0):
  rng = np.random.default_rng(seed)
  mix = rng.normal(size=(d, d)) / np.sqrt(d)
  return rng.normal(size=(n, d)) @ mix + shift


class FeatureStatisticsTest(absltest.TestCase):

  def test_mean_and_unbiased_covariance(self):
    x = _features(0, 50, 6).astype(np.float32)
    mu, sigma = fid.feature_statistics(x)
    self.assertEqual(mu.dtype, np.float64)
    self.assertEqual(sigma.dtype, np.float64)
    x64 = x.astype(np.float64)
    centred = x64 - x64.sum(0) / 50
    np.testing.assert_allclose(mu, x64.sum(0) / 50, rtol=1e-12)
    np.testing.assert_allclose(sigma, centred.T @ centred / 49, rtol=1e-10, atol=1e-14)

  def test_one_dimensional_features(self):
    mu, sigma = fid.feature_statistics(np.array([[1.0], [2.0], [4.0]]))
    np.testing.assert_allclose(mu, [7 / 3])
    # Unbiased variance: ((4/3)^2 + (1/3)^2 + (5/3)^2) / 2 = (16 + 1 + 25) / 18 = 7/3.
    np.testing.assert_allclose(sigma, [[7 / 3]])

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "at least 2 samples"):
      fid.feature_statistics(np.ones((1, 4)))
    with self.assertRaisesRegex(ValueError, "num_samples, dim"):
      fid.feature_statistics(np.ones((4,)))


class FrechetDistanceTest(absltest.TestCase):

  def test_diagonal_covariances_closed_form(self):
    # For commuting (diagonal) covariances sqrtm(S1 S2) = diag(sqrt(a b)), so the trace terms
    # collapse to sum (sqrt a - sqrt b)^2.
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.1, 3.0, 5), rng.uniform(0.1, 3.0, 5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    want = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    self.assertAlmostEqual(fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)), want,
                           places=10)
    # Scalars work as 1-D statistics: (1 - 3)^2 + (sqrt 4 - sqrt 9)^2 = 5.
    self.assertAlmostEqual(fid.frechet_distance(1.0, 4.0, 3.0, 9.0), 5.0, places=12)

  def test_commuting_covariances_closed_form(self):
    # Covariances with one eigenbasis Q commute: sqrtm(S1 S2) = Q diag(sqrt(a b)) Q^T, so
    # d^2 = ||mu1 - mu2||^2 + sum (sqrt a - sqrt b)^2 whatever the rotation.
    rng = np.random.default_rng(9)
    q, _ = np.linalg.qr(rng.normal(size=(7, 7)))
    a, b = rng.uniform(0.05, 4.0, 7), rng.uniform(0.05, 4.0, 7)
    mu1, mu2 = rng.normal(size=7), rng.normal(size=7)
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    want = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    self.assertAlmostEqual(fid.frechet_distance(mu1, s1, mu2, s2), want, places=9)

  def test_scaled_covariance_closed_form(self):
    # S2 = c^2 S1: tr(sqrtm(S1 S2)) = c tr(S1), so d^2 = ||mu1 - mu2||^2 + (1 - c)^2 tr(S1), for
    # a general (non-diagonal) S1.
    mu1, s1 = fid.feature_statistics(_features(10, 100, 9))
    mu2 = mu1 + 0.25
    got = fid.frechet_distance(mu1, s1, mu2, 2.25 * s1)
    self.assertAlmostEqual(got, 9 * 0.0625 + 0.25 * np.trace(s1), places=9)

  def test_distance_to_itself_is_zero(self):
    mu, sigma = fid.feature_statistics(_features(2, 200, 8))
    d = fid.frechet_distance(mu, sigma, mu, sigma)
    self.assertAlmostEqual(d, 0.0, delta=1e-8 * np.trace(sigma))

  def test_symmetric_and_matches_eigen_reference(self):
    mu1, s1 = fid.feature_statistics(_features(3, 300, 10))
    mu2, s2 = fid.feature_statistics(_features(4, 250, 10, shift=0.3))
    d12 = fid.frechet_distance(mu1, s1, mu2, s2)
    d21 = fid.frechet_distance(mu2, s2, mu1, s1)
    self.assertIsInstance(d12, float)
    self.assertAlmostEqual(d12, d21, places=9)
    self.assertAlmostEqual(d12, np_frechet(mu1, s1, mu2, s2), places=9)
    self.assertGreater(d12, 0.1)

  def test_rank_deficient_covariances(self):
    # Fewer samples than dimensions (as with few images and 2048-d features): singular
    # covariances, sqrtm may carry a rounding-level imaginary part; the value still matches.
    mu1, s1 = fid.feature_statistics(_features(5, 8, 20))
    mu2, s2 = fid.feature_statistics(_features(6, 8, 20, shift=0.1))
    got = fid.frechet_distance(mu1, s1, mu2, s2)
    self.assertTrue(np.isfinite(got))
    self.assertAlmostEqual(got, np_frechet(mu1, s1, mu2, s2), places=6)

  def test_singular_product_falls_back_to_eps(self):
    # When sqrtm of the product is not finite, both covariances get eps * I and sqrtm is retried.
    mu1, s1 = fid.feature_statistics(_features(7, 40, 5))
    mu2, s2 = fid.feature_statistics(_features(8, 40, 5))
    calls = []
    real_sqrtm = linalg.sqrtm  # captured: the patch below replaces scipy.linalg.sqrtm itself

    def first_call_fails(a):
      calls.append(a)
      return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)

    eps = 1e-2  # large enough to move the value visibly
    with mock.patch.object(fid.linalg, "sqrtm", side_effect=first_call_fails):
      with self.assertWarnsRegex(RuntimeWarning, "singular"):
        got = fid.frechet_distance(mu1, s1, mu2, s2, eps=eps)
    self.assertLen(calls, 2)
    offset = eps * np.eye(5)
    np.testing.assert_allclose(calls[1], (s1 + offset) @ (s2 + offset), rtol=1e-12)
    # Only the sqrtm term sees eps; the traces use the covariances as given.
    want = (((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2)
            - 2 * np_trace_sqrt_product(s1 + offset, s2 + offset))
    self.assertAlmostEqual(got, want, places=9)
    self.assertNotAlmostEqual(got, np_frechet(mu1, s1, mu2, s2), places=4)

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "same length"):
      fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with self.assertRaisesRegex(ValueError, r"must be \(3, 3\)"):
      fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
    # -I is no covariance: sqrtm(-I) = i I, an imaginary part far above rounding.
    with self.assertRaisesRegex(ValueError, "imaginary part"):
      fid.frechet_distance(np.zeros(2), -np.eye(2), np.zeros(2), np.eye(2))


class StatisticsFileTest(absltest.TestCase):

  def test_round_trip_in_pytorch_fid_layout(self):
    mu, sigma = fid.feature_statistics(_features(11, 30, 4))
    path = self.enter_context(tempfile.TemporaryDirectory()) + "/sub/real.npz"
    fid.save_statistics(path, mu, sigma)
    with np.load(path) as f:  # the keys pytorch-fid's --save-stats writes and reads
      self.assertCountEqual(f.files, ["mu", "sigma"])
      np.testing.assert_array_equal(f["mu"], mu)
    got_mu, got_sigma = fid.load_statistics(path)
    np.testing.assert_array_equal(got_mu, mu)
    np.testing.assert_array_equal(got_sigma, sigma)
    self.assertEqual(got_sigma.dtype, np.float64)

  def test_reads_float32_statistics(self):
    path = self.enter_context(tempfile.TemporaryDirectory()) + "/stats.npz"
    np.savez(path, mu=np.ones(3, np.float32), sigma=np.eye(3, dtype=np.float32))
    mu, sigma = fid.load_statistics(path)
    self.assertEqual(mu.dtype, np.float64)
    np.testing.assert_array_equal(sigma, np.eye(3))

  def test_errors(self):
    tmp = self.enter_context(tempfile.TemporaryDirectory())
    with self.assertRaisesRegex(ValueError, "does not exist"):
      fid.load_statistics(tmp + "/none.npz")
    np.savez(tmp + "/bad.npz", m=np.zeros(2), sigma=np.eye(2))
    with self.assertRaisesRegex(ValueError, r"lacks \['mu'\]"):
      fid.load_statistics(tmp + "/bad.npz")
    np.savez(tmp + "/shape.npz", mu=np.zeros(2), sigma=np.eye(3))
    with self.assertRaisesRegex(ValueError, r"expected \(D,\) and \(D, D\)"):
      fid.load_statistics(tmp + "/shape.npz")
    with self.assertRaisesRegex(ValueError, "covariance"):
      fid.save_statistics(tmp + "/x.npz", np.zeros(3), np.eye(2))


if __name__ == "__main__":
  absltest.main()
