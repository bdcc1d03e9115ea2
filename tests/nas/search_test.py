"""Search network (supernet): shapes, arch subtree, masks, sampled paths."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcompress.nas import edge_layout, search
from jaxcompress.nas import genotype as genotype_lib

OPS4 = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")


def tiny(**kw):
  args = dict(num_classes=10, init_channels=8, layers=3, steps=2, multiplier=2,
              partial_channels=4, primitives=OPS4)
  args.update(kw)
  return search.SearchNetwork(**args)


@pytest.fixture(scope="module")
def net_and_vars():
  net = tiny()
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
  variables = jax.jit(lambda k: net.init(k, x, train=False))(jax.random.key(0))
  return net, variables, x


def test_shapes_and_arch_subtree(net_and_vars):
  net, variables, x = net_and_vars
  params = variables["params"]
  assert search.num_edges(2) == 5 and search.num_edges(4) == 14
  arch = params[search.ARCH]
  assert {k: v.shape for k, v in arch.items()} == {
      "alphas_normal": (5, 4), "alphas_reduce": (5, 4), "betas_normal": (5,),
      "betas_reduce": (5,)}
  # 1e-3 * N(0, 1) init.
  assert float(jnp.max(jnp.abs(arch["alphas_normal"]))) < 1e-2
  weights, arch2 = search.split_params(params)
  assert search.ARCH not in weights and "cell_0" in weights and "stem_conv" in weights
  assert jax.tree.structure(search.merge_params(weights, arch2)) == jax.tree.structure(params)
  # No architecture parameter anywhere else in the tree.
  flat = jax.tree_util.tree_flatten_with_path(weights)[0]
  assert not any("alpha" in jax.tree_util.keystr(p) or "beta" in jax.tree_util.keystr(p)
                 for p, _ in flat)
  # Reductions at layers // 3 = 1 and 2 * layers // 3 = 2: C = 8 -> 16 -> 32; the classifier
  # reads multiplier * 32 channels. Reduction-cell edges on the cell inputs are stride 2.
  assert params["classifier"]["kernel"].shape == (2 * 32, 10)
  assert net.reduction_layers() == (1, 2)
  assert "preprocess0" in params["cell_2"]  # FactorizedReduce after a reduction
  logits = net.apply(variables, x, train=False)
  assert logits.shape == (4, 10)
  # Partial channels: the ops see C / K channels (cell_0: 8 / 4 = 2 channels).
  # Each loop's edges are stacked (cell_0 is a normal cell: one loop over its 5 edges).
  sep = params["cell_0"][edge_layout.NORMAL_LOOP]["ops_3"]
  kernels = [v.shape for v in jax.tree.leaves(sep)]
  assert (5, 3, 3, 1, 2) in kernels
  assert set(params["cell_1"]) >= set(edge_layout.REDUCTION_LOOPS)


def test_alive_masks_and_sampled_path_agree(net_and_vars):
  net, variables, x = net_and_vars
  ne, k = 5, len(OPS4)
  idx = jnp.array([[3, 1, 2, 3, 0], [1, 3, 3, 2, 1]], jnp.int32)
  alive = jax.nn.one_hot(idx, k, dtype=bool)
  w = search.op_weights(jnp.zeros((ne, k)), alive[0])
  np.testing.assert_allclose(np.asarray(w), np.asarray(alive[0], np.float32))

  def fwd(module, **kw):
    return module.apply(variables, x, train=True, mutable=["batch_stats"], **kw)[0]

  mixed = jax.jit(lambda a: fwd(net, alive=a))(alive)
  sampled = jax.jit(lambda i: fwd(net, op_index=i))(idx)
  skipped = jax.jit(lambda a: fwd(net.clone(skip_dead=True), alive=a))(alive)
  np.testing.assert_allclose(mixed, sampled, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(mixed, skipped, rtol=1e-5, atol=1e-5)


def test_genotype_from_arch_respects_alive():
  arch = {"alphas_normal": np.zeros((14, 8)), "alphas_reduce": np.zeros((14, 8))}
  arch["alphas_normal"][:, 4] = 5.0  # sep_conv_3x3 strongest everywhere
  alive = np.ones((2, 14, 8), bool)
  alive[0, :, 4] = False             # ... but abandoned
  g = search.genotype_from_arch(arch, alive)
  assert all(op != "sep_conv_3x3" for op, _ in g.normal)
  assert len(g.normal) == 8 and len(g.reduce) == 8
  g2 = search.genotype_from_arch(arch)
  assert all(op == "sep_conv_3x3" for op, _ in g2.normal)
  # An edge whose only survivor is `none` is never kept when others compete.
  alive = np.zeros((2, 14, 8), bool)
  alive[:, :, 3] = True
  alive[0, 2] = False
  alive[0, 2, 0] = True  # node 1's edge from input 0 (edge 2): only `none` survives
  g3 = search.genotype_from_arch(arch, alive)
  assert sorted(j for _, j in g3.normal[2:4]) == [1, 2]
  assert all(op == "skip_connect" for op, _ in g3.normal)
  assert genotype_lib.from_json(genotype_lib.to_json(g3)) == g3


def _random_alive(rng, ne, k, none_rate):
  """Alive masks of a finished (one op per edge) or half-finished search; `none` survives on an
  edge with probability `none_rate`."""
  alive = np.zeros((2, ne, k), bool)
  for t in range(2):
    for e in range(ne):
      if rng.random() < none_rate:
        alive[t, e, 0] = True
      else:
        alive[t, e, rng.choice(np.arange(1, k), size=rng.integers(1, k), replace=False)] = True
  return alive


def _edge_index(node, j):
  return sum(2 + i for i in range(node)) + j


@pytest.mark.parametrize("edge_norm", [False, True])
def test_genotype_from_arch_uses_only_alive_ops(edge_norm):
  """BNAS path: every genotype edge is an op alive on that edge at the end of the search, whatever
  the masks; `none` appears only on nodes with fewer than two connected edges."""
  rng = np.random.default_rng(0)
  for trial in range(200):
    arch = {"alphas_normal": rng.normal(size=(14, 8)), "alphas_reduce": rng.normal(size=(14, 8))}
    if edge_norm:
      arch["betas_normal"], arch["betas_reduce"] = rng.normal(size=14), rng.normal(size=14)
    alive = _random_alive(rng, 14, 8, none_rate=0.3)
    g = search.genotype_from_arch(arch, alive)
    for t, cell in enumerate((g.normal, g.reduce)):
      assert len(cell) == 8
      for pos, (op, j) in enumerate(cell):
        node = pos // 2
        k = search.space.PRIMITIVES.index(op)
        assert alive[t, _edge_index(node, j), k], (trial, t, pos, op, j)
        connected = [i for i in range(2 + node) if alive[t, _edge_index(node, i), 1:].any()]
        # `none` only fills a slot no connected edge could take.
        assert (op == "none") == (len(connected) < 2 and j not in connected), (trial, t, pos)
        assert j not in [i for _, i in cell[2 * node: pos]]  # two different inputs per node


def test_genotype_from_arch_edge_left_with_only_none():
  """An edge whose only survivor is `none` is no connection: never kept while connected edges
  compete; a node short of connected edges keeps ("none", j), never an abandoned op."""
  arch = {"alphas_normal": np.zeros((14, 8)), "alphas_reduce": np.zeros((14, 8))}
  alive = np.zeros((2, 14, 8), bool)
  alive[:, :, 4] = True                  # sep_conv_3x3 survives everywhere ...
  alive[0, 0] = False
  alive[0, 0, 0] = True                  # ... except node 0's edge from input 0: only `none`
  g = search.genotype_from_arch(arch, alive)
  # Node 0 has two inputs, one of them unconnected: (sep_conv_3x3, 1) and (none, 0). The DARTS
  # rule on masked weights would give the dead max_pool_3x3 (the first non-`none` op) on input 0.
  assert g.normal[:2] == [("sep_conv_3x3", 1), ("none", 0)]
  assert all(op == "sep_conv_3x3" for op, _ in g.normal[2:] + g.reduce)
  # Both inputs of node 0 unconnected: the node is zero; the rest is unchanged.
  alive[0, 1] = False
  alive[0, 1, 0] = True
  g2 = search.genotype_from_arch(arch, alive)
  assert g2.normal[:2] == [("none", 0), ("none", 1)]
  assert g2.normal[2:] == g.normal[2:]
  # With betas, the stronger `none` edge (larger softmax(beta)) fills the slot first.
  arch_b = {**arch, "betas_normal": np.zeros(14), "betas_reduce": np.zeros(14)}
  arch_b["betas_normal"][1] = 1.0
  assert search.genotype_from_arch(arch_b, alive).normal[:2] == [("none", 1), ("none", 0)]
  # The evaluation network builds `none` edges (as zeros; traced only, to stay fast).
  from jaxcompress.nas import eval_network  # pylint: disable=g-import-not-at-top
  net = eval_network.EvalNetwork(eval_network.get_genotype(g2), C=4, num_cells=3, num_classes=3,
                                 auxiliary=False)
  x = jnp.ones((1, 8, 8, 3))
  v = jax.eval_shape(net.init, jax.random.key(0), x)
  assert jax.eval_shape(net.apply, v, x).shape == (1, 3)


def test_genotype_from_arch_full_masks_match_darts_rule():
  """All ops alive: the BNAS path is the DARTS / PC-DARTS rule of `derive_genotype`."""
  rng = np.random.default_rng(1)
  for _ in range(20):
    a_n, a_r, b_n, b_r = rng.normal(size=(14, 8)), rng.normal(size=(14, 8)), rng.normal(
        size=14), rng.normal(size=14)
    arch = {"alphas_normal": a_n, "alphas_reduce": a_r, "betas_normal": b_n, "betas_reduce": b_r}
    assert search.genotype_from_arch(arch, np.ones((2, 14, 8), bool)) == \
        genotype_lib.derive_genotype(a_n, a_r, b_n, b_r)
  with pytest.raises(ValueError, match="no alive op"):
    search.genotype_from_arch(arch, np.zeros((2, 14, 8), bool))
  with pytest.raises(ValueError, match="shape"):
    search.genotype_from_arch(arch, np.ones((2, 5, 8), bool))


class _CompileCounter:
  """Counts XLA compilations (jax.monitoring's backend-compile event, cache hits included)."""
  EVENT = "/jax/core/compile/backend_compile_duration"
  # Recorded around every compile-or-load, so an executable served by the test run's
  # persistent compilation cache (conftest) counts as one compilation too.

  def __init__(self):
    self.count = 0

  def _listener(self, event, duration, **kwargs):
    del duration, kwargs
    if event == self.EVENT:
      self.count += 1

  def __enter__(self):
    jax.monitoring.register_event_duration_secs_listener(self._listener)
    return self

  def __exit__(self, *exc):
    jax.monitoring.unregister_event_duration_listener(self._listener)


def test_forward_compiles_once_whatever_ops_are_abandoned():
  """Abandoning ops (alive masks, skipped ops by `nn.cond`) or switching sampled ops (op_index)
  never recompiles: one XLA compilation for every mask of a 4 -> 1 op search."""
  net = tiny(skip_dead=True)
  x = np.asarray(jax.random.normal(jax.random.key(1), (4, 8, 8, 1)))
  variables = jax.jit(lambda k: net.init(k, x, train=False))(jax.random.key(0))
  ne = search.num_edges(2)
  fwd = jax.jit(lambda v, a, i: (net.apply(v, x, alive=a), net.apply(v, x, op_index=i)))
  rng = np.random.default_rng(0)
  alive = np.ones((2, ne, 4), bool)
  with _CompileCounter() as counter:
    for step in range(4):  # 4 ops -> 1 op per edge: every mask of the search
      index = rng.integers(0, 4, size=(2, ne)).astype(np.int32)
      jax.block_until_ready(fwd(variables, alive, index))
      if step < 3:  # abandon one alive op per edge
        for t in range(2):
          for e in range(ne):
            alive[t, e, np.flatnonzero(alive[t, e])[0]] = False
  assert counter.count == 1
  assert alive.sum(-1).max() == 1


def _max_diff(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  return max(float(jnp.max(jnp.abs(jnp.asarray(x, jnp.float32) - jnp.asarray(y, jnp.float32))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def unstack(net, tree):
  return edge_layout.unstack(tree, net.steps, net.reduction_layers())


def test_edge_layout_round_trip():
  """stack(unstack(v)) == v, also on shapes; the unstacked tree is the unrolled form's."""
  net = tiny()
  x = jnp.zeros((2, 8, 8, 1))
  shapes = jax.eval_shape(lambda k: net.init(k, x, train=False), jax.random.key(0))
  per_edge = jax.eval_shape(lambda k: net.clone(scan_edges=False).init(k, x, train=False),
                            jax.random.key(0))
  assert jax.tree.map(lambda a: (a.shape, a.dtype), unstack(net, shapes)) == jax.tree.map(
      lambda a: (a.shape, a.dtype), per_edge)
  variables = net.init(jax.random.key(0), x, train=False)
  again = edge_layout.stack(unstack(net, variables), net.steps, net.reduction_layers())
  assert jax.tree.structure(again) == jax.tree.structure(variables)
  assert _max_diff(again, variables) == 0.0
  # Edge e of a reduction cell's second loop is the e-th edge between nodes.
  _, between = edge_layout.edge_groups(net.steps)
  stacked = variables["params"]["cell_1"][edge_layout.REDUCTION_LOOPS[1]]
  first = unstack(net, variables)["params"]["cell_1"][f"edge_{between[0][0]}"]
  assert _max_diff(jax.tree.map(lambda v: v[0], stacked), first) == 0.0


def test_edge_loops_equal_the_unrolled_cell_forward():
  """Loop form vs unrolled form, forward only: logits, batch statistics, masks."""
  net = tiny()
  unrolled = net.clone(scan_edges=False)
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
  variables = net.init(jax.random.key(0), x, train=False)
  params = dict(variables["params"])
  params[search.ARCH] = jax.tree.map(
      lambda a: jax.random.normal(jax.random.key(2), a.shape), params[search.ARCH])
  variables = {**variables, "params": params}
  alive = np.ones((2, search.num_edges(net.steps), len(OPS4)), bool)
  alive[:, :, 1] = False

  def forward(model, v):
    return jax.jit(lambda v: (model.apply(v, x, train=True, mutable=["batch_stats"]),
                              model.apply(v, x, alive=alive)))(v)

  (logits_a, stats_a), masked_a = forward(net, variables)
  (logits_b, stats_b), masked_b = forward(unrolled, unstack(net, variables))
  assert _max_diff((logits_a, unstack(net, stats_a), masked_a),
                   (logits_b, stats_b, masked_b)) < 1e-5


@pytest.mark.slow  # compiles the unrolled gradient of two supernets
@pytest.mark.parametrize("kw", [{}, {"edge_norm": False, "partial_channels": 1, "skip_dead": True,
                                     "steps": 3, "multiplier": 3}])
def test_edge_loops_equal_the_unrolled_cell(kw):
  """The loop form (default) and the unrolled form share parameters and agree on logits, batch
  statistics, gradients, alive masks and sampled paths, for both reduction and normal cells."""
  net = tiny(**kw)
  unrolled = net.clone(scan_edges=False)
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
  variables = jax.jit(lambda k: net.init(k, x, train=False))(jax.random.key(0))
  # Unstacked, the same tree (names, shapes) as the unrolled form creates.
  assert jax.tree.structure(unstack(net, variables)) == jax.tree.structure(
      jax.eval_shape(lambda k: unrolled.init(k, x, train=False), jax.random.key(0)))
  # Non-trivial architecture weights, so that every edge contributes differently.
  params = dict(variables["params"])
  params[search.ARCH] = jax.tree.map(
      lambda a: jax.random.normal(jax.random.key(2), a.shape), params[search.ARCH])
  variables = {**variables, "params": params}
  per_edge = unstack(net, variables)
  assert _max_diff(net.apply(variables, x), unrolled.apply(per_edge, x)) < 1e-5

  def train_loss(model, v, p):
    logits, upd = model.apply({**v, "params": p}, x, train=True, mutable=["batch_stats"])
    return jnp.sum(jnp.sin(logits)), upd

  (loss_a, stats_a), grad_a = jax.jit(jax.value_and_grad(
      lambda p: train_loss(net, variables, p), has_aux=True))(params)
  (loss_b, stats_b), grad_b = jax.jit(jax.value_and_grad(
      lambda p: train_loss(unrolled, per_edge, p), has_aux=True))(per_edge["params"])
  np.testing.assert_allclose(loss_a, loss_b, rtol=1e-4, atol=1e-6)
  stats_a, grad_a = unstack(net, stats_a), unstack(net, grad_a)
  assert _max_diff(stats_a, stats_b) < 1e-5
  scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grad_b))
  assert _max_diff(grad_a, grad_b) < 1e-4 * scale
  # Every edge's statistics moved (each edge updated its own slot, not a neighbour's).
  for cell in ("cell_0", "cell_1"):
    for e in range(search.num_edges(net.steps)):
      before = jax.tree.leaves(per_edge["batch_stats"][cell][f"edge_{e}"])
      after = jax.tree.leaves(stats_a["batch_stats"][cell][f"edge_{e}"])
      assert any(not np.array_equal(a, b) for a, b in zip(before, after)), (cell, e)

  ne = search.num_edges(net.steps)
  rng = np.random.default_rng(0)
  alive = rng.random((2, ne, len(OPS4))) > 0.4
  alive[..., 2] = True
  index = rng.integers(0, len(OPS4), (2, ne)).astype(np.int32)
  assert _max_diff(net.apply(variables, x, alive=alive),
                   unrolled.apply(per_edge, x, alive=alive)) < 1e-5
  assert _max_diff(net.apply(variables, x, op_index=index),
                   unrolled.apply(per_edge, x, op_index=index)) < 1e-5


def test_edge_loops_compile_one_edge_per_loop():
  """The step program holds one edge per loop (one loop per normal cell, two per reduction
  cell), not every edge of the cell."""
  net = tiny(steps=4, multiplier=4)
  x = jnp.zeros((2, 8, 8, 1))
  variables = jax.eval_shape(lambda k: net.init(k, x, train=False), jax.random.key(0))

  def count_max_pools(model, v):
    text = jax.jit(lambda v: model.apply(v, x)).lower(v).as_text()
    return text.count("stablehlo.while"), text.count("reduce_window")

  loops, pools = count_max_pools(net, variables)
  unrolled_loops, unrolled_pools = count_max_pools(net.clone(scan_edges=False),
                                                   unstack(net, variables))
  reductions = len(net.reduction_layers())
  assert (loops, unrolled_loops) == (net.layers + reductions, 0)
  # max_pool_3x3 on every edge: 14 per cell unrolled, 2 per cell in loops (+ PC-DARTS's
  # stride-2 bypass pools of the reduction cells, which stay one per loop too).
  assert unrolled_pools >= 14 * net.layers and pools <= 4 * net.layers


def test_edge_init_draws_each_edge_apart():
  net = tiny()
  x = jnp.zeros((4, 8, 8, 1))
  variables = net.init(jax.random.key(0), x, train=False)
  per_edge = unstack(net, variables)["params"]["cell_0"]
  kernels = [jax.tree.leaves(per_edge[f"edge_{e}"]["ops_3"])[0]
             for e in range(search.num_edges(net.steps))]
  # Each edge has its own draw (a folded key per edge), none equal to another.
  for a in range(len(kernels)):
    for b in range(a + 1, len(kernels)):
      assert not np.allclose(kernels[a], kernels[b])
  # Deterministic in the key.
  again = net.init(jax.random.key(0), x, train=False)
  assert _max_diff(variables, again) == 0.0
