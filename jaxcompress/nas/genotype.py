"""Discrete cell genotypes: derivation from architecture weights, serialisation, published cells.

DARTS (arXiv 1806.09055, Sec. 2.4) derives a discrete cell by keeping, for every intermediate node,
the 2 strongest incoming edges, an edge's strength being its largest non-`none` op weight, and by
taking on each kept edge the strongest non-`none` op. PC-DARTS (arXiv 1907.05737, Sec. 3.3)
multiplies the op weights of edge (i, j) by the edge-normalised beta (softmax over the incoming
edges of node j) before applying the same rule. This module reproduces `Network.genotype()` of
`quark0/darts` and `yuhuixu1993/PC-DARTS` exactly: Python's stable sort on the negated strength
(ties go to the lower input index) and a strict `>` argmax (ties go to the lower op index).

Example:
  >>> import numpy as np
  >>> g = derive_genotype(np.zeros((14, 8)), np.zeros((14, 8)))
  >>> g.normal[:2]
  [('max_pool_3x3', 0), ('max_pool_3x3', 1)]
"""
from __future__ import annotations

import json
from typing import Any, NamedTuple, Sequence

import numpy as np

from jaxcompress.nas.space import PRIMITIVES

Edge = tuple[str, int]


class Concat(list):
  """The list of concatenated states; compares equal to an equal list, tuple or `range`.

  The official DARTS code derives `range(2, 6)` while its published genotypes store lists;
  comparing with either form gives the same answer here.
  """

  def __eq__(self, other: Any) -> bool:
    if isinstance(other, (list, tuple, range)):
      return list(self) == list(other)
    return NotImplemented

  def __ne__(self, other: Any) -> bool:
    eq = self.__eq__(other)
    return eq if eq is NotImplemented else not eq

  __hash__ = None  # mutable, like list


class Genotype(NamedTuple):
  """A DARTS cell pair: per node two (op_name, input_index) edges, listed node by node.

  Input indices 0 and 1 are the cell inputs c_{k-2}, c_{k-1}; index 2 + i is node i. The concat
  fields list the states concatenated into the cell output.
  """
  normal: list[Edge]
  normal_concat: list[int]
  reduce: list[Edge]
  reduce_concat: list[int]


def _softmax(a: np.ndarray) -> np.ndarray:
  """Max-shifted softmax over the last axis in float64, invariant to the order of the entries.

  The denominator is summed over the sorted exponentials, so rows that hold the same values in a
  different order get bit-identical weights: a mathematical tie stays a tie and is resolved by
  the index rule (torch's float32 kernel may instead break it by rounding noise).
  """
  a = np.asarray(a, dtype=np.float64)
  e = np.exp(a - a.max(axis=-1, keepdims=True))
  return e / np.sort(e, axis=-1).sum(axis=-1, keepdims=True)


def _node_softmax(betas: np.ndarray, steps: int) -> np.ndarray:
  parts, start = [], 0
  for i in range(steps):
    parts.append(_softmax(betas[start:start + 2 + i]))
    start += 2 + i
  return np.concatenate(parts)


def _parse(weights: np.ndarray, steps: int, primitives: Sequence[str]) -> list[Edge]:
  """The DARTS rule on final per-edge op weights of shape (num_edges, num_ops)."""
  excluded = [k for k, name in enumerate(primitives) if name == "none"]
  candidates = [k for k in range(len(primitives)) if k not in excluded]
  gene, start = [], 0
  for i in range(steps):
    w = weights[start:start + 2 + i]
    strength = [max(w[j][k] for k in candidates) for j in range(2 + i)]
    # sorted() is stable: equal strengths keep increasing input order (ties -> lower index).
    edges = sorted(range(2 + i), key=lambda j, s=strength: -s[j])[:2]
    for j in edges:
      best = candidates[0]
      for k in candidates[1:]:
        if w[j][k] > w[j][best]:  # strict: ties keep the lower op index
          best = k
      gene.append((primitives[best], int(j)))
    start += 2 + i
  return gene


def derive_genotype(alphas_normal: Any, alphas_reduce: Any, betas_normal: Any = None,
                    betas_reduce: Any = None, steps: int = 4,
                    primitives: Sequence[str] = tuple(PRIMITIVES),
                    multiplier: int | None = None) -> Genotype:
  """Derives the discrete genotype from architecture parameters (DARTS / PC-DARTS rule).

  Args:
    alphas_normal: raw op logits of the normal cell, (num_edges, num_ops), num_edges =
      sum_{i<steps} (2 + i) (14 for 4 steps); softmaxed over ops here.
    alphas_reduce: same for the reduction cell.
    betas_normal: optional raw PC-DARTS edge logits (num_edges,); softmaxed per node (over the
      2 + i incoming edges of node i) and multiplied into the op weights.
    betas_reduce: same for the reduction cell (both or neither betas).
    steps: intermediate nodes per cell.
    primitives: op names in alpha's column order; `none` is never ranked or chosen.
    multiplier: number of last states concatenated; default `steps` (every intermediate node,
      as DARTS' `range(2, steps + 2)`, 4 for 4 steps): concat = [2 + steps - multiplier, ...,
      steps + 1].

  Returns:
    `Genotype` with 2 edges per node, node by node, within a node by decreasing strength.

  Raises:
    ValueError: on shapes that do not match `steps` and `primitives`.
  """
  num_edges = sum(2 + i for i in range(steps))

  def weights(alphas, betas):
    a = np.asarray(alphas)
    if a.shape != (num_edges, len(primitives)):
      raise ValueError(f"alphas must have shape {(num_edges, len(primitives))} for {steps} "
                       f"steps, got {a.shape}.")
    w = _softmax(a)
    if betas is not None:
      b = np.asarray(betas, dtype=np.float64).reshape(-1)
      if b.shape != (num_edges,):
        raise ValueError(f"betas must have shape {(num_edges,)}, got {b.shape}.")
      w = w * _node_softmax(b, steps)[:, None]
    return w

  if (betas_normal is None) != (betas_reduce is None):
    raise ValueError("Pass both betas_normal and betas_reduce, or neither.")
  multiplier = steps if multiplier is None else multiplier
  if not 1 <= multiplier <= steps:
    raise ValueError(f"multiplier must be in [1, steps={steps}], got {multiplier}.")
  concat = Concat(range(2 + steps - multiplier, steps + 2))
  return Genotype(
      normal=_parse(weights(alphas_normal, betas_normal), steps, primitives),
      normal_concat=concat,
      reduce=_parse(weights(alphas_reduce, betas_reduce), steps, primitives),
      reduce_concat=Concat(concat))


def to_json(genotype: Genotype) -> str:
  """Serialises a genotype to a JSON object string (edges as [op, index] pairs)."""
  return json.dumps({
      "normal": [[op, int(j)] for op, j in genotype.normal],
      "normal_concat": [int(c) for c in genotype.normal_concat],
      "reduce": [[op, int(j)] for op, j in genotype.reduce],
      "reduce_concat": [int(c) for c in genotype.reduce_concat],
  })


def from_json(text: str) -> Genotype:
  """Inverse of `to_json`: edges come back as (op_name, index) tuples."""
  d = json.loads(text)
  return Genotype(
      normal=[(str(op), int(j)) for op, j in d["normal"]],
      normal_concat=Concat(int(c) for c in d["normal_concat"]),
      reduce=[(str(op), int(j)) for op, j in d["reduce"]],
      reduce_concat=Concat(int(c) for c in d["reduce_concat"]))


def _g(normal, reduce, concat=(2, 3, 4, 5)) -> Genotype:
  return Genotype(list(normal), Concat(concat), list(reduce), Concat(concat))


# Published cells, transcribed from quark0/darts cnn/genotypes.py and yuhuixu1993/PC-DARTS
# genotypes.py (the official PC-DARTS concat is range(2, 6); stored here as a list).
DARTS_V1 = _g(
    [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
     ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
    [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
     ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)])
DARTS_V2 = _g(
    [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
     ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
     ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)])
DARTS = DARTS_V2
PC_DARTS_cifar = _g(  # pylint: disable=invalid-name
    [("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
     ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
    [("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
     ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)])
PC_DARTS_image = _g(  # pylint: disable=invalid-name
    [("skip_connect", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 0), ("skip_connect", 1),
     ("sep_conv_3x3", 1), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("dil_conv_5x5", 4)],
    [("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_5x5", 2), ("max_pool_3x3", 1),
     ("sep_conv_3x3", 2), ("sep_conv_3x3", 1), ("sep_conv_5x5", 0), ("sep_conv_3x3", 3)])
PCDARTS = PC_DARTS_cifar
PC_DARTS = PC_DARTS_cifar


def plot_cell(genotype_cell: Sequence[Edge], path: str, concat: Sequence[int] | None = None,
              title: str | None = None) -> bool:
  """Draws one cell (e.g. `genotype.normal`) as a DAG and writes a PNG to `path`.

  Uses matplotlib when it is installed (the DARTS `visualize.py` uses graphviz instead).

  Args:
    genotype_cell: edges (op_name, input_index), two per node.
    path: output file.
    concat: states joined into the output (default: all intermediate nodes).
    title: optional figure title.

  Returns:
    True when the file was written, False when matplotlib is unavailable.
  """
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  steps = len(genotype_cell) // 2
  concat = list(range(2, 2 + steps)) if concat is None else list(concat)
  names = ["c_{k-2}", "c_{k-1}"] + [str(i) for i in range(steps)] + ["c_{k}"]
  pos = {0: (0.0, 1.0), 1: (0.0, -1.0), steps + 2: (steps + 1.0, 0.0)}
  for i in range(steps):
    pos[2 + i] = (1.0 + i, 1.5 - 3.0 * i / max(steps - 1, 1))
  fig, ax = plt.subplots(figsize=(2.2 * (steps + 2), 4))
  for n, (op, j) in enumerate(genotype_cell):
    src, dst = pos[j], pos[2 + n // 2]
    ax.annotate("", dst, src, arrowprops=dict(arrowstyle="->", color="gray"))
    ax.text((src[0] + dst[0]) / 2, (src[1] + dst[1]) / 2, op, fontsize=7, ha="center",
            color="darkblue")
  for c in concat:
    ax.annotate("", pos[steps + 2], pos[c], arrowprops=dict(arrowstyle="->", color="lightgray"))
  for k, (x, y) in pos.items():
    ax.text(x, y, f"${names[k]}$" if "_" in names[k] else names[k], ha="center", va="center",
            bbox=dict(boxstyle="round", fc="lightyellow" if 2 <= k < steps + 2 else "lightblue"))
  ax.set_xlim(-0.7, steps + 1.7)
  ax.set_ylim(-2.0, 2.0)
  ax.axis("off")
  if title:
    ax.set_title(title)
  fig.savefig(path, dpi=100, bbox_inches="tight")
  plt.close(fig)
  return True
