"""ABanditNAS networks: single-input cells, the single-path search network and the evaluation net.

ABanditNAS (Chen et al., "Anti-Bandit Neural Architecture Search for Model Defense", arXiv
2008.00698, ECCV 2020). Structure follows the released evaluation code
(`bczhangbczhang/ABanditNAS`: `models/darts_cell_all.py`, `models/darts_cnn_bandit_all.py`,
`utils/genotypes_all.py`):

* A cell has ONE input (the previous cell's output), preprocessed by ReLU-1x1 conv-BN into B_0,
  and 4 nodes. In the search space node j sums one op over each of its predecessors,
  B_j = sum_{i<j} o^{(i,j)}(B_i): 10 edges per cell, 9 candidate ops (`ABANDIT_PRIMITIVES`, no
  `none`). The cell output concatenates B_1..B_4 (4C channels). In a reduction cell the edges
  that read B_0 have stride 2.
* The search network (`SearchNetwork`) runs, on every edge, the op whose index is given for that
  edge (a traced int32 array of shape (num_cells, 10)); `supernet.SampledOp` executes only that
  branch, so changing the sampled ops or abandoning arms never recompiles. Each (layer, edge, op)
  owns its weights (single-path one-shot weight sharing).
* A derived genotype keeps one (op, input) pair per node (`AbanditGenotype`, the official
  `Genotype_6` layout with fields a..f and a_concat..f_concat). The evaluation network
  (`AbanditNetwork`) stacks `layers` cells (10 for CIFAR-10, C = 48); with 6 distinct cells the
  order is a,a,b,b,c,d,d,e,f,f with reductions at layers // 3 and 2 * layers // 3 (cells 3 and 6),
  optional extra denoising blocks on the output of layers layers // 4, 2 * layers // 4,
  3 * layers // 4 (2, 5, 7; the official `mannul` flag, on for ABANDIT_CIFAR_1, off for _2), an
  auxiliary head after layer 2 * layers // 3, and input normalisation inside the model (inputs in
  [0, 1]). All batch norms use momentum 0.1 and epsilon 1e-3 (`--bn_momentum 0.1 --bn_eps 1e-3`).

Example:
  >>> import jax, jax.numpy as jnp
  >>> net = AbanditNetwork(ABANDIT_CIFAR_1, C=8, layers=10, auxiliary=True)
  >>> v = net.init(jax.random.key(0), jnp.zeros((2, 32, 32, 3)))
  >>> logits, aux = net.apply(v, jnp.zeros((2, 32, 32, 3)))   # aux is None outside training
"""
from __future__ import annotations

import json
import math
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress.nas import abandit_edge_loops, eval_network, robust_ops, space, supernet
from jaxcompress.ops import conv as conv_ops

Edge = tuple[str, int]

CIFAR_MEAN = (0.49139968, 0.48215827, 0.44653124)  # attacks/advtrain.py `meanstd_dataset`
CIFAR_STD = (0.24703233, 0.24348505, 0.26158768)
MNIST_MEAN = (0.13066051707548254,)
MNIST_STD = (0.30810780244715075,)

STEPS = 4  # nodes per cell
CELL_NAMES = "abcdefghijklmnopqrstuvwxyz"


def num_edges(steps: int = STEPS) -> int:
  """Edges of a single-input cell: node j (1..steps) reads B_0..B_{j-1}; 10 for 4 nodes."""
  return steps * (steps + 1) // 2


def edge_list(steps: int = STEPS) -> list[tuple[int, int]]:
  """(input i, node j) of every edge, node by node, inputs increasing: (0,1),(0,2),(1,2),..."""
  return [(i, j) for j in range(1, steps + 1) for i in range(j)]


class AbanditGenotype(NamedTuple):
  """One (op_name, input_index) edge per node for each distinct cell.

  `cells[k]` lists the 4 nodes of cell k (index 0 = the preprocessed cell input B_0, index j = node
  j); `concats[k]` the states concatenated into the output (official: range(1, 5)). The official
  `Genotype_6(a=..., a_concat=..., ..., f=..., f_concat=...)` is `cells = (a, b, c, d, e, f)`.
  """
  cells: tuple[tuple[Edge, ...], ...]
  concats: tuple[tuple[int, ...], ...]

  @property
  def num_cells(self) -> int:
    return len(self.cells)


def make_genotype(cells: Sequence[Sequence[Edge]],
                  concats: Sequence[Sequence[int]] | None = None) -> AbanditGenotype:
  """Builds a hashable genotype (tuples) from lists; default concat = all nodes 1..steps."""
  cells_t = tuple(tuple((str(op), int(j)) for op, j in cell) for cell in cells)
  if concats is None:
    concats = [range(1, len(c) + 1) for c in cells_t]
  return AbanditGenotype(cells_t, tuple(tuple(int(i) for i in c) for c in concats))


def genotype_to_dict(genotype: AbanditGenotype) -> dict[str, list]:
  """The official field layout: {"a": [[op, idx], ...], "a_concat": [1, 2, 3, 4], "b": ...}."""
  out: dict[str, list] = {}
  for k, (cell, concat) in enumerate(zip(genotype.cells, genotype.concats)):
    name = CELL_NAMES[k]
    out[name] = [[op, int(j)] for op, j in cell]
    out[name + "_concat"] = [int(c) for c in concat]
  return out


def genotype_from_dict(d: dict[str, Any]) -> AbanditGenotype:
  """Inverse of `genotype_to_dict`; also accepts the official nested [[(op, idx)], ...] nodes."""
  cells, concats = [], []
  for name in CELL_NAMES:
    if name not in d:
      break
    nodes = []
    for node in d[name]:
      if len(node) == 1 and isinstance(node[0], (list, tuple)):  # [[('conv_3x3', 0)], ...]
        node = node[0]
      nodes.append((str(node[0]), int(node[1])))
    cells.append(nodes)
    concats.append(list(d.get(name + "_concat", range(1, len(nodes) + 1))))
  if not cells:
    raise ValueError(f"No cells 'a', 'b', ... in genotype dict with keys {sorted(d)}.")
  return make_genotype(cells, concats)


def genotype_to_json(genotype: AbanditGenotype) -> str:
  return json.dumps(genotype_to_dict(genotype))


def genotype_from_json(text: str) -> AbanditGenotype:
  return genotype_from_dict(json.loads(text))


# Released genotypes, transcribed from utils/genotypes_all.py (ABANDIT_CIFAR_1 is the paper's
# ABanditNAS-10 cell set; the README says ABANDIT_CIFAR_2 is a better structure searched later).
ABANDIT_CIFAR_1 = make_genotype([
    [("conv_3x3", 0), ("gab_filt_3x3", 1), ("sep_conv_3x3", 2), ("dtp_blok_3x3", 1)],
    [("avg_pool_3x3", 0), ("gab_filt_3x3", 0), ("sep_conv_5x5", 2), ("conv_3x3", 1)],
    [("conv_3x3", 0), ("max_pool_3x3", 0), ("conv_5x5", 0), ("sep_conv_5x5", 3)],
    [("dtp_blok_3x3", 0), ("sep_conv_5x5", 1), ("avg_pool_3x3", 2), ("conv_3x3", 3)],
    [("dtp_blok_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_3x3", 1), ("avg_pool_3x3", 3)],
    [("gab_filt_3x3", 0), ("conv_3x3", 0), ("dtp_blok_3x3", 1), ("avg_pool_3x3", 2)],
])
ABANDIT_CIFAR_2 = make_genotype([
    [("dtp_blok_3x3", 0), ("sep_conv_3x3", 0), ("conv_3x3", 1), ("sep_conv_3x3", 3)],
    [("conv_5x5", 0), ("gab_filt_3x3", 0), ("max_pool_3x3", 0), ("dtp_blok_3x3", 2)],
    [("sep_conv_3x3", 0), ("dtp_blok_3x3", 0), ("max_pool_3x3", 1), ("sep_conv_5x5", 3)],
    [("sep_conv_5x5", 0), ("dtp_blok_3x3", 0), ("gab_filt_3x3", 2), ("conv_3x3", 1)],
    [("sep_conv_5x5", 0), ("skip_connect", 1), ("sep_conv_5x5", 1), ("sep_conv_5x5", 1)],
    [("max_pool_3x3", 0), ("skip_connect", 0), ("sep_conv_5x5", 2), ("gab_filt_3x3", 0)],
])
# MNIST cells of the review version (`anonymous-paper/anonymous1789` utils/genotypes_all.py; the
# official spelling "MINIST" is kept). They use the DARTS-style `dil_conv_*` and `sep_conv_m_*`
# ops. Evaluated with C = 16, 6 layers; _MANNUAL_1 with the hand-placed denoising blocks.
ABANDIT_MINIST_NORMAL_1 = make_genotype([
    [("dil_conv_3x3", 0), ("dil_conv_3x3", 0), ("dil_conv_5x5", 2), ("avg_pool_3x3", 0)],
    [("skip_connect", 0), ("sep_conv_m_3x3", 0), ("sep_conv_m_5x5", 1), ("max_pool_3x3", 1)],
    [("sep_conv_m_3x3", 0), ("sep_conv_m_5x5", 0), ("skip_connect", 1), ("sep_conv_m_3x3", 2)],
    [("sep_conv_m_5x5", 0), ("dil_conv_5x5", 1), ("max_pool_3x3", 0), ("max_pool_3x3", 1)],
    [("max_pool_3x3", 0), ("dil_conv_3x3", 0), ("dil_conv_3x3", 0), ("sep_conv_m_5x5", 1)],
    [("dil_conv_3x3", 0), ("sep_conv_m_3x3", 1), ("dil_conv_5x5", 0), ("dil_conv_5x5", 1)],
])
ABANDIT_MINIST_NORMAL_MANNUAL_1 = make_genotype([
    [("skip_connect", 0), ("dil_conv_3x3", 1), ("max_pool_3x3", 2), ("sep_conv_m_3x3", 1)],
    [("avg_pool_3x3", 0), ("skip_connect", 1), ("avg_pool_3x3", 1), ("sep_conv_m_5x5", 2)],
    [("dil_conv_3x3", 0), ("max_pool_3x3", 0), ("sep_conv_m_5x5", 1), ("dil_conv_3x3", 2)],
    [("sep_conv_m_3x3", 0), ("sep_conv_m_3x3", 0), ("max_pool_3x3", 0), ("max_pool_3x3", 0)],
    [("avg_pool_3x3", 0), ("sep_conv_m_5x5", 0), ("dil_conv_3x3", 0), ("sep_conv_m_3x3", 1)],
    [("sep_conv_m_3x3", 0), ("sep_conv_m_5x5", 1), ("sep_conv_m_3x3", 0), ("avg_pool_3x3", 2)],
])
GENOTYPES: dict[str, AbanditGenotype] = {
    "ABANDIT_CIFAR_1": ABANDIT_CIFAR_1,
    "ABANDIT_CIFAR_2": ABANDIT_CIFAR_2,
    "ABANDIT_MINIST_NORMAL_1": ABANDIT_MINIST_NORMAL_1,
    "ABANDIT_MINIST_NORMAL_MANNUAL_1": ABANDIT_MINIST_NORMAL_MANNUAL_1,
}


def get_genotype(spec: str | dict | AbanditGenotype) -> AbanditGenotype:
  """A genotype from a released name, a JSON string / file path, a dict or a genotype."""
  if isinstance(spec, AbanditGenotype):
    return spec
  if isinstance(spec, dict):
    return genotype_from_dict(spec)
  if spec in GENOTYPES:
    return GENOTYPES[spec]
  text = spec
  if not spec.lstrip().startswith("{"):
    try:
      with open(spec, encoding="utf-8") as f:
        text = f.read()
    except OSError:
      raise ValueError(f"Unknown genotype {spec!r}: use one of {sorted(GENOTYPES)}, a JSON "
                       "string or the path of a JSON file (e.g. a search's final_report.json)."
                       ) from None
  d = json.loads(text)
  if "genotype" in d:  # a search's final_report.json
    d = d["genotype"]
  return genotype_from_dict(d)


def reduction_layers(layers: int) -> tuple[int, int]:
  """Layers whose cells halve the resolution and double C: layers // 3 and 2 * layers // 3."""
  return layers // 3, 2 * layers // 3


def denoising_layers(layers: int) -> tuple[int, int, int]:
  """Layers followed by a hand-placed denoising block (`mannul`): 1/4, 2/4, 3/4 of the depth."""
  return layers // 4, 2 * layers // 4, 3 * layers // 4


def cell_index(i: int, layers: int, num_cells: int) -> int:
  """Which distinct cell layer i uses (official `NetworkCIFAR`): k = i when layers == num_cells,
  else the repeat rule giving a,a,b,b,c,d,d,e,f,f for 10 layers and 6 cells."""
  if num_cells == layers:
    return i
  if num_cells <= 2:
    return min(i * num_cells // layers, num_cells - 1)
  n_repeat = max((layers - 2) // (num_cells - 2), 1)
  if i <= layers // 3 + 1:
    k = i // n_repeat
  elif i <= 2 * layers // 3 + 1:
    k = (i + 1) // n_repeat
  else:
    k = (i + 2) // n_repeat
  return min(k, num_cells - 1)


class Normalize(nn.Module):
  """(x - mean) / std per channel inside the model (`attacks/advtrain.Normalize`)."""
  mean: Sequence[float] = CIFAR_MEAN
  std: Sequence[float] = CIFAR_STD

  def __call__(self, x: jax.Array) -> jax.Array:
    mean = jnp.asarray(self.mean, x.dtype)
    std = jnp.asarray(self.std, x.dtype)
    return (x - mean) / std


def _bn(train: bool, affine: bool = True, eps: float = robust_ops.ABANDIT_BN_EPS) -> nn.BatchNorm:
  return space.batch_norm(train, affine, eps)


class EvalCell(nn.Module):
  """A derived cell: one (op, input) per node, concat of `concat`, optional denoising block.

  Attributes:
    edges: (op_name, input_index) per node; input 0 is the preprocessed cell input.
    concat: states concatenated into the output.
    features: C of this cell (each node has C channels).
    reduction: ops reading input 0 have stride 2.
    denoising: append `DenoisingBlock(stride 1, "dotp")` on the concatenated output.
    use_drop_path: apply drop path (training only) to every non-identity op.
  """
  edges: Sequence[Edge]
  concat: Sequence[int]
  features: int
  reduction: bool = False
  denoising: bool = False
  use_drop_path: bool = False
  bn_epsilon: float = robust_ops.ABANDIT_BN_EPS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, drop_prob: Any = 0.0) -> jax.Array:
    c = self.features
    states = [space.ReLUConvBN(c, 1, 1, 0, True, self.bn_epsilon)(x, train)]
    for op_name, idx in self.edges:
      stride = 2 if self.reduction and idx < 1 else 1
      op = robust_ops.ABANDIT_OPS[op_name](c, stride, True)
      h = op(states[idx], train)
      if train and self.use_drop_path and not isinstance(op, space.Identity):
        h = eval_network.drop_path(h, drop_prob, self.make_rng("drop_path"))
      states.append(h)
    out = jnp.concatenate([states[i] for i in self.concat], axis=-1)
    if self.denoising:
      out = robust_ops.DenoisingBlock(1, "dotp", True, self.bn_epsilon)(out, train)
    return out


class _Stem(nn.Module):
  features: int
  bn_epsilon: float = robust_ops.ABANDIT_BN_EPS
  affine: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = conv_ops.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                      kernel_init=space.torch_conv_init)(x)
    return _bn(train, self.affine, self.bn_epsilon)(x)


class AbanditNetwork(nn.Module):
  """The evaluation network of a derived genotype (`NetworkCIFAR`; ABanditNAS-10 by default).

  Attributes:
    genotype: an `AbanditGenotype` (e.g. `ABANDIT_CIFAR_1`).
    C: initial channels (48 for CIFAR-10 ABanditNAS-10, 16 for MNIST).
    num_classes: classes.
    layers: number of cells (10).
    auxiliary: compute the auxiliary head in training (needs an 8x8 map at layer 2*layers//3).
    manual_denoising: the official `mannul`: extra denoising blocks at layers//4, 2*layers//4,
      3*layers//4 (True for ABANDIT_CIFAR_1, False for ABANDIT_CIFAR_2 / `--no_mannul`).
    mean, std: input normalisation inside the model (inputs in [0, 1]).
    drop_path_prob: maximum drop-path rate; 0 disables drop path (then no "drop_path" rng is
      needed). The rate used is the `drop_prob` call argument (traced; default this value).
    dropout: dropout before the classifier (needs a "dropout" rng in training when > 0).
    stem_multiplier: the stem has stem_multiplier * C channels.
    bn_epsilon: epsilon of every batch norm.

  Returns (from `__call__`): (logits, logits_aux); logits_aux is None unless `train` and
  `auxiliary`.
  """
  genotype: AbanditGenotype = ABANDIT_CIFAR_1
  C: int = 48
  num_classes: int = 10
  layers: int = 10
  auxiliary: bool = True
  manual_denoising: bool = True
  mean: Sequence[float] = CIFAR_MEAN
  std: Sequence[float] = CIFAR_STD
  drop_path_prob: float = 0.0
  dropout: float = 0.0
  stem_multiplier: int = 3
  bn_epsilon: float = robust_ops.ABANDIT_BN_EPS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False,
               drop_prob: Any = None) -> tuple[jax.Array, jax.Array | None]:
    drop_prob = self.drop_path_prob if drop_prob is None else drop_prob
    x = Normalize(self.mean, self.std)(x)
    s = _Stem(self.stem_multiplier * self.C, self.bn_epsilon)(x, train)
    c_curr = self.C
    reductions = reduction_layers(self.layers)
    denoise_at = denoising_layers(self.layers) if self.manual_denoising else ()
    n = self.genotype.num_cells
    logits_aux = None
    for i in range(self.layers):
      reduction = i in reductions
      if reduction:
        c_curr *= 2
      k = cell_index(i, self.layers, n)
      s = EvalCell(self.genotype.cells[k], self.genotype.concats[k], c_curr, reduction,
                   i in denoise_at, self.drop_path_prob > 0, self.bn_epsilon,
                   name=f"cell_{i}")(s, train, drop_prob)
      if i == 2 * self.layers // 3 and self.auxiliary and (train or self.is_initializing()):
        aux = eval_network.AuxiliaryHead(self.num_classes, self.bn_epsilon,
                                         name="auxiliary_head")(s, train)
        logits_aux = aux if train else None
    out = jnp.mean(s, axis=(1, 2))
    if self.dropout > 0:
      out = nn.Dropout(self.dropout, deterministic=not train)(out)
    logits = nn.Dense(self.num_classes, name="classifier")(out)
    return logits, logits_aux


class SearchCell(nn.Module):
  """A search cell: 4 nodes, 10 edges, each running the op whose index is given (`SampledOp`).

  With `scan_edges` (the default) the edges run as `lax.scan` loops over identical edges, their
  variables stacked per loop (`abandit_edge_loops`); unrolled (`scan_edges=False`) every edge is
  its own module `edge_<i>_<j>`. Same values from the same (converted) variables.

  Attributes:
    features: C of this cell.
    reduction: edges reading B_0 have stride 2.
    primitives: candidate op names (columns of the bandit statistics).
    affine: BN scale/bias in the ops and the preprocessing (False as DARTS search networks).
    steps: nodes per cell.
    scan_edges: run the edges as loops.
  """
  features: int
  reduction: bool = False
  primitives: Sequence[str] = tuple(robust_ops.ABANDIT_PRIMITIVES)
  affine: bool = False
  steps: int = STEPS
  bn_epsilon: float = robust_ops.ABANDIT_BN_EPS
  scan_edges: bool = True

  def _op(self, stride: int) -> supernet.SampledOp:
    return supernet.SampledOp(self.features, stride, tuple(self.primitives), self.affine,
                              "abandit", parent=None)

  @nn.compact
  def __call__(self, x: jax.Array, ops: jax.Array, train: bool = False) -> jax.Array:
    """`ops`: int32 (num_edges,) op index per edge, in `edge_list` order (may be traced)."""
    c = self.features
    states = [space.ReLUConvBN(c, 1, 1, 0, self.affine, self.bn_epsilon)(x, train)]
    if self.scan_edges:
      edges = edge_list(self.steps)
      if self.is_initializing():
        nodes = abandit_edge_loops.init_edges(self, self._op, states[0], edges)
      else:
        nodes = abandit_edge_loops.scanned_nodes(self, self._op, states[0], ops, train, edges)
      return jnp.concatenate([nodes[k] for k in range(self.steps)], axis=-1)
    e = 0
    for j in range(1, self.steps + 1):
      total = 0.0
      for i in range(j):
        stride = 2 if self.reduction and i < 1 else 1
        op = supernet.SampledOp(c, stride, tuple(self.primitives), self.affine, "abandit",
                                name=f"edge_{i}_{j}")
        total = total + op(states[i], ops[e], train)
        e += 1
      states.append(total)
    return jnp.concatenate(states[1:], axis=-1)


class SearchNetwork(nn.Module):
  """The single-path search network: `layers` search cells over `num_cells` distinct cells.

  Attributes:
    C: initial channels.
    num_classes: classes.
    layers: cells in the network (6 = one per distinct cell in the paper's proxy).
    num_cells: distinct cells whose op indices are searched (6 in the paper).
    primitives: candidate ops.
    affine: BN scale/bias in ops and preprocessing.
    mean, std: input normalisation inside the model.
    stem_multiplier: stem channels = stem_multiplier * C.

  `__call__(x, ops, train)` takes `ops` int32 of shape (num_cells, num_edges()) and returns logits.
  """
  C: int = 16
  num_classes: int = 10
  layers: int = 6
  num_cells: int = 6
  primitives: Sequence[str] = tuple(robust_ops.ABANDIT_PRIMITIVES)
  affine: bool = False
  mean: Sequence[float] = CIFAR_MEAN
  std: Sequence[float] = CIFAR_STD
  stem_multiplier: int = 3
  bn_epsilon: float = robust_ops.ABANDIT_BN_EPS
  scan_edges: bool = True

  def cell_loops(self) -> Any:
    """The loops' variable layout for `edge_layout.stack` / `unstack` (`cell_loops=`)."""
    return abandit_edge_loops.cell_loops(edge_list(), reduction_layers(self.layers))

  @nn.compact
  def __call__(self, x: jax.Array, ops: jax.Array, train: bool = False) -> jax.Array:
    ops = jnp.asarray(ops, jnp.int32)
    x = Normalize(self.mean, self.std)(x)
    s = _Stem(self.stem_multiplier * self.C, self.bn_epsilon)(x, train)
    c_curr = self.C
    reductions = reduction_layers(self.layers)
    for i in range(self.layers):
      reduction = i in reductions
      if reduction:
        c_curr *= 2
      k = cell_index(i, self.layers, self.num_cells)
      s = SearchCell(c_curr, reduction, tuple(self.primitives), self.affine,
                     bn_epsilon=self.bn_epsilon, scan_edges=self.scan_edges,
                     name=f"cell_{i}")(s, ops[k], train)
    return nn.Dense(self.num_classes, name="classifier")(jnp.mean(s, axis=(1, 2)))


def derive_genotype(mean: Any, alive: Any, primitives: Sequence[str] = tuple(
    robust_ops.ABANDIT_PRIMITIVES), steps: int = STEPS) -> AbanditGenotype:
  """The discrete genotype from the bandit statistics of a finished (or partial) search.

  On every edge the surviving op is the alive arm with the largest performance m (the only alive
  arm once the search is over; ties to the lower op index). Each node keeps a single
  (op, input) pair: the incoming edge whose surviving op has the largest m, ties to the lower
  input index. Neither the paper nor its release says how a node's edge is chosen; this is
  the natural rule (unconfirmed).

  Args:
    mean: (num_cells, num_edges, num_ops) arm performance.
    alive: same shape, bool.
    primitives: op names of the last axis.
    steps: nodes per cell.

  Returns:
    `AbanditGenotype` with concat 1..steps for every cell.
  """
  mean = np.asarray(mean, np.float64)
  alive = np.asarray(alive, bool)
  if mean.shape != alive.shape or mean.shape[1:] != (num_edges(steps), len(primitives)):
    raise ValueError(f"mean/alive must have shape (cells, {num_edges(steps)}, "
                     f"{len(primitives)}), got {mean.shape} and {alive.shape}.")
  masked = np.where(alive, mean, -np.inf)
  best = masked.argmax(-1)                       # first max: ties -> lower op index
  best_m = np.take_along_axis(masked, best[..., None], -1)[..., 0]
  edges = edge_list(steps)
  cells = []
  for k in range(mean.shape[0]):
    nodes = []
    for j in range(1, steps + 1):
      incoming = [e for e, (_, jj) in enumerate(edges) if jj == j]
      e_best = incoming[0]
      for e in incoming[1:]:
        if best_m[k, e] > best_m[k, e_best]:     # strict: ties keep the lower input index
          e_best = e
      nodes.append((primitives[int(best[k, e_best])], edges[e_best][0]))
    cells.append(nodes)
  return make_genotype(cells)


def reinit_he_fout(params: Any, rng: jax.Array) -> Any:
  """The official `init_model('he_fout')`: conv kernels ~ N(0, 2 / (kh kw C_out)); linear
  weights ~ U(+-1/sqrt(fan_in)) with zero bias. Batch norms and Gabor parameters are kept (the
  zero-initialised BN of the denoising blocks stays zero).

  All kernels come from one standard-normal vector and all linear weights from one uniform
  vector, cut into the leaves in the tree's flatten order and scaled per leaf: two random
  programs whatever the network's size (a draw per leaf made a supernet's jitted initialisation
  hundreds of hash computations). The same tree therefore gets the same weights, jitted or not.

  Args:
    params: a parameter tree (conv kernels HWIO, linear kernels (fan_in, fan_out)).
    rng: the key of the redraw.

  Returns:
    `params` with its conv and linear kernels redrawn and linear biases zeroed.
  """
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  names = [tuple(getattr(p, "key", str(p)) for p in path) for path, _ in leaves]
  values = [leaf for _, leaf in leaves]
  convs = [i for i, v in enumerate(values) if names[i][-1] == "kernel" and v.ndim == 4]
  linears = [i for i, v in enumerate(values) if names[i][-1] == "kernel" and v.ndim == 2]
  linear_modules = {names[i][:-1] for i in linears}
  rng_conv, rng_linear = jax.random.split(rng)

  def cut(indices: list[int], flat: jax.Array, scale: Any) -> None:
    offset = 0
    for i in indices:
      size = math.prod(values[i].shape)
      draw = flat[offset:offset + size].reshape(values[i].shape)
      values[i] = (draw * scale(values[i].shape)).astype(values[i].dtype)
      offset += size

  total = lambda indices: sum(math.prod(values[i].shape) for i in indices)  # noqa: E731
  if convs:
    cut(convs, jax.random.normal(rng_conv, (total(convs),), jnp.float32),
        lambda shape: math.sqrt(2.0 / (shape[0] * shape[1] * shape[3])))
  if linears:
    cut(linears, jax.random.uniform(rng_linear, (total(linears),), jnp.float32, -1.0, 1.0),
        lambda shape: 1.0 / math.sqrt(shape[0]))
  for i, name in enumerate(names):
    if name[-1] == "bias" and name[:-1] in linear_modules:
      values[i] = jnp.zeros_like(values[i])
  return jax.tree.unflatten(treedef, values)
