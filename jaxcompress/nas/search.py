"""The DARTS / PC-DARTS search network (supernet) in NHWC Flax linen.

Follows `quark0/darts` `cnn/model_search.py` (DARTS, arXiv 1806.09055) and
`yuhuixu1993/PC-DARTS` `model_search.py` (PC-DARTS, arXiv 1907.05737):

* stem: 3x3 conv to `stem_multiplier * C` channels + BN (affine, as the official stem);
* `layers` cells; reduction cells (channels x2, stride-2 edges on the two cell inputs) at
  `layers // 3` and `2 * layers // 3`;
* cell: inputs c_{k-2}, c_{k-1} preprocessed by `FactorizedReduce` (when the previous cell
  reduced) or ReLU-1x1 conv-BN, and ReLU-1x1 conv-BN; `steps` intermediate nodes, node i sums
  over the 2 + i earlier states (14 edges for 4 steps); output = concat of the last
  `multiplier` states; all search-net BNs are affine-free;
* every edge is a mixed op over `primitives` weighted by softmax(alpha); PC-DARTS sends only
  the first C/K channels through the ops (the rest bypass, 2x2 max-pooled on stride-2 edges),
  concatenates and channel-shuffles with K groups (`partial_channels=1` is plain DARTS);
* PC-DARTS edge normalisation: node i = sum_j softmax_j(beta_i)_j * edge_ij;
* global average pool + linear classifier.

Architecture parameters live in their own parameter subtree `params["arch"]` (`alphas_normal`,
`alphas_reduce` (num_edges, num_ops), and with edge normalisation `betas_normal`,
`betas_reduce` (num_edges,)), initialised 1e-3 * N(0, 1) as the official code, and shared by all
cells of a type. `split_params` / `merge_params` separate them from the network weights.

Two traced extras serve op-space reduction and sampling (BNAS, ABanditNAS) without recompiling:

* `alive`: bool (2, num_edges, num_ops) for [normal, reduce]; abandoned ops get zero mixing
  weight (softmax over the alive ops only) and, with `skip_dead=True`, are not computed at all
  (`nn.cond` per op: the op-space reduction speed-up on accelerators).
* `op_index`: int (2, num_edges); each edge runs only that op (`nn.switch`), a single-path
  sub-network with the inherited weights; edge normalisation and partial channels still apply.

Example:
  >>> import jax, jax.numpy as jnp
  >>> net = SearchNetwork(num_classes=10, init_channels=16, layers=8)
  >>> x = jnp.zeros((2, 32, 32, 3))
  >>> variables = net.init(jax.random.key(0), x, train=False)
  >>> weights, arch = split_params(variables["params"])
  >>> logits, upd = net.apply(variables, x, train=True, mutable=["batch_stats"])
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress.nas import binary_ops, edge_layout, space
from jaxcompress.nas import genotype as genotype_lib
from jaxcompress.nas.supernet import channel_shuffle, edge_normalization
from jaxcompress.ops import conv as conv_ops
from jaxcompress.train import one_shot

ARCH = "arch"  # the parameter subtree holding the architecture parameters
_NEG = -1e9    # logit of an abandoned op (exp underflows to exactly 0, no NaN gradients)


def num_edges(steps: int) -> int:
  """Edges of a cell with `steps` intermediate nodes: sum_{i<steps} (2 + i) (14 for 4)."""
  return sum(2 + i for i in range(steps))


class SearchOp(nn.Module):
  """One candidate op of the search network; pools get the DARTS affine-free BN."""
  name_: str
  features: int
  stride: int = 1
  op_set: str = "darts"
  binary_activations: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    op = binary_ops.ops_for(self.op_set, self.binary_activations)[self.name_](
        self.features, self.stride, False)
    y = op(x, train)
    if "pool" in self.name_:
      y = space.batch_norm(train, False)(y)
    return y


class SearchEdge(nn.Module):
  """A (PC-)DARTS edge: mixed op over `primitives` on 1/k of the channels, then shuffle.

  Attributes:
    features: channels C of the edge (input = output).
    stride: 2 on reduction-cell edges reading the cell inputs.
    partial_channels: PC-DARTS K (1: every channel goes through the ops, no shuffle).
    primitives: op names; the last axis of weights / alive, the range of `index`.
    op_set: "darts" or "binary".
    binary_activations: binary op set only: binarize activations too (1-bit search).
    skip_dead: do not compute abandoned ops (`nn.cond`), instead of weighting them by 0.
  """
  features: int
  stride: int = 1
  partial_channels: int = 4
  primitives: Sequence[str] = tuple(space.PRIMITIVES)
  op_set: str = "darts"
  binary_activations: bool = False
  skip_dead: bool = False

  def setup(self):
    c = self.features // self.partial_channels
    self.ops = [SearchOp(name, c, self.stride, self.op_set, self.binary_activations)
                for name in self.primitives]

  def __call__(self, x: jax.Array, weights: jax.Array | None = None,
               index: jax.Array | None = None, alive: jax.Array | None = None,
               train: bool = False) -> jax.Array:
    """Mixed op (`weights` (num_ops,)) or single sampled op (`index`, int scalar)."""
    k = self.partial_channels
    c = x.shape[-1]
    x_sel, x_bypass = (x[..., : c // k], x[..., c // k:]) if k > 1 else (x, None)
    n = len(self.primitives)
    if self.is_initializing():
      # Run every op once so each owns its parameters, whatever the later mode.
      ys = [op(x_sel, train) for op in self.ops]
      y = sum(ys) if weights is None else sum(weights[i] * ys[i] for i in range(n))
    elif index is not None:
      branches = [lambda mdl, v, i=i: mdl.ops[i](v, train) for i in range(n)]
      y = nn.switch(jnp.asarray(index, jnp.int32), branches, self, x_sel)
    else:
      y = 0.0
      for i in range(n):
        if self.skip_dead and alive is not None:
          out_shape = jax.eval_shape(lambda v: v[:, ::self.stride, ::self.stride], x_sel).shape
          yi = nn.cond(alive[i], lambda mdl, v, i=i: mdl.ops[i](v, train),
                       lambda mdl, v: jnp.zeros(out_shape, v.dtype), self, x_sel)
        else:
          yi = self.ops[i](x_sel, train)
        y = y + weights[i].astype(yi.dtype) * yi
    if k == 1:
      return y
    if y.shape[1] != x.shape[1]:
      x_bypass = nn.max_pool(x_bypass, (2, 2), strides=(2, 2))
    return channel_shuffle(jnp.concatenate([y, x_bypass], axis=-1), k)


def _vmapped_init(edge: SearchEdge) -> Callable[[jax.Array, jax.Array], Any]:
  """`edge.init` (every op run once, unweighted) over a stack of keys and inputs."""
  return jax.vmap(lambda key, x: edge.init(key, x, None, None, None, False))


@functools.lru_cache(maxsize=None)
def _loop_init(edge: SearchEdge, length: int) -> Callable[[jax.Array, jax.Array], Any]:
  """`_vmapped_init` of `length` edges compiled once per edge definition and length (for eager
  initialisation)."""
  del length  # part of the cache key only: one compiled program per loop length
  return one_shot.jit_once(_vmapped_init(edge))


class SearchCell(nn.Module):
  """A DARTS search cell: preprocessing, `steps` nodes over mixed edges, concat output.

  With `scan_edges` (the default) the edges run as `lax.scan` loops over identical edges: one
  loop over all edges of a normal cell; in a reduction cell one over the stride-2 edges that
  read the cell inputs and one over those between nodes. The compiled program holds one or two
  edges per cell instead of all 14, so a supernet's training step compiles in a fraction of
  the time. Each loop's variables are stacked along a leading edge axis (`edge_layout`:
  `edges`, or `edges_from_inputs` and `edges_between_nodes`), one array per variable and loop;
  the unrolled form (`scan_edges=False`) keeps one entry `edge_<e>` per edge, and
  `edge_layout.stack` / `unstack` convert between the two. Each node sums its edges in the
  unrolled form's order, so both give the same values from the same (converted) variables.
  Parameters are drawn per edge by `_init_edges`.
  """
  features: int
  reduction: bool = False
  reduction_prev: bool = False
  steps: int = 4
  multiplier: int = 4
  partial_channels: int = 4
  primitives: Sequence[str] = tuple(space.PRIMITIVES)
  op_set: str = "darts"
  binary_activations: bool = False
  skip_dead: bool = False
  scan_edges: bool = True

  def _edge(self, stride: int, **kwargs: Any) -> SearchEdge:
    return SearchEdge(self.features, stride, self.partial_channels, tuple(self.primitives),
                      self.op_set, self.binary_activations, self.skip_dead, **kwargs)

  @nn.compact
  def __call__(self, s0: jax.Array, s1: jax.Array, weights: jax.Array,
               edge_weights: jax.Array | None, train: bool = False,
               index: jax.Array | None = None, alive: jax.Array | None = None) -> jax.Array:
    c = self.features
    if self.reduction_prev:
      s0 = space.FactorizedReduce(c, affine=False, name="preprocess0")(s0, train)
    else:
      s0 = space.ReLUConvBN(c, 1, 1, 0, affine=False, name="preprocess0")(s0, train)
    s1 = space.ReLUConvBN(c, 1, 1, 0, affine=False, name="preprocess1")(s1, train)
    if self.scan_edges:
      if self.is_initializing():
        nodes = self._init_edges(s0, s1)
      else:
        nodes = self._scanned_nodes(s0, s1, weights, edge_weights, train, index, alive)
      states = [s0, s1] + [nodes[i] for i in range(self.steps)]
      return jnp.concatenate(states[-self.multiplier:], axis=-1)
    states, offset = [s0, s1], 0
    for _ in range(self.steps):
      s = 0.0
      for j, h in enumerate(states):
        e = offset + j
        edge = self._edge(2 if self.reduction and j < 2 else 1, name=f"edge_{e}")
        y = edge(h, weights[e], None if index is None else index[e],
                 None if alive is None else alive[e], train)
        s = s + (y if edge_weights is None else edge_weights[e].astype(y.dtype) * y)
      offset += len(states)
      states.append(s)
    return jnp.concatenate(states[-self.multiplier:], axis=-1)

  def _init_edges(self, s0, s1) -> jax.Array:
    """Draws every edge's variables, stacked per loop, and returns zero node states.

    Edge e's variables are drawn by `edge.init` from the cell's key folded with e, on a 1-image
    crop of its input (parameter shapes depend on channels only), vectorised over the loop's
    edges: the initialisation program holds one edge per loop, like the step, instead of every
    (edge, op). Run eagerly, a loop draws with one compiled program per edge definition and
    loop length (`_loop_init`). The draws differ from the unrolled form's, which draws each
    edge along its module path; both are the same distributions.
    """
    stride = 2 if self.reduction else 1
    size = min(s1.shape[1], 4)
    key = self.make_rng("params")
    traced = isinstance(key, jax.core.Tracer)
    from_inputs, _ = edge_layout.edge_groups(self.steps)
    source = {e: src for e, src, _ in from_inputs}
    inputs = (s0[:1, :size, :size], s1[:1, :size, :size])
    node_crop = jnp.zeros_like(inputs[1][:, ::stride, ::stride])
    for name, edges in edge_layout.loops(self.steps, self.reduction):
      keys = jax.vmap(lambda e: jax.random.fold_in(key, e))(jnp.asarray(edges, jnp.uint32))
      crops = jnp.stack([inputs[source[e]] if e in source else node_crop for e in edges])
      edge = self._edge(stride if name != edge_layout.REDUCTION_LOOPS[1] else 1, parent=None)
      init = _vmapped_init(edge) if traced else _loop_init(edge, len(edges))
      for col, tree in init(keys, crops).items():
        self.put_variable(col, name, tree)
    node_shape = jax.eval_shape(lambda v: v[:, ::stride, ::stride], s1).shape
    return jnp.zeros((self.steps, *node_shape), s1.dtype)

  def _scanned_nodes(self, s0, s1, weights, edge_weights, train, index, alive) -> jax.Array:
    """The `steps` node states (steps, N, H', W', C): a normal cell's edges in one loop, a
    reduction cell's in two (the stride-2 edges from the cell inputs, then those between
    nodes), each edge in edge order so every node is complete before an edge reads it."""
    variables = self.variables
    collections = [col for col in ("params", "batch_stats") if col in variables]
    update_stats = train and self.is_mutable_collection("batch_stats") and (
        "batch_stats" in collections)
    from_inputs, between_nodes = edge_layout.edge_groups(self.steps)

    def run(name, group, stride, sources, buffer):
      """Adds each edge of loop `name`, `group` (e, src, dst), into buffer[dst]; reads
      sources[src], or buffer[src] when `sources` is None."""
      edges = [e for e, _, _ in group]
      per_edge = {
          "vars": {col: variables[col][name] for col in collections if name in variables[col]},
          "src": jnp.asarray([src for _, src, _ in group], jnp.int32),
          "dst": jnp.asarray([dst for _, _, dst in group], jnp.int32),
          "w": weights[jnp.asarray(edges)],
          "ew": None if edge_weights is None else edge_weights[jnp.asarray(edges)],
          "index": None if index is None else index[jnp.asarray(edges)],
          "alive": None if alive is None else alive[jnp.asarray(edges)],
      }
      edge_def = self._edge(stride, parent=None)

      def body(buffer, xs):
        x = (buffer if sources is None else sources)[xs["src"]]
        if update_stats:
          y, new_vars = edge_def.apply(xs["vars"], x, xs["w"], xs["index"], xs["alive"], train,
                                       mutable=["batch_stats"])
          stats = new_vars["batch_stats"]
        else:
          y, stats = edge_def.apply(xs["vars"], x, xs["w"], xs["index"], xs["alive"], train), None
        if xs["ew"] is not None:
          y = xs["ew"].astype(y.dtype) * y
        return buffer.at[xs["dst"]].add(y), stats

      buffer, stats = jax.lax.scan(body, buffer, per_edge)
      if update_stats:
        self.put_variable("batch_stats", name, stats)
      return buffer

    zeros = jnp.zeros((self.steps, *s1.shape), s1.dtype)
    if not self.reduction:
      # Every state has the same shape: one loop over all edges, reading and writing one
      # buffer of [s0, s1, node_0, ...] (node m at 2 + m).
      group = [(e, src if e in {f for f, _, _ in from_inputs} else src + 2, dst + 2)
               for e, src, dst in sorted(from_inputs + between_nodes)]
      return run(edge_layout.NORMAL_LOOP, group, 1, None,
                 jnp.concatenate([s0[None], s1[None], zeros]))[2:]
    # Reduction cell: the stride-2 edges read the cell inputs, the others the nodes.
    nodes = jnp.zeros((self.steps, *jax.eval_shape(lambda v: v[:, ::2, ::2], s1).shape),
                      s1.dtype)
    nodes = run(edge_layout.REDUCTION_LOOPS[0], from_inputs, 2, jnp.stack([s0, s1]), nodes)
    if not between_nodes:
      return nodes
    return run(edge_layout.REDUCTION_LOOPS[1], between_nodes, 1, None, nodes)


class ArchParams(nn.Module):
  """The architecture parameters (own subtree): alphas (and betas) per cell type."""
  num_edges: int
  num_ops: int
  edge_norm: bool = True
  init_scale: float = 1e-3

  @nn.compact
  def __call__(self) -> dict[str, jax.Array]:
    init = nn.initializers.normal(self.init_scale)
    out = {"alphas_normal": self.param("alphas_normal", init, (self.num_edges, self.num_ops)),
           "alphas_reduce": self.param("alphas_reduce", init, (self.num_edges, self.num_ops))}
    if self.edge_norm:
      out["betas_normal"] = self.param("betas_normal", init, (self.num_edges,))
      out["betas_reduce"] = self.param("betas_reduce", init, (self.num_edges,))
    return out


def op_weights(alphas: jax.Array, alive: jax.Array | None = None) -> jax.Array:
  """softmax over ops of alphas, restricted to the alive ops (dead ops get weight 0)."""
  if alive is not None:
    alphas = jnp.where(alive, alphas, jnp.asarray(_NEG, alphas.dtype))
  return jax.nn.softmax(alphas, axis=-1)


class SearchNetwork(nn.Module):
  """The (PC-)DARTS search network.

  Attributes:
    num_classes: classifier outputs.
    init_channels: C (16 in DARTS / PC-DARTS search).
    layers: number of cells (8 in the search).
    steps: intermediate nodes per cell (4).
    multiplier: states concatenated into the cell output (4).
    stem_multiplier: stem channels = stem_multiplier * C (3).
    partial_channels: PC-DARTS K (4); 1 gives DARTS.
    edge_norm: PC-DARTS edge normalisation (betas).
    primitives: candidate op names (alpha's column order).
    op_set: "darts" (float ops) or "binary" (XNOR-binarized conv ops, BNAS).
    binary_activations: with op_set "binary", binarize activations too (1-bit BNAS).
    skip_dead: skip computing abandoned ops (see module docstring).
    scan_edges: run each cell's edges as loops over identical edges (`SearchCell`); False
      unrolls every edge into the program (same values and parameters).
  """
  num_classes: int = 10
  init_channels: int = 16
  layers: int = 8
  steps: int = 4
  multiplier: int = 4
  stem_multiplier: int = 3
  partial_channels: int = 4
  edge_norm: bool = True
  primitives: Sequence[str] = tuple(space.PRIMITIVES)
  op_set: str = "darts"
  binary_activations: bool = False
  skip_dead: bool = False
  scan_edges: bool = True

  def reduction_layers(self) -> tuple[int, ...]:
    return (self.layers // 3, 2 * self.layers // 3)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, *, alive: jax.Array | None = None,
               op_index: jax.Array | None = None) -> jax.Array:
    """Logits for NHWC images.

    Args:
      x: (N, H, W, C_in) images.
      train: BN batch statistics (and their update when `batch_stats` is mutable).
      alive: optional bool (2, num_edges, num_ops) alive-op masks for [normal, reduce].
      op_index: optional int (2, num_edges): run only this op on every edge (sampled path).
    """
    ne = num_edges(self.steps)
    arch = ArchParams(ne, len(self.primitives), self.edge_norm, name=ARCH)()
    if alive is not None:
      alive = jnp.asarray(alive, bool)
    w_normal = op_weights(arch["alphas_normal"], None if alive is None else alive[0])
    w_reduce = op_weights(arch["alphas_reduce"], None if alive is None else alive[1])
    if self.edge_norm:
      e_normal = edge_normalization(arch["betas_normal"], self.steps)
      e_reduce = edge_normalization(arch["betas_reduce"], self.steps)
    else:
      e_normal = e_reduce = None

    c = self.init_channels
    s = conv_ops.Conv(self.stem_multiplier * c, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                      kernel_init=space.torch_conv_init, name="stem_conv")(x)
    s = space.batch_norm(train, True, name="stem_bn")(s)
    s0 = s1 = s
    reduction_prev = False
    for i in range(self.layers):
      reduction = i in self.reduction_layers()
      if reduction:
        c *= 2
      t = 1 if reduction else 0
      cell = SearchCell(c, reduction, reduction_prev, self.steps, self.multiplier,
                        self.partial_channels, tuple(self.primitives), self.op_set,
                        self.binary_activations, self.skip_dead, self.scan_edges,
                        name=f"cell_{i}")
      out = cell(s0, s1, w_reduce if reduction else w_normal,
                 e_reduce if reduction else e_normal, train,
                 None if op_index is None else op_index[t],
                 None if alive is None else alive[t])
      s0, s1 = s1, out
      reduction_prev = reduction
    y = jnp.mean(s1, axis=(1, 2))
    return nn.Dense(self.num_classes, name="classifier")(y)


def split_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
  """(network weights, architecture parameters) from the full parameter tree."""
  weights = {k: v for k, v in params.items() if k != ARCH}
  return weights, params[ARCH]


def merge_params(weights: dict[str, Any], arch: dict[str, Any]) -> dict[str, Any]:
  """Inverse of `split_params`."""
  return {**weights, ARCH: arch}


def _parse_alive(weights: np.ndarray, alive: np.ndarray, steps: int,
                 primitives: Sequence[str]) -> list[genotype_lib.Edge]:
  """The DARTS top-2 rule restricted to alive ops (see `genotype_from_arch`).

  Args:
    weights: (num_edges, num_ops) final per-edge op weights (dead ops included, ignored here).
    alive: (num_edges, num_ops) bool.
    steps: intermediate nodes.
    primitives: op names.

  Returns:
    Two (op, input) edges per node, node by node.
  """
  is_none = np.array([name == "none" for name in primitives])
  real = alive & ~is_none  # alive ops that connect something
  gene, start = [], 0
  for i in range(steps):
    rows = slice(start, start + 2 + i)
    w, ok, live = weights[rows], real[rows], alive[rows]
    inputs = list(range(2 + i))
    # DARTS ranking (stable sort on the negated strength, ties to the lower input index), over the
    # edges that still have an alive op other than `none`.
    connected = [j for j in inputs if ok[j].any()]
    strength = {j: max(w[j][k] for k in np.flatnonzero(ok[j])) for j in connected}
    chosen = sorted(connected, key=lambda j, s=strength: -s[j])[:2]
    for j in chosen:
      cand = np.flatnonzero(ok[j])
      best = cand[0]
      for k in cand[1:]:
        if w[j][k] > w[j][best]:  # strict: ties keep the lower op index, as the DARTS rule
          best = k
      gene.append((primitives[best], int(j)))
    # Fewer than two connected edges: the search left the node's other inputs unconnected, so the
    # remaining slots are `none` edges (zero in the evaluation network), strongest `none` first.
    if len(chosen) < 2:
      unconnected = [j for j in inputs if j not in chosen]
      none_w = {j: max(w[j][k] for k in np.flatnonzero(live[j])) for j in unconnected}
      for j in sorted(unconnected, key=lambda j, s=none_w: -s[j])[:2 - len(chosen)]:
        gene.append(("none", int(j)))
    start += 2 + i
  return gene


def genotype_from_arch(arch: dict[str, Any], alive: Any = None, steps: int = 4,
                       primitives: Sequence[str] = tuple(space.PRIMITIVES),
                       multiplier: int = 4) -> genotype_lib.Genotype:
  """The (PC-)DARTS genotype of architecture parameters; with `alive`, only alive ops appear.

  Without `alive` this is `genotype.derive_genotype` (DARTS / PC-DARTS rule). With `alive`
  (operation-space reduction, BNAS arXiv 1911.10862 Sec. "Performance-based search": the search
  ends with one op per edge and the cell keeps the 2 strongest incoming edges per node), the
  rule runs over the alive ops only:

  * op weights are softmax(alpha) over the alive ops (the mixing weights of the final supernet),
    times the PC-DARTS edge weight softmax(beta) per node when betas are present;
  * an edge is connected when an op other than `none` is alive on it; per node the 2 connected
    edges with the largest alive non-`none` weight are kept (ties to the lower input index) and
    each takes its strongest alive non-`none` op (ties to the lower op index);
  * an edge whose only survivor is `none` was judged "no connection" by the search (`none` is
    the zero op, DARTS arXiv 1806.09055 Sec. 2.1) and is never kept while a connected edge
    competes. A node with fewer than 2 connected edges fills its remaining slot(s) with
    ("none", j) edges (the strongest such edges, ties to the lower index): the cell keeps its
    2-edges-per-node form and the evaluation network builds them as zeros, so no op the search
    abandoned is ever retrained. `none` edges appear nowhere else.

  Args:
    arch: `params["arch"]` (alphas, optional betas).
    alive: optional bool (2, num_edges, num_ops) masks for [normal, reduce]; every edge needs at
      least one alive op.
    steps: intermediate nodes per cell.
    primitives: op names in alpha's column order.
    multiplier: number of last states concatenated into the cell output.

  Returns:
    The genotype, two (op, input) edges per node.

  Raises:
    ValueError: when `alive` has the wrong shape or an edge has no alive op.
  """
  b_n = arch.get("betas_normal")
  b_r = arch.get("betas_reduce")
  b_n = None if b_n is None else np.asarray(b_n)
  b_r = None if b_r is None else np.asarray(b_r)
  if alive is None:
    return genotype_lib.derive_genotype(
        np.asarray(arch["alphas_normal"], np.float64),
        np.asarray(arch["alphas_reduce"], np.float64), b_n, b_r, steps=steps,
        primitives=primitives, multiplier=multiplier)
  ne, k = num_edges(steps), len(primitives)
  alive = np.asarray(alive, bool)
  if alive.shape != (2, ne, k):
    raise ValueError(f"alive must have shape {(2, ne, k)} for {steps} steps and {k} ops, got "
                     f"{alive.shape}.")
  if not alive.any(-1).all():
    cell, edge = np.argwhere(~alive.any(-1))[0]
    raise ValueError(f"Edge {edge} of the {('normal', 'reduce')[cell]} cell has no alive op; "
                     "every edge keeps at least one.")
  # derive_genotype validates alphas, betas and multiplier and gives the concat; the edges are
  # derived again below over the alive ops.
  base = genotype_lib.derive_genotype(
      arch["alphas_normal"], arch["alphas_reduce"], b_n, b_r, steps=steps,
      primitives=primitives, multiplier=multiplier)
  # The same order-invariant float64 softmaxes as derive_genotype, so ties resolve identically.
  softmax = genotype_lib._softmax            # pylint: disable=protected-access
  node_softmax = genotype_lib._node_softmax  # pylint: disable=protected-access
  cells = []
  for t, (name, betas) in enumerate((("alphas_normal", b_n), ("alphas_reduce", b_r))):
    # Dead ops get exactly zero weight (exp(_NEG - max) underflows), as in the supernet.
    w = softmax(np.where(alive[t], np.asarray(arch[name], np.float64), _NEG))
    if betas is not None:
      w = w * node_softmax(np.asarray(betas, np.float64).reshape(-1), steps)[:, None]
    cells.append(_parse_alive(w, alive[t], steps, primitives))
  return base._replace(normal=cells[0], reduce=cells[1])
