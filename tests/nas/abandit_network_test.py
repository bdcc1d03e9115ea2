"""Tests for jaxcompress.nas.abandit_network: genotypes, eval network, search network, derivation."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from jaxcompress import recording
from jaxcompress.nas import abandit_network as an
from jaxcompress.nas import edge_layout, eval_network, robust_ops

# Released genotypes as written in the official bczhangbczhang/ABanditNAS utils/genotypes_all.py
# (Genotype_6 fields a..f and a_concat..f_concat = range(1, 5)).
_CELLS = ("a", "b", "c", "d", "e", "f")
_CONCAT = list(range(1, 5))
_OFFICIAL_CIFAR_1 = {
    "a": [[("conv_3x3", 0)], [("gab_filt_3x3", 1)], [("sep_conv_3x3", 2)], [("dtp_blok_3x3", 1)]],
    "b": [[("avg_pool_3x3", 0)], [("gab_filt_3x3", 0)], [("sep_conv_5x5", 2)], [("conv_3x3", 1)]],
    "c": [[("conv_3x3", 0)], [("max_pool_3x3", 0)], [("conv_5x5", 0)], [("sep_conv_5x5", 3)]],
    "d": [[("dtp_blok_3x3", 0)], [("sep_conv_5x5", 1)], [("avg_pool_3x3", 2)], [("conv_3x3", 3)]],
    "e": [[("dtp_blok_3x3", 0)], [("sep_conv_5x5", 1)], [("sep_conv_3x3", 1)],
          [("avg_pool_3x3", 3)]],
    "f": [[("gab_filt_3x3", 0)], [("conv_3x3", 0)], [("dtp_blok_3x3", 1)], [("avg_pool_3x3", 2)]],
    **{c + "_concat": _CONCAT for c in _CELLS},
}
_OFFICIAL_CIFAR_2 = {
    "a": [[("dtp_blok_3x3", 0)], [("sep_conv_3x3", 0)], [("conv_3x3", 1)], [("sep_conv_3x3", 3)]],
    "b": [[("conv_5x5", 0)], [("gab_filt_3x3", 0)], [("max_pool_3x3", 0)], [("dtp_blok_3x3", 2)]],
    "c": [[("sep_conv_3x3", 0)], [("dtp_blok_3x3", 0)], [("max_pool_3x3", 1)],
          [("sep_conv_5x5", 3)]],
    "d": [[("sep_conv_5x5", 0)], [("dtp_blok_3x3", 0)], [("gab_filt_3x3", 2)], [("conv_3x3", 1)]],
    "e": [[("sep_conv_5x5", 0)], [("skip_connect", 1)], [("sep_conv_5x5", 1)],
          [("sep_conv_5x5", 1)]],
    "f": [[("max_pool_3x3", 0)], [("skip_connect", 0)], [("sep_conv_5x5", 2)],
          [("gab_filt_3x3", 0)]],
    **{c + "_concat": _CONCAT for c in _CELLS},
}


class GenotypeTest(absltest.TestCase):

  def test_released_genotypes_transcribed(self):
    for g in (an.ABANDIT_CIFAR_1, an.ABANDIT_CIFAR_2):
      self.assertEqual(g.num_cells, 6)
      for cell, concat in zip(g.cells, g.concats):
        self.assertLen(cell, 4)
        self.assertEqual(concat, (1, 2, 3, 4))
        for j, (op, idx) in enumerate(cell, start=1):
          self.assertIn(op, robust_ops.ABANDIT_PRIMITIVES)
          self.assertLess(idx, j)  # a node reads B_0 or an earlier node

  def test_released_genotypes_match_the_official_file_on_every_edge(self):
    # Every (op, input) pair of every node of the six cells a-f, in the official nested layout.
    for name, official in (("ABANDIT_CIFAR_1", _OFFICIAL_CIFAR_1),
                           ("ABANDIT_CIFAR_2", _OFFICIAL_CIFAR_2)):
      ours = getattr(an, name)
      self.assertIs(an.get_genotype(name), ours)
      self.assertEqual(ours.num_cells, len(_CELLS))
      for k, cell in enumerate(_CELLS):
        self.assertLen(ours.cells[k], len(official[cell]))
        for j, node in enumerate(official[cell]):
          (op, idx), = node
          self.assertEqual(ours.cells[k][j], (op, idx), f"{name} cell {cell} node {j + 1}")
        self.assertEqual(ours.concats[k], tuple(official[cell + "_concat"]))
      # The official nested layout parses to the same genotype.
      self.assertEqual(an.get_genotype(official), ours)
    self.assertNotEqual(an.ABANDIT_CIFAR_1, an.ABANDIT_CIFAR_2)

  def test_dict_json_round_trip_and_official_nested_layout(self):
    d = an.genotype_to_dict(an.ABANDIT_CIFAR_1)
    self.assertEqual(sorted(d)[:2], ["a", "a_concat"])
    self.assertEqual(an.genotype_from_dict(d), an.ABANDIT_CIFAR_1)
    self.assertEqual(an.genotype_from_json(an.genotype_to_json(an.ABANDIT_CIFAR_2)),
                     an.ABANDIT_CIFAR_2)
    nested = {"a": [[("conv_3x3", 0)], [("skip_connect", 1)], [("conv_5x5", 2)],
                    [("max_pool_3x3", 0)]], "a_concat": list(range(1, 5))}
    g = an.get_genotype(nested)
    self.assertEqual(g.cells[0][3], ("max_pool_3x3", 0))
    self.assertEqual(an.get_genotype("ABANDIT_CIFAR_2"), an.ABANDIT_CIFAR_2)
    self.assertEqual(an.get_genotype('{"genotype": %s}' % an.genotype_to_json(
        an.ABANDIT_CIFAR_1)), an.ABANDIT_CIFAR_1)
    with self.assertRaisesRegex(ValueError, "ABANDIT_CIFAR_1"):
      an.get_genotype("NO_SUCH_GENOTYPE")

  def test_layer_layout_of_the_ten_layer_network(self):
    self.assertEqual([an.cell_index(i, 10, 6) for i in range(10)], [0, 0, 1, 1, 2, 3, 3, 4, 5, 5])
    self.assertEqual(an.reduction_layers(10), (3, 6))
    self.assertEqual(an.denoising_layers(10), (2, 5, 7))
    self.assertEqual([an.cell_index(i, 6, 6) for i in range(6)], list(range(6)))
    self.assertEqual(an.edge_list()[:3], [(0, 1), (0, 2), (1, 2)])
    self.assertEqual(an.num_edges(), 10)

  def test_derive_genotype_rule(self):
    prims = ("max_pool_3x3", "skip_connect", "conv_3x3")
    mean = np.zeros((1, 10, 3))
    alive = np.zeros((1, 10, 3), bool)
    alive[..., 2] = True                        # conv_3x3 survives everywhere ...
    alive[0, 1, :] = [True, False, False]       # ... except edge (0, 2): max_pool
    mean[0, :, 2] = np.arange(10) / 10.0
    mean[0, 1, 0] = 0.9                         # (0, 2) beats (1, 2) for node 2
    mean[0, 3, 2] = mean[0, 4, 2] = mean[0, 5, 2] = 0.5  # tie on node 3 -> input 0
    g = an.derive_genotype(mean, alive, prims)
    self.assertEqual(g.cells[0], (("conv_3x3", 0), ("max_pool_3x3", 0), ("conv_3x3", 0),
                                  ("conv_3x3", 3)))
    self.assertEqual(g.concats[0], (1, 2, 3, 4))


class EvalNetworkTest(absltest.TestCase):

  def _shapes(self, genotype, manual):
    net = an.AbanditNetwork(genotype, C=48, layers=10, auxiliary=True, manual_denoising=manual)
    x = jnp.zeros((2, 32, 32, 3))
    v = jax.eval_shape(lambda k: net.init(k, x), jax.random.key(0))
    (logits, aux), _ = jax.eval_shape(
        lambda v: net.apply(v, x, train=True, mutable=["batch_stats"]), v)
    logits_eval, aux_eval = jax.eval_shape(lambda v: net.apply(v, x), v)
    return v, logits, aux, logits_eval, aux_eval

  def test_both_genotypes_shapes_aux_and_denoising_placement(self):
    for genotype, manual in ((an.ABANDIT_CIFAR_1, True), (an.ABANDIT_CIFAR_2, False)):
      v, logits, aux, logits_eval, aux_eval = self._shapes(genotype, manual)
      self.assertEqual(logits.shape, (2, 10))
      self.assertEqual(aux.shape, (2, 10))
      self.assertEqual(logits_eval.shape, (2, 10))
      self.assertIsNone(aux_eval)
      p = v["params"]
      self.assertLen([k for k in p if k.startswith("cell_")], 10)
      # Cell 9 has C = 4 * 48 = 192 per node -> 768 channels into the classifier.
      self.assertEqual(p["classifier"]["kernel"].shape, (4 * 4 * 48, 10))
      # Reduction cells double C: cell 3 works at 96, cell 6 at 192 channels.
      self.assertEqual(p["cell_3"]["ReLUConvBN_0"]["Conv_0"]["kernel"].shape[-1], 96)
      self.assertEqual(p["cell_6"]["ReLUConvBN_0"]["Conv_0"]["kernel"].shape[-1], 192)
      # Hand-placed denoising: an extra DenoisingBlock with BN over the 4C concat output.
      for i in range(10):
        blocks = [k for k in p[f"cell_{i}"] if k.startswith("DenoisingBlock")]
        widths = [p[f"cell_{i}"][b]["BatchNorm_0"]["scale"].shape[0] for b in blocks]
        c_cell = 48 * (1 + (i >= 3) + 2 * (i >= 6))
        self.assertEqual(4 * c_cell in widths, manual and i in (2, 5, 7), (i, widths))
      n_params = sum(x.size for x in jax.tree.leaves(p))
      self.assertGreater(n_params, 1_000_000)

  def test_auxiliary_head_and_drop_path_are_the_darts_ones_with_abandit_epsilon(self):
    # One AuxiliaryHeadCIFAR / drop_path for DARTS and ABanditNAS; ABanditNAS's BNs use 1e-3.
    g = an.make_genotype([[("conv_3x3", 0), ("sep_conv_3x3", 1), ("max_pool_3x3", 0),
                           ("skip_connect", 2)]])
    net = an.AbanditNetwork(g, C=4, layers=3, auxiliary=True, drop_path_prob=0.5,
                            mean=(0.5,), std=(0.5,))
    x = jnp.zeros((2, 16, 16, 1))
    v = net.init({"params": jax.random.key(0), "drop_path": jax.random.key(1)}, x)
    calls, _ = recording.record_calls(
        lambda v, x: net.apply(v, x, train=True, mutable=["batch_stats"],
                               rngs={"drop_path": jax.random.key(2)}), v, x)
    (head,) = [c.module for c in calls if c.name == "auxiliary_head"]
    self.assertIs(type(head), eval_network.AuxiliaryHead)
    self.assertEqual(head.bn_epsilon, robust_ops.ABANDIT_BN_EPS)
    bns = [c.module for c in calls if c.name.startswith("auxiliary_head/BatchNorm")]
    self.assertEqual([bn.epsilon for bn in bns], [robust_ops.ABANDIT_BN_EPS] * 2)
    self.assertFalse(hasattr(an, "AuxiliaryHead") or hasattr(an, "drop_path"))

  def test_small_network_runs_and_denoising_starts_as_identity(self):
    g = an.make_genotype([[("skip_connect", 0), ("dtp_blok_3x3", 1), ("max_pool_3x3", 0),
                           ("conv_3x3", 2)]])
    net = an.AbanditNetwork(g, C=4, layers=3, auxiliary=False, mean=(0.5,), std=(0.5,))
    x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 1))
    v = net.init(jax.random.key(0), x)
    logits, aux = net.apply(v, x)
    self.assertEqual(logits.shape, (2, 10))
    self.assertIsNone(aux)
    # Zero-initialised BN scale in every denoising block (identity at init) survives he_fout.
    params = an.reinit_he_fout(v["params"], jax.random.key(3))
    scale = params["cell_0"]["DenoisingBlock_0"]["BatchNorm_0"]["scale"]
    np.testing.assert_array_equal(scale, 0.0)
    k = params["cell_1"]["AbanditConv_0"]["Conv_0"]["kernel"]
    self.assertAlmostEqual(float(jnp.std(k)), np.sqrt(2.0 / (9 * k.shape[-1])), delta=0.05)
    np.testing.assert_array_equal(params["classifier"]["bias"], 0.0)


class HeFoutTest(absltest.TestCase):

  def test_redraw_cuts_one_normal_and_one_uniform_draw_into_the_leaves(self):
    # Conv kernels N(0, 2 / (kh kw C_out)) and linear weights U(+-1/sqrt(fan_in)), cut in the
    # tree's flatten order from one draw each; linear biases zeroed, other leaves kept.
    params = {"a": {"kernel": jnp.zeros((3, 3, 2, 4))}, "b": {"kernel": jnp.zeros((1, 1, 4, 8))},
              "bn": {"scale": jnp.full((4,), 0.5)},
              "fc": {"kernel": jnp.zeros((8, 10)), "bias": jnp.ones((10,))}}
    rng = jax.random.key(5)
    out = an.reinit_he_fout(params, rng)
    rng_conv, rng_linear = jax.random.split(rng)
    normal = np.asarray(jax.random.normal(rng_conv, (72 + 32,)))
    uniform = np.asarray(jax.random.uniform(rng_linear, (80,), minval=-1.0, maxval=1.0))
    np.testing.assert_allclose(np.ravel(out["a"]["kernel"]), normal[:72] * np.sqrt(2 / 36),
                               rtol=1e-6)
    np.testing.assert_allclose(np.ravel(out["b"]["kernel"]), normal[72:] * np.sqrt(2 / 8),
                               rtol=1e-6)
    np.testing.assert_allclose(np.ravel(out["fc"]["kernel"]), uniform / np.sqrt(8), rtol=1e-6)
    np.testing.assert_array_equal(out["fc"]["bias"], 0.0)
    np.testing.assert_array_equal(out["bn"]["scale"], 0.5)
    jitted = jax.jit(an.reinit_he_fout)(params, rng)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(jitted)):
      np.testing.assert_allclose(a, b, rtol=1e-6)


class SearchNetworkTest(absltest.TestCase):

  def test_ops_switch_by_traced_index_without_recompiling(self):
    prims = ("skip_connect", "max_pool_3x3", "avg_pool_3x3")
    net = an.SearchNetwork(C=4, num_classes=3, layers=2, num_cells=2, primitives=prims,
                           affine=True, mean=(0.0,), std=(1.0,))
    x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 1))
    ops0 = jnp.zeros((2, 10), jnp.int32)
    v = net.init(jax.random.key(0), x, ops0)
    per_edge = edge_layout.unstack(v, an.STEPS, (), cell_loops=net.cell_loops())
    edge = per_edge["params"]["cell_0"]["edge_0_1"]
    # Every op owns its weights (reduction edge: FactorizedReduce, pools with affine BN).
    self.assertEqual(set(edge), {"ops_0", "ops_1", "ops_2"})
    # cell_0 reduces: its 4 stride-2 edges from B_0 in one loop, the 6 others in another.
    self.assertEqual({k: jax.tree.leaves(v["params"]["cell_0"][k])[0].shape[0]
                      for k in edge_layout.REDUCTION_LOOPS}, dict(zip(edge_layout.REDUCTION_LOOPS,
                                                                      (4, 6))))
    traces = {"n": 0}

    @jax.jit
    def run(v, ops):
      traces["n"] += 1
      return net.apply(v, x, ops, train=True, mutable=["batch_stats"])[0]

    outs = [run(v, jnp.full((2, 10), k, jnp.int32)) for k in range(3)]
    mixed = run(v, jnp.asarray(np.random.default_rng(0).integers(0, 3, (2, 10)), jnp.int32))
    self.assertEqual(traces["n"], 1)
    self.assertEqual(mixed.shape, (2, 3))
    self.assertGreater(float(jnp.abs(outs[0] - outs[1]).max()), 1e-6)

  def test_edge_loops_equal_the_unrolled_cells(self):
    """Loops (default) and unrolled cells agree on logits, batch statistics and gradients from
    the same (converted) variables, for normal and reduction cells and mixed op choices."""
    prims = ("skip_connect", "max_pool_3x3", "sep_conv_3x3", "gab_filt_3x3", "dtp_blok_3x3")
    net = an.SearchNetwork(C=4, num_classes=3, layers=3, num_cells=3, primitives=prims,
                           mean=(0.0,), std=(1.0,))
    unrolled = net.clone(scan_edges=False)
    x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 1))
    ops = jnp.asarray(np.random.default_rng(0).integers(0, len(prims), (3, 10)), jnp.int32)
    v = jax.jit(net.init)(jax.random.key(0), x, ops)
    layout = dict(steps=an.STEPS, reduction_layers=(), cell_loops=net.cell_loops())
    per_edge = edge_layout.unstack(v, **layout)
    self.assertEqual(jax.tree.structure(per_edge), jax.tree.structure(
        jax.eval_shape(unrolled.init, jax.random.key(0), x, ops)))

    def loss(model, variables, params):
      logits, upd = model.apply({**variables, "params": params}, x, ops, train=True,
                                mutable=["batch_stats"])
      return jnp.sum(jnp.sin(logits)), (logits, upd)

    (_, (logits_a, stats_a)), grads_a = jax.jit(jax.value_and_grad(
        lambda p: loss(net, v, p), has_aux=True))(v["params"])
    (_, (logits_b, stats_b)), grads_b = jax.jit(jax.value_and_grad(
        lambda p: loss(unrolled, per_edge, p), has_aux=True))(per_edge["params"])
    np.testing.assert_allclose(logits_a, logits_b, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(edge_layout.unstack(stats_a, **layout)),
                    jax.tree.leaves(stats_b)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads_b))
    for a, b in zip(jax.tree.leaves(edge_layout.unstack(grads_a, **layout)),
                    jax.tree.leaves(grads_b)):
      np.testing.assert_allclose(a, b, atol=1e-4 * scale)
    np.testing.assert_allclose(net.apply(v, x, ops), unrolled.apply(per_edge, x, ops),
                               rtol=1e-5, atol=1e-6)

  def test_search_cell_sums_every_predecessor(self):
    cell = an.SearchCell(4, reduction=False, primitives=("skip_connect", "max_pool_3x3"))
    x = jax.random.normal(jax.random.key(2), (2, 6, 6, 4))
    ops = jnp.zeros((10,), jnp.int32)   # identity everywhere: B_j = sum_{i<j} B_i = 2^{j-1} B_0
    v = cell.init(jax.random.key(0), x, ops)
    y, _ = cell.apply(v, x, ops, train=True, mutable=["batch_stats"])
    b1 = y[..., :4]
    for j in range(1, 4):
      np.testing.assert_allclose(y[..., 4 * j:4 * (j + 1)], 2.0 ** j * b1, rtol=1e-5, atol=1e-5)


if __name__ == "__main__":
  absltest.main()
