"""Tests for jaxcompress.nas.genotype: the DARTS / PC-DARTS derivation rule and serialisation."""
from __future__ import annotations

import os
import tempfile

import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from jaxcompress.nas import genotype as G
from jaxcompress.nas.space import PRIMITIVES


def _reference(alphas, betas=None, steps=4):
  """Independent NumPy transcription of the rule: lexsort ranking and first-max argmax.

  Weights are rounded to 12 decimals so floating-point noise between mathematically equal
  weights (e.g. permuted rows) cannot decide a tie; ties then go to the lower index.
  """
  a = np.asarray(alphas, np.float64)
  w = np.exp(a) / np.exp(a).sum(1, keepdims=True)
  if betas is not None:
    b = np.asarray(betas, np.float64)
    bw = np.empty_like(b)
    start = 0
    for n in range(2, 2 + steps):
      bw[start:start + n] = np.exp(b[start:start + n]) / np.exp(b[start:start + n]).sum()
      start += n
    w = w * bw[:, None]
  w = np.round(w, 12)
  masked = w.copy()
  masked[:, PRIMITIVES.index("none")] = -1.0
  gene, start = [], 0
  for n in range(2, 2 + steps):
    block = masked[start:start + n]
    strength = block.max(1)
    order = np.lexsort((np.arange(n), -strength))[:2]  # primary: -strength, then index
    for j in order:
      gene.append((PRIMITIVES[int(np.argmax(block[j]))], int(j)))
    start += n
  return gene


class DeriveGenotypeTest(parameterized.TestCase):

  @parameterized.parameters(range(6))
  def test_matches_reference_random(self, seed):
    rng = np.random.default_rng(seed)
    an, ar = rng.normal(size=(2, 14, 8)).astype(np.float32)
    g = G.derive_genotype(an, ar)
    self.assertEqual(g.normal, _reference(an))
    self.assertEqual(g.reduce, _reference(ar))
    self.assertEqual(g.normal_concat, [2, 3, 4, 5])
    self.assertEqual(g.reduce_concat, [2, 3, 4, 5])

  @parameterized.parameters(range(6))
  def test_matches_reference_with_ties_and_betas(self, seed):
    rng = np.random.default_rng(100 + seed)
    # Small integers make many exact ties, within and across edges.
    an, ar = rng.integers(0, 2, size=(2, 14, 8)).astype(np.float32)
    bn, br = rng.integers(-1, 2, size=(2, 14)).astype(np.float32)
    self.assertEqual(G.derive_genotype(an, ar).normal, _reference(an))
    g = G.derive_genotype(jnp.asarray(an), jnp.asarray(ar), jnp.asarray(bn), jnp.asarray(br))
    self.assertEqual(g.normal, _reference(an, bn))
    self.assertEqual(g.reduce, _reference(ar, br))

  def test_all_equal_ties_go_to_lower_index(self):
    g = G.derive_genotype(np.zeros((14, 8)), np.zeros((14, 8)))
    self.assertEqual(g.normal, [("max_pool_3x3", 0), ("max_pool_3x3", 1)] * 4)

  def test_none_is_never_selected(self):
    a = np.zeros((14, 8))
    a[:, 0] = 10.0  # `none` dominates every edge
    a[3, 5] = 1.0   # node 1, edge from input 1: sep_conv_5x5 is the strongest non-none op
    g = G.derive_genotype(a, a)
    self.assertNotIn("none", [op for op, _ in g.normal])
    self.assertEqual(g.normal[2], ("sep_conv_5x5", 1))

  def test_reproduces_darts_v2(self):
    # Alphas built from the published cell: kept edges get decreasing logits on their op.
    def alphas_for(cell):
      a = np.zeros((14, 8))
      start = 0
      for node in range(4):
        for rank, (op, j) in enumerate(cell[2 * node:2 * node + 2]):
          a[start + j, PRIMITIVES.index(op)] = 3.0 - rank
        start += 2 + node
      return a
    g = G.derive_genotype(alphas_for(G.DARTS_V2.normal), alphas_for(G.DARTS_V2.reduce))
    self.assertEqual(g, G.DARTS_V2)

  def test_known_case_betas_change_edges(self):
    a = np.zeros((14, 8))
    a[0, 4] = 2.0  # node 0: input 0 strongest by alpha ...
    a[1, 6] = 1.0
    b = np.zeros(14)
    b[0] = -5.0    # ... but its beta suppresses it below input 1.
    g = G.derive_genotype(a, a, b, b)
    self.assertEqual(g.normal[:2], [("dil_conv_3x3", 1), ("sep_conv_3x3", 0)])
    self.assertEqual(G.derive_genotype(a, a).normal[:2],
                     [("sep_conv_3x3", 0), ("dil_conv_3x3", 1)])

  def test_bad_shapes(self):
    with self.assertRaises(ValueError):
      G.derive_genotype(np.zeros((10, 8)), np.zeros((14, 8)))
    with self.assertRaises(ValueError):
      G.derive_genotype(np.zeros((14, 8)), np.zeros((14, 8)), np.zeros(14))

  def test_json_round_trip(self):
    for g in (G.DARTS_V1, G.DARTS_V2, G.PC_DARTS, G.PC_DARTS_image):
      self.assertEqual(G.from_json(G.to_json(g)), g)
    self.assertIsInstance(G.from_json(G.to_json(G.DARTS_V2)).normal[0], tuple)

  def test_published_cells_are_valid(self):
    for g in (G.DARTS_V1, G.DARTS_V2, G.PC_DARTS_cifar, G.PC_DARTS_image):
      for cell in (g.normal, g.reduce):
        self.assertLen(cell, 8)
        for n, (op, j) in enumerate(cell):
          self.assertIn(op, PRIMITIVES)
          self.assertLess(j, 2 + n // 2)

  def test_plot_cell(self):
    with tempfile.TemporaryDirectory() as d:
      path = os.path.join(d, "normal.png")
      if G.plot_cell(G.DARTS_V2.normal, path):
        with open(path, "rb") as f:
          self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")


class ConcatTest(parameterized.TestCase):

  @parameterized.parameters(2, 3, 4, 5)
  def test_concat_is_every_intermediate_node_by_default(self, steps):
    # DARTS' genotype(): concat = range(2, steps + 2) (multiplier = steps).
    num_edges = sum(2 + i for i in range(steps))
    rng = np.random.default_rng(steps)
    a = rng.standard_normal((num_edges, len(PRIMITIVES)))
    g = G.derive_genotype(a, a, steps=steps)
    self.assertEqual(list(g.normal_concat), list(range(2, steps + 2)))
    self.assertEqual(list(g.reduce_concat), list(range(2, steps + 2)))
    self.assertEqual(list(G.derive_genotype(a, a, steps=steps, multiplier=1).normal_concat),
                     [steps + 1])

  def test_bad_multiplier(self):
    a = np.zeros((14, len(PRIMITIVES)))
    with self.assertRaisesRegex(ValueError, "multiplier"):
      G.derive_genotype(a, a, multiplier=5)


if __name__ == "__main__":
  absltest.main()
