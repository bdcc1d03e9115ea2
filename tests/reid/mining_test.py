"""Tests for jaxcompress.reid.hard_example_mining against a NumPy loop reference."""
from __future__ import annotations

import os
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from jaxcompress import reid

sys.path.insert(0, os.path.dirname(__file__))
from reid_loss_refs import np_mine  # noqa: E402  (a sibling module of the tests)

_LABELS = np.array([3, 1, 3, 0, 1, 1, 7, 0, 3])  # 7 is a singleton: its only positive is itself


def _dist(seed, n=9):
  rng = np.random.default_rng(seed)
  d = rng.uniform(0.5, 3.0, size=(n, n))
  d = (d + d.T) / 2
  np.fill_diagonal(d, 1e-6)
  return d


class HardExampleMiningTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(np.float32, np.float64)
  def test_matches_loop_reference(self, dtype):
    with jax.enable_x64(dtype == np.float64):
      for seed in range(3):
        d = _dist(seed).astype(dtype)
        ap, an, pi, ni = self.variant(reid.hard_example_mining)(jnp.asarray(d), _LABELS)
        rp, rn = np_mine(d, _LABELS)
        np.testing.assert_array_equal(pi, rp)
        np.testing.assert_array_equal(ni, rn)
        self.assertEqual(pi.dtype, jnp.int32)
        self.assertEqual(ni.dtype, jnp.int32)
        self.assertEqual(ap.dtype, dtype)
        np.testing.assert_array_equal(ap, d[np.arange(9), rp])
        np.testing.assert_array_equal(an, d[np.arange(9), rn])
        # The singleton anchor's hardest positive is itself.
        self.assertEqual(int(pi[6]), 6)
        # Positive labels agree, negative labels differ.
        np.testing.assert_array_equal(_LABELS[np.asarray(pi)], _LABELS)
        self.assertTrue(np.all(_LABELS[np.asarray(ni)] != _LABELS))

  @chex.variants(with_jit=True, without_jit=True)
  def test_ties_go_to_lowest_index(self):
    labels = np.array([0, 0, 0, 1, 1, 1])
    d = np.full((6, 6), 2.0, np.float32)  # every positive and every negative tied
    np.fill_diagonal(d, 1e-6)
    _, _, pi, ni = self.variant(reid.hard_example_mining)(jnp.asarray(d), labels)
    np.testing.assert_array_equal(pi, [1, 0, 0, 4, 3, 3])
    np.testing.assert_array_equal(ni, [3, 3, 3, 0, 0, 0])
    # A partial tie at the extremum: anchor 0's farthest positives 1 and 2 both at 5, nearest
    # negatives 4 and 5 both at 0.5.
    d[0, 1] = d[0, 2] = 5.0
    d[0, 4] = d[0, 5] = 0.5
    _, _, pi, ni = self.variant(reid.hard_example_mining)(jnp.asarray(d), labels)
    self.assertEqual((int(pi[0]), int(ni[0])), (1, 4))
    # A positive at the anchor's own distance: the anchor (index 0 < 1) wins the tie.
    d2 = np.full((4, 4), 1e-6, np.float32)
    _, _, pi, _ = self.variant(reid.hard_example_mining)(jnp.asarray(d2), np.array([0, 0, 1, 1]))
    np.testing.assert_array_equal(pi, [0, 0, 2, 2])

  @chex.variants(with_jit=True, without_jit=True)
  def test_gradient_reaches_selected_entries_only(self):
    with jax.enable_x64(True):
      d = _dist(5)
      rng = np.random.default_rng(0)
      wp, wn = rng.normal(size=9), rng.normal(size=9)

      def f(m):
        ap, an, _, _ = reid.hard_example_mining(m, jnp.asarray(_LABELS))
        return jnp.sum(wp * ap) + jnp.sum(wn * an)

      g = np.asarray(self.variant(jax.grad(f))(jnp.asarray(d)))
      rp, rn = np_mine(d, _LABELS)
      ref = np.zeros_like(d)
      for i in range(9):
        ref[i, rp[i]] += wp[i]
        ref[i, rn[i]] += wn[i]
      np.testing.assert_array_equal(g, ref)

  def test_labels_traced_without_recompiling(self):
    traces = []

    @jax.jit
    def f(d, y):
      traces.append(1)
      return reid.hard_example_mining(d, y)

    d = jnp.asarray(_dist(1), jnp.float32)
    for perm_seed in range(3):
      y = np.random.default_rng(perm_seed).permutation(_LABELS)
      _, _, pi, ni = f(d, jnp.asarray(y, jnp.int32))
      rp, rn = np_mine(np.asarray(d), y)
      np.testing.assert_array_equal(pi, rp)
      np.testing.assert_array_equal(ni, rn)
    self.assertLen(traces, 1)

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "square"):
      reid.hard_example_mining(jnp.ones((3, 4)), jnp.zeros(3, jnp.int32))
    with self.assertRaisesRegex(ValueError, r"shape \(3,\)"):
      reid.hard_example_mining(jnp.ones((3, 3)), jnp.zeros(4, jnp.int32))
    with self.assertRaisesRegex(ValueError, "integer labels"):
      reid.hard_example_mining(jnp.ones((3, 3)), jnp.zeros(3))
    with self.assertRaisesRegex(ValueError, "floating"):
      reid.hard_example_mining(jnp.ones((3, 3), jnp.int32), jnp.zeros(3, jnp.int32))


if __name__ == "__main__":
  absltest.main()
