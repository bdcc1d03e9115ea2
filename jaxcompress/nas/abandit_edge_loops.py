"""ABanditNAS search cells with their edges as loops (`abandit_network.SearchCell`).

A single-input search cell has 10 edges, each a `supernet.SampledOp` switching between 9
candidate ops; unrolled, a CIFAR-10 search network holds 60 switched edges in its forward pass,
again in each PGD iteration's gradient and in the training gradient, and its step program
compiled for minutes. Here the edges of a cell run as `lax.scan` loops over identical edges,
as `nas.search.SearchCell` does for the DARTS cell: a normal cell one loop over all its edges,
reading and writing one buffer [B_0, node_1, ..., node_4]; a reduction cell two, the stride-2
edges reading B_0 and then those between nodes. Each loop's variables are stacked along a
leading edge axis under the loop's name (`nas.edge_layout`), and every node sums its edges in
the unrolled cell's order, so both forms give the same values from the same (converted)
variables: `cell_loops` converts with `edge_layout.stack` / `unstack`.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcompress.nas import edge_layout


def loops(edges: Sequence[tuple[int, int]], reduction: bool
          ) -> list[tuple[str, list[tuple[int, int, int]]]]:
  """The cell's loops as (variable name, [(edge index, input i, node j), ...]).

  Args:
    edges: (input i, node j) of every edge in edge order (`abandit_network.edge_list`).
    reduction: a reduction cell (two loops) or a normal one (one loop over every edge).

  Returns:
    The loops in run order, each with its edges in edge order (every node is complete before
    an edge reads it).
  """
  numbered = [(e, i, j) for e, (i, j) in enumerate(edges)]
  if not reduction:
    return [(edge_layout.NORMAL_LOOP, numbered)]
  return [(edge_layout.REDUCTION_LOOPS[0], [x for x in numbered if x[1] == 0]),
          (edge_layout.REDUCTION_LOOPS[1], [x for x in numbered if x[1] > 0])]


def cell_loops(edges: Sequence[tuple[int, int]], reduction_layers: Sequence[int]
               ) -> edge_layout.CellLoops:
  """For `edge_layout.stack` / `unstack`: cell index -> [(loop name, [`edge_<i>_<j>`, ...])]."""
  return lambda k: [(name, [f"edge_{i}_{j}" for _, i, j in group])
                    for name, group in loops(edges, k in reduction_layers)]


def init_edges(cell: nn.Module, op_def: Any, s0: jax.Array, edges: Sequence[tuple[int, int]]
               ) -> jax.Array:
  """Draws every edge's variables, stacked per loop, into `cell`; returns zero node states.

  Edge e's variables come from `op_def(stride).init` with the cell's key folded with e, on a
  1-image crop of its input (parameter shapes depend on channels only), vectorised over the
  loop's edges: the initialisation program holds one edge per loop.

  Args:
    cell: the calling `SearchCell` (while it is initialising).
    op_def: stride -> an unbound `SampledOp` of the cell.
    s0: the preprocessed cell input B_0.
    edges: `abandit_network.edge_list`.

  Returns:
    Zeros of the node states' shape (steps, N, H', W', C).
  """
  stride = 2 if cell.reduction else 1
  size = min(s0.shape[1], 4)
  crop = s0[:1, :size, :size]
  node_crop = jnp.zeros_like(crop[:, ::stride, ::stride])
  key = cell.make_rng("params")
  for name, group in loops(edges, cell.reduction):
    keys = jax.vmap(lambda e: jax.random.fold_in(key, e))(
        jnp.asarray([e for e, _, _ in group], jnp.uint32))
    crops = jnp.stack([crop if i == 0 else node_crop for _, i, _ in group])
    op = op_def(stride if name != edge_layout.REDUCTION_LOOPS[1] else 1)
    index = jnp.zeros((), jnp.int32)
    variables = jax.vmap(lambda k, x, op=op: op.init(k, x, index, False))(keys, crops)
    for col, tree in variables.items():
      cell.put_variable(col, name, tree)
  node_shape = jax.eval_shape(lambda v: v[:, ::stride, ::stride], s0).shape
  steps = max(j for _, j in edges)
  return jnp.zeros((steps, *node_shape), s0.dtype)


def scanned_nodes(cell: nn.Module, op_def: Any, s0: jax.Array, ops: jax.Array, train: bool,
                  edges: Sequence[tuple[int, int]]) -> jax.Array:
  """The node states (steps, N, H', W', C) of `cell`, its edges run as loops.

  Args:
    cell: the calling `SearchCell`.
    op_def: stride -> an unbound `SampledOp` of the cell.
    s0: the preprocessed cell input B_0.
    ops: int32 (num_edges,) op index per edge.
    train: batch statistics (updated when the cell's `batch_stats` are mutable).
    edges: `abandit_network.edge_list`.

  Returns:
    node_1 .. node_steps stacked.
  """
  variables = cell.variables
  collections = [col for col in ("params", "batch_stats") if col in variables]
  update_stats = train and cell.is_mutable_collection("batch_stats") and (
      "batch_stats" in collections)
  steps = max(j for _, j in edges)

  def run(name, group, stride, sources, buffer, offset):
    """Adds each edge (e, i, j) of `group` into buffer[j - offset]; reads sources[i], or
    buffer[i - offset] when `sources` is None."""
    per_edge = {
        "vars": {col: variables[col][name] for col in collections if name in variables[col]},
        "src": jnp.asarray([i if sources is not None else i - offset for _, i, _ in group]),
        "dst": jnp.asarray([j - offset for _, _, j in group]),
        "op": ops[jnp.asarray([e for e, _, _ in group])],
    }
    op = op_def(stride)

    def body(buffer, xs):
      x = (buffer if sources is None else sources)[xs["src"]]
      if update_stats:
        y, new_vars = op.apply(xs["vars"], x, xs["op"], train, mutable=["batch_stats"])
        stats = new_vars["batch_stats"]
      else:
        y, stats = op.apply(xs["vars"], x, xs["op"], train), None
      return buffer.at[xs["dst"]].add(y), stats

    buffer, stats = jax.lax.scan(body, buffer, per_edge)
    if update_stats:
      cell.put_variable("batch_stats", name, stats)
    return buffer

  zeros = jnp.zeros((steps, *s0.shape), s0.dtype)
  groups = loops(edges, cell.reduction)
  if not cell.reduction:  # [B_0, node_1, ..., node_steps]: node j at j
    return run(*groups[0], 1, None, jnp.concatenate([s0[None], zeros]), 0)[1:]
  nodes = jnp.zeros((steps, *jax.eval_shape(lambda v: v[:, ::2, ::2], s0).shape), s0.dtype)
  (first, from_input), (second, between) = groups
  nodes = run(first, from_input, 2, s0[None], nodes, 1)   # node j at j - 1
  return run(second, between, 1, None, nodes, 1)
