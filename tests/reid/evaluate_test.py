"""Tests for jaxcompress.reid.evaluate: hand-worked cases, a per-query reference, scikit-learn."""
from __future__ import annotations

import importlib
import time
from unittest import mock

import numpy as np
import pytest
from absl.testing import absltest, parameterized
from sklearn.metrics import average_precision_score

from jaxcompress import reid
from jaxcompress.errors import ConfigError

# The package re-exports the function under the module's name; the module itself, for patching.
evaluate_module = importlib.import_module("jaxcompress.reid.evaluate")


def reference(distmat, q_ids, g_ids, q_cams, g_cams, topk, protocol):
  """Slow per-query evaluation written from the definitions, one Python loop per query."""
  aps, cmcs = [], []
  for q in range(len(q_ids)):
    ranked = sorted(range(len(g_ids)), key=lambda j: (distmat[q][j], j))
    kept = [j for j in ranked if not (g_ids[j] == q_ids[q] and g_cams[j] == q_cams[q])]
    ranks = [pos + 1 for pos, j in enumerate(kept) if g_ids[j] == q_ids[q]]
    n = len(ranks)
    if n == 0:
      continue
    cmc = [0.0] * topk
    if protocol == "standard":
      aps.append(sum(k / r for k, r in enumerate(ranks, 1)) / n)
      for rank in range(1, topk + 1):
        cmc[rank - 1] = 1.0 if ranks[0] <= rank else 0.0
    else:
      ap = 0.0
      for k, r in enumerate(ranks, 1):
        prev = (k - 1) / (r - 1) if r > 1 else 1.0
        ap += 0.5 * (prev + k / r) / n
      aps.append(ap)
      for k, r in enumerate(ranks, 1):
        if r - k < topk:
          cmc[r - k] += 1.0 / n
      for i in range(1, topk):
        cmc[i] += cmc[i - 1]
    cmcs.append(cmc)
  return sum(aps) / len(aps), np.mean(np.array(cmcs), axis=0)


def _hand_case():
  """Four queries over a six-entry gallery; see the expected values in the tests."""
  g_ids = np.array([1, 2, 1, 3, 2, 1])
  g_cams = np.array([0, 1, 1, 1, 0, 2])
  q_ids = np.array([1, 2, 4, 3])
  q_cams = np.array([0, 1, 0, 2])
  dist = np.array([
      [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
      [0.5, 0.1, 0.3, 0.3, 0.3, 0.9],  # entries 2, 3, 4 tied: ranked by index
      [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # identity 4 is not in the gallery
      [0.9, 0.8, 0.7, 0.05, 0.6, 0.5],
  ])
  return dist, q_ids, g_ids, q_cams, g_cams


class EvaluateTest(parameterized.TestCase):

  # Hand-worked case (`_hand_case`), per query, after ranking and the same-id-same-cam removal:
  #   q0 (id 1, cam 0): order 0..5; entry 0 (id 1, cam 0) removed -> [1, 2, 3, 4, 5];
  #       matches entries 2 and 5 at r = 2, 5 (n = 2).
  #   q1 (id 2, cam 1): order 1, 2, 3, 4, 0, 5 (ties by index); entry 1 (id 2, cam 1) removed ->
  #       [2, 3, 4, 0, 5]; match entry 4 at r = 3 (n = 1).
  #   q2 (id 4): no match -> skipped.
  #   q3 (id 3, cam 2): entry 3 ranked first, r = 1 (n = 1).
  def test_hand_worked_standard(self):
    # AP: q0 (1/2 + 2/5) / 2 = 0.45; q1 1/3; q3 1. mAP = (0.45 + 1/3 + 1) / 3.
    # CMC: first matches at ranks 2, 3, 1 -> [1/3, 2/3, 1, 1, 1].
    m_ap, cmc = reid.evaluate(*_hand_case(), topk=5)
    self.assertAlmostEqual(m_ap, (0.45 + 1 / 3 + 1) / 3, places=12)
    np.testing.assert_allclose(cmc, [1 / 3, 2 / 3, 1, 1, 1], rtol=1e-12)
    self.assertEqual(cmc.dtype, np.float64)
    self.assertEqual(cmc.shape, (5,))
    # Default protocol and topk.
    m_ap2, cmc2 = reid.evaluate(*_hand_case())
    self.assertEqual(m_ap2, m_ap)
    self.assertEqual(cmc2.shape, (100,))
    np.testing.assert_allclose(cmc2[4:], 1.0)

  def test_hand_worked_ddan(self):
    # AP (trapezoids): q0: k=1, r=2: (0/1 + 1/2)/2 = 0.25; k=2, r=5: (1/4 + 2/5)/2 = 0.325;
    #   AP = (0.25 + 0.325) / 2 = 0.2875. q1: k=1, r=3: (0/2 + 1/3)/2 = 1/6. q3: (1 + 1)/2 = 1.
    # CMC: q0 adds 1/2 at entry 2-1 = 1 and 1/2 at entry 5-2 = 3 -> [0, .5, .5, 1, 1];
    #   q1 adds 1 at entry 3-1 = 2 -> [0, 0, 1, 1, 1]; q3 adds 1 at entry 0 -> [1, 1, 1, 1, 1].
    #   Mean: [1/3, 1/2, 5/6, 1, 1].
    m_ap, cmc = reid.evaluate(*_hand_case(), topk=5, protocol="ddan")
    self.assertAlmostEqual(m_ap, (0.2875 + 1 / 6 + 1) / 3, places=12)
    np.testing.assert_allclose(cmc, [1 / 3, 1 / 2, 5 / 6, 1, 1], rtol=1e-12)
    # topk = 3 drops q0's second match (entry 3): the curve is the first three entries.
    _, cmc3 = reid.evaluate(*_hand_case(), topk=3, protocol="ddan")
    np.testing.assert_allclose(cmc3, [1 / 3, 1 / 2, 5 / 6], rtol=1e-12)

  def test_same_id_same_camera_removal(self):
    dist, q_ids, g_ids, q_cams, g_cams = _hand_case()
    # Query 0 alone: its evaluation equals that of a gallery without the junk entry 0, and an
    # entry of another identity in the query's camera (entry 4, id 2, cam 0) is kept.
    full = reid.evaluate(dist[:1], q_ids[:1], g_ids, q_cams[:1], g_cams, topk=5)
    trimmed = reid.evaluate(dist[:1, 1:], q_ids[:1], g_ids[1:], q_cams[:1], g_cams[1:], topk=5)
    self.assertEqual(full[0], trimmed[0])
    np.testing.assert_array_equal(full[1], trimmed[1])
    self.assertAlmostEqual(full[0], 0.45, places=12)
    # Moving entry 4 to another camera changes nothing (it was a kept non-match either way).
    g_cams2 = g_cams.copy()
    g_cams2[4] = 2
    self.assertEqual(reid.evaluate(dist[:1], q_ids[:1], g_ids, q_cams[:1], g_cams2)[0], full[0])
    # Giving entry 2 (a match) the query's camera turns it into junk: only r = 4 remains.
    g_cams3 = g_cams.copy()
    g_cams3[2] = 0
    m_ap, cmc = reid.evaluate(dist[:1], q_ids[:1], g_ids, q_cams[:1], g_cams3, topk=5)
    self.assertAlmostEqual(m_ap, 1 / 4, places=12)
    np.testing.assert_array_equal(cmc, [0, 0, 0, 1, 1])

  @parameterized.parameters("standard", "ddan")
  def test_queries_without_match_are_skipped(self, protocol):
    dist, q_ids, g_ids, q_cams, g_cams = _hand_case()
    keep = [0, 1, 3]
    with_skip = reid.evaluate(dist, q_ids, g_ids, q_cams, g_cams, topk=6, protocol=protocol)
    without = reid.evaluate(dist[keep], q_ids[keep], g_ids, q_cams[keep], g_cams, topk=6,
                            protocol=protocol)
    self.assertAlmostEqual(with_skip[0], without[0], places=14)
    np.testing.assert_allclose(with_skip[1], without[1], rtol=1e-14)
    # A query whose only same-identity entry shares its camera has no match either.
    q_only_junk = reid.evaluate(dist[[0, 3]], np.array([3, 3]), g_ids, np.array([1, 2]),
                                g_cams, topk=6, protocol=protocol)
    alone = reid.evaluate(dist[[3]], np.array([3]), g_ids, np.array([2]), g_cams, topk=6,
                          protocol=protocol)
    self.assertEqual(q_only_junk[0], alone[0])

  @parameterized.product(protocol=("standard", "ddan"), topk=(1, 7, 40))
  def test_matches_reference_on_random_data_with_ties(self, protocol, topk):
    rng = np.random.default_rng(topk)
    num_q, num_g = 23, 31
    # Integer distances: many ties, ranked by gallery index.
    dist = rng.integers(0, 6, (num_q, num_g)).astype(np.float32)
    g_ids = rng.integers(0, 6, num_g)
    g_cams = rng.integers(0, 3, num_g)
    q_ids = rng.integers(0, 7, num_q)  # identity 6 never occurs in the gallery
    q_cams = rng.integers(0, 3, num_q)
    ref_ap, ref_cmc = reference(dist.tolist(), q_ids, g_ids, q_cams, g_cams, topk, protocol)
    m_ap, cmc = reid.evaluate(dist, q_ids, g_ids, q_cams, g_cams, topk=topk, protocol=protocol)
    self.assertAlmostEqual(m_ap, ref_ap, places=12)
    np.testing.assert_allclose(cmc, ref_cmc, rtol=1e-12, atol=1e-15)
    # Blocks of 2 queries (the vectorised path split across blocks) give the same numbers.
    with mock.patch.object(evaluate_module, "_BLOCK_ENTRIES", 2 * num_g):
      m_ap_b, cmc_b = reid.evaluate(dist, q_ids, g_ids, q_cams, g_cams, topk=topk,
                                    protocol=protocol)
    self.assertAlmostEqual(m_ap_b, ref_ap, places=12)
    np.testing.assert_allclose(cmc_b, ref_cmc, rtol=1e-12, atol=1e-15)

  @parameterized.parameters("standard", "ddan")
  def test_matches_reference_on_continuous_data(self, protocol):
    rng = np.random.default_rng(7)
    num_q, num_g = 40, 300
    dist = rng.random((num_q, num_g))
    g_ids = rng.integers(0, 20, num_g)
    g_cams = rng.integers(0, 4, num_g)
    q_ids = rng.integers(0, 20, num_q)
    q_cams = rng.integers(0, 4, num_q)
    ref_ap, ref_cmc = reference(dist.tolist(), q_ids, g_ids, q_cams, g_cams, 50, protocol)
    m_ap, cmc = reid.evaluate(dist, q_ids, g_ids, q_cams, g_cams, topk=50, protocol=protocol)
    self.assertAlmostEqual(m_ap, ref_ap, places=12)
    np.testing.assert_allclose(cmc, ref_cmc, rtol=1e-12, atol=1e-15)

  def test_standard_matches_sklearn_average_precision(self):
    # open-reid's mean_ap: scikit-learn's AP of the filtered list scored by -distance. Without
    # ties it is (1/n) sum_k k / r_k.
    rng = np.random.default_rng(3)
    num_q, num_g = 30, 200
    dist = rng.random((num_q, num_g))
    g_ids = rng.integers(0, 15, num_g)
    g_cams = rng.integers(0, 3, num_g)
    q_ids = rng.integers(0, 16, num_q)
    q_cams = rng.integers(0, 3, num_q)
    aps = []
    for q in range(num_q):
      kept = ~((g_ids == q_ids[q]) & (g_cams == q_cams[q]))
      y_true = g_ids[kept] == q_ids[q]
      if y_true.any():
        aps.append(average_precision_score(y_true, -dist[q, kept]))
    m_ap, _ = reid.evaluate(dist, q_ids, g_ids, q_cams, g_cams)
    self.assertAlmostEqual(m_ap, float(np.mean(aps)), places=12)

  def test_string_labels(self):
    dist, q_ids, g_ids, q_cams, g_cams = _hand_case()
    as_str = lambda a: np.array([f"p{v}" for v in a])  # noqa: E731
    got = reid.evaluate(dist, as_str(q_ids), as_str(g_ids), as_str(q_cams), as_str(g_cams),
                        topk=5)
    want = reid.evaluate(dist, q_ids, g_ids, q_cams, g_cams, topk=5)
    self.assertEqual(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])

  def test_errors(self):
    dist, q_ids, g_ids, q_cams, g_cams = _hand_case()
    with self.assertRaisesRegex(ValueError, "no query has a true match"):
      reid.evaluate(dist[[2]], q_ids[[2]], g_ids, q_cams[[2]], g_cams)
    with self.assertRaisesRegex(ValueError, "gallery_ids"):
      reid.evaluate(dist, q_ids, g_ids[:-1], q_cams, g_cams)
    with self.assertRaisesRegex(ValueError, "query_cams"):
      reid.evaluate(dist, q_ids, g_ids, q_cams[:2], g_cams)
    with self.assertRaisesRegex(ValueError, "2-D"):
      reid.evaluate(dist[0], q_ids, g_ids, q_cams, g_cams)
    with self.assertRaisesRegex(ValueError, "NaN"):
      bad = dist.copy()
      bad[1, 3] = np.nan
      reid.evaluate(bad, q_ids, g_ids, q_cams, g_cams)
    with self.assertRaisesRegex(ConfigError, "unknown protocol 'market'"):
      reid.evaluate(dist, q_ids, g_ids, q_cams, g_cams, protocol="market")
    with self.assertRaisesRegex(ValueError, "topk"):  # ConfigError is a ValueError
      reid.evaluate(dist, q_ids, g_ids, q_cams, g_cams, topk=0)


if __name__ == "__main__":
  absltest.main()


@pytest.mark.slow
class EvaluateScaleTest(absltest.TestCase):

  def test_market_sized_evaluation_is_fast(self):
    # Market-1501 sizes: 3368 queries, 19732 gallery entries, float32 distances (ties occur).
    rng = np.random.default_rng(0)
    num_q, num_g = 3368, 19732
    dist = rng.random((num_q, num_g), dtype=np.float32)
    g_ids = rng.integers(0, 751, num_g)
    g_cams = rng.integers(0, 6, num_g)
    q_ids = rng.integers(0, 751, num_q)
    q_cams = rng.integers(0, 6, num_q)
    for protocol in ("standard", "ddan"):
      start = time.perf_counter()
      m_ap, cmc = reid.evaluate(dist, q_ids, g_ids, q_cams, g_cams, protocol=protocol)
      self.assertLess(time.perf_counter() - start, 30.0)
      # The first 12 queries through the per-query reference.
      sub = slice(0, 12)
      ref_ap, ref_cmc = reference(dist[sub].tolist(), q_ids[sub], g_ids, q_cams[sub], g_cams,
                                  100, protocol)
      got_ap, got_cmc = reid.evaluate(dist[sub], q_ids[sub], g_ids, q_cams[sub], g_cams,
                                      protocol=protocol)
      self.assertAlmostEqual(got_ap, ref_ap, places=12)
      np.testing.assert_allclose(got_cmc, ref_cmc, rtol=1e-12, atol=1e-15)
      self.assertTrue(0 <= m_ap <= 1 and np.all(np.diff(cmc) >= 0))
