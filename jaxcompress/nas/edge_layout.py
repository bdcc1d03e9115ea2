"""Where a DARTS search cell's edge variables live: stacked per loop, or one entry per edge.

`search.SearchCell` runs its edges as `lax.scan` loops over identical edges and keeps each
loop's variables stacked along a leading edge axis, so the training step's optimizer, gradient
and batch-statistics work is one array per variable and loop instead of one per edge. A normal
cell has one loop, `edges`
(every edge, in edge order); a reduction cell two, `edges_from_inputs` (the stride-2 edges
reading the two cell inputs) and `edges_between_nodes`, each in the order of `edge_groups`.

The unrolled cell (`scan_edges=False`), and checkpoints written before the loops kept stacked
variables, hold one entry `edge_<e>` per edge. `stack` and `unstack` convert any tree that
contains the cells (parameters, batch statistics, optimizer states, a whole `TrainState`, or
their shapes), so either layout loads into the other; `cell_loops` describes other cells (the
ABanditNAS cell: `abandit_edge_loops.cell_loops`).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

NORMAL_LOOP = "edges"
REDUCTION_LOOPS = ("edges_from_inputs", "edges_between_nodes")
_CELL = re.compile(r"cell_(\d+)$")


def edge_groups(steps: int) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
  """The cell's edges as (edge, source, node) in two groups of identical edges.

  Edge `offset_i + j` feeds node i from state j (0, 1: the cell inputs; 2 + m: node m).

  Args:
    steps: intermediate nodes.

  Returns:
    (edges from the two cell inputs, source 0 or 1; edges between nodes, source the node index),
    each in edge order, so every node is complete before an edge reads it.
  """
  from_inputs, between_nodes, offset = [], [], 0
  for i in range(steps):
    for j in range(2 + i):
      (from_inputs if j < 2 else between_nodes).append(
          (offset + j, j if j < 2 else j - 2, i))
    offset += 2 + i
  return from_inputs, between_nodes


def loops(steps: int, reduction: bool) -> list[tuple[str, list[int]]]:
  """The cell's loops as (variable name, its edges in stacking order).

  Args:
    steps: intermediate nodes.
    reduction: a reduction cell (two loops) or a normal one (one loop over every edge).

  Returns:
    [(name, [edge, ...]), ...]; a group without edges (steps = 1) is left out.
  """
  from_inputs, between_nodes = edge_groups(steps)
  if not reduction:
    return [(NORMAL_LOOP, sorted(e for e, _, _ in from_inputs + between_nodes))]
  return [(name, [e for e, _, _ in group])
          for name, group in zip(REDUCTION_LOOPS, (from_inputs, between_nodes)) if group]


def _stack_leaves(*leaves: Any) -> Any:
  first = leaves[0]
  if isinstance(first, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct((len(leaves), *first.shape), first.dtype,
                                sharding=getattr(first, "sharding", None))
  if isinstance(first, np.ndarray):
    return np.stack(leaves)
  return jnp.stack(leaves)


def _take_leaf(leaf: Any, k: int) -> Any:
  if isinstance(leaf, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype,
                                sharding=getattr(leaf, "sharding", None))
  return leaf[k]


CellLoops = Callable[[int], Sequence[tuple[str, Sequence[str]]]]


def darts_cell_loops(steps: int, reduction_layers: Sequence[int]) -> CellLoops:
  """Cell index -> its loops as (name, [edge variable name, ...]) for the DARTS cell."""
  return lambda i: [(name, [f"edge_{e}" for e in edges])
                    for name, edges in loops(steps, i in reduction_layers)]


def _stack_cell(cell: Mapping[str, Any], cell_loops: Sequence[tuple[str, Sequence[str]]]
                ) -> dict[str, Any]:
  edge_keys = {k for _, keys in cell_loops for k in keys}
  out = {k: v for k, v in cell.items() if k not in edge_keys}
  for name, keys in cell_loops:
    if all(k in cell for k in keys):
      out[name] = jax.tree.map(_stack_leaves, *[cell[k] for k in keys])
  return out


def _unstack_cell(cell: Mapping[str, Any], cell_loops: Sequence[tuple[str, Sequence[str]]]
                  ) -> dict[str, Any]:
  names = {name for name, _ in cell_loops}
  out = {k: v for k, v in cell.items() if k not in names}
  for name, keys in cell_loops:
    if name in cell:
      for k, key in enumerate(keys):
        out[key] = jax.tree.map(lambda leaf, k=k: _take_leaf(leaf, k), cell[name])
  return out


def _map_cells(tree: Any, fn: Callable[[Mapping[str, Any], int], dict[str, Any]]) -> Any:
  """`tree` with every mapping entry `cell_<i>` (itself a mapping) replaced by fn(it, i)."""
  if isinstance(tree, Mapping):
    out = {}
    for key, value in tree.items():
      match = _CELL.match(str(key))
      value = _map_cells(value, fn)
      out[key] = fn(value, int(match.group(1))) if match and isinstance(value, Mapping) else value
    return out if isinstance(tree, dict) else type(tree)(out)
  if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
    return dataclasses.replace(tree, **{f.name: _map_cells(getattr(tree, f.name), fn)
                                        for f in dataclasses.fields(tree) if f.init})
  if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # optax states
    return type(tree)(*[_map_cells(x, fn) for x in tree])
  if isinstance(tree, (tuple, list)):
    return type(tree)(_map_cells(x, fn) for x in tree)
  return tree


def stack(tree: Any, steps: int, reduction_layers: Sequence[int], *,
          cell_loops: CellLoops | None = None) -> Any:
  """Per-edge entries `edge_<e>` of every search cell in `tree` -> the loops' stacked entries.

  Args:
    tree: any tree holding the network's cells under `cell_<i>` keys (variables, a
      collection, optimizer states, a `TrainState`); arrays or `jax.ShapeDtypeStruct`s.
    steps: intermediate nodes per cell.
    reduction_layers: indices of the reduction cells (`SearchNetwork.reduction_layers()`).
    cell_loops: cell index -> [(loop name, [edge variable names in stacking order])], for
      cells other than the DARTS cell (default: `darts_cell_loops(steps, reduction_layers)`).

  Returns:
    The same tree with each cell's edges stacked per loop (cells already stacked unchanged).
  """
  cell_loops = cell_loops or darts_cell_loops(steps, reduction_layers)
  return _map_cells(tree, lambda cell, i: _stack_cell(cell, cell_loops(i)))


def unstack(tree: Any, steps: int, reduction_layers: Sequence[int], *,
            cell_loops: CellLoops | None = None) -> Any:
  """The inverse of `stack`: one entry per edge (the unrolled cell's layout)."""
  cell_loops = cell_loops or darts_cell_loops(steps, reduction_layers)
  return _map_cells(tree, lambda cell, i: _unstack_cell(cell, cell_loops(i)))
