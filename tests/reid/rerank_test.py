"""Tests for jaxcompress.reid.re_ranking against a loop transcription of the original algorithm.

The reference follows the steps of Zhong et al. (CVPR 2017) as the official Python code
(zhunzhong07/person-re-ranking, `re_ranking`) runs them, point by point with Python sets and
dense arrays; only the initial ranking is a stable sort, the tie rule jaxcompress documents.
"""
from __future__ import annotations

import time

import numpy as np
from absl.testing import absltest, parameterized

from jaxcompress import reid
from jaxcompress.reid import rerank


def ref_re_ranking(q_g, q_q, g_g, k1, k2, lam):
  nq = q_g.shape[0]
  full = np.concatenate([np.concatenate([q_q, q_g], 1), np.concatenate([q_g.T, g_g], 1)], 0)
  n = full.shape[0]
  sq = full.astype(np.float64) ** 2
  d = np.zeros((n, n))
  for i in range(n):
    for j in range(n):
      d[i, j] = sq[j, i] / max(sq[m, i] for m in range(n))
  rank = [sorted(range(n), key=lambda j, i=i: (d[i, j], j)) for i in range(n)]

  def recip(i, k):
    return {j for j in rank[i][:k + 1] if i in rank[j][:k + 1]}

  half = int(np.around(k1 / 2.0))
  v = np.zeros((n, n))
  for i in range(n):
    r = recip(i, k1)
    expanded = set(r)
    for c in r:
      rc = recip(c, half)
      if len(rc & r) > 2.0 / 3 * len(rc):
        expanded |= rc
    z = sum(np.exp(-d[i, j]) for j in expanded)
    for j in expanded:
      v[i, j] = np.exp(-d[i, j]) / z
  if k2 != 1:
    v = np.array([sum(v[j] for j in rank[i][:k2]) / len(rank[i][:k2]) for i in range(n)])
  out = np.zeros((nq, n - nq))
  for i in range(nq):
    for g in range(nq, n):
      m = sum(min(v[i, j], v[g, j]) for j in range(n))
      out[i, g - nq] = (1 - lam) * (1 - m / (2 - m)) + lam * d[i, g]
  return out


def _dists(seed, nq, ng, dim=8, dtype=np.float64, duplicate=False):
  rng = np.random.default_rng(seed)
  # A few clusters so reciprocal sets and expansions are non-trivial.
  centres = rng.normal(size=(4, dim)) * 2
  x = centres[rng.integers(0, 4, nq + ng)] + rng.normal(size=(nq + ng, dim))
  if duplicate:
    x[nq + 3] = x[nq + 7]  # two identical gallery rows: a tie in every ranking
  x = x.astype(dtype)
  d = np.sqrt(np.maximum(((x[:, None] - x[None]) ** 2).sum(-1), 0))
  return d[:nq, nq:], d[:nq, :nq], d[nq:, nq:]


class ReRankingTest(parameterized.TestCase):

  @parameterized.parameters(
      (0, 4, 3, 0.3, False), (1, 5, 1, 0.3, False), (2, 6, 2, 0.0, True), (3, 3, 4, 1.0, False),
      (4, 7, 3, 0.5, True))
  def test_matches_reference(self, seed, k1, k2, lam, duplicate):
    q_g, q_q, g_g = _dists(seed, 7, 23, duplicate=duplicate)
    got = reid.re_ranking(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lam)
    self.assertEqual(got.shape, (7, 23))
    self.assertEqual(got.dtype, np.float64)
    np.testing.assert_allclose(got, ref_re_ranking(q_g, q_q, g_g, k1, k2, lam), rtol=1e-12,
                               atol=1e-12)

  def test_float32(self):
    q_g, q_q, g_g = _dists(5, 6, 20, dtype=np.float32)
    got = reid.re_ranking(q_g, q_q, g_g, k1=4, k2=2)
    self.assertEqual(got.dtype, np.float32)
    np.testing.assert_allclose(got, ref_re_ranking(q_g, q_q, g_g, 4, 2, 0.3), rtol=1e-5,
                               atol=1e-6)

  def test_defaults_on_more_points_than_k1(self):
    q_g, q_q, g_g = _dists(6, 10, 40)
    np.testing.assert_allclose(reid.re_ranking(q_g, q_q, g_g),
                               ref_re_ranking(q_g, q_q, g_g, 20, 6, 0.3), rtol=1e-12, atol=1e-12)

  def test_ranking_ties_to_lower_index(self):
    """The partial selection of the nearest columns equals a stable full sort, ties included."""
    rng = np.random.default_rng(7)
    d = rng.integers(0, 4, size=(30, 50)).astype(np.float64)  # many ties
    for k in (1, 5, 17, 50):
      np.testing.assert_array_equal(rerank._nearest(d, k),
                                    np.argsort(d, axis=1, kind="stable")[:, :k])

  def test_large_is_fast(self):
    q_g, q_q, g_g = _dists(8, 300, 1700, dim=32, dtype=np.float32)
    start = time.perf_counter()
    got = reid.re_ranking(q_g, q_q, g_g)
    self.assertLess(time.perf_counter() - start, 30.0)
    self.assertTrue(np.all(np.isfinite(got)))
    # Jaccard distances lie in [0, 1] and the normalised distances too.
    self.assertTrue(np.all((got >= -1e-6) & (got <= 1 + 1e-6)))

  def test_bad_inputs(self):
    q_g, q_q, g_g = _dists(9, 4, 6)
    with self.assertRaisesRegex(ValueError, "g_g_dist"):
      reid.re_ranking(q_g, q_q, g_g[:5, :5])
    with self.assertRaisesRegex(ValueError, "q_q_dist"):
      reid.re_ranking(q_g, q_q[:3], g_g)
    with self.assertRaisesRegex(ValueError, "k1"):
      reid.re_ranking(q_g, q_q, g_g, k1=0)


if __name__ == "__main__":
  absltest.main()
