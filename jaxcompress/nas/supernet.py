"""Supernet building blocks: DARTS mixed ops, PC-DARTS partial channels and channel shuffle.

* DARTS (arXiv 1806.09055, Sec. 2.2): o_bar(x) = sum_k softmax(alpha)_k o_k(x); in the search net
  every pool is followed by an affine-free BN (`cnn/model_search.py`).
* PC-DARTS (arXiv 1907.05737, Sec. 3.2): only the first C/K channels go through the mixed op; the
  other channels bypass it (2x2 max-pooled on stride-2 edges), are concatenated after the op
  output and the result is channel-shuffled with K groups (`model_search.py`, K = 4).

Example:
  >>> import jax, jax.numpy as jnp
  >>> op = PCMixedOp(16, 1, k=4)
  >>> x = jnp.ones((2, 8, 8, 16)); w = jax.nn.softmax(jnp.zeros(8))
  >>> variables = op.init(jax.random.key(0), x, w, train=True)
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcompress.nas import space


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
  """The PC-DARTS / ShuffleNet channel permutation on NHWC activations.

  Args:
    x: (N, H, W, C) with C divisible by `groups`.
    groups: g.

  Returns:
    x with channels reordered as torch's view(N, g, C//g, H, W).transpose(1, 2).view(N, C, H, W):
    output channel j * g + i holds input channel i * (C // g) + j.
  """
  *lead, c = x.shape
  if c % groups:
    raise ValueError(f"channel_shuffle: {c} channels are not divisible by {groups} groups.")
  y = x.reshape(*lead, groups, c // groups)
  return jnp.swapaxes(y, -1, -2).reshape(*lead, c)


class MixedOp(nn.Module):
  """Softmax-weighted sum of all candidate ops on one edge (DARTS continuous relaxation).

  Attributes:
    features: channels C of the edge (input = output channels).
    stride: 1, or 2 on the edges that read the cell inputs in a reduction cell.
    primitives: op names, the order of `weights`.
    affine: BN scale/bias inside the ops (False in the DARTS search network).
    registry: "darts" (`space.OPS`; pools get the search-net affine-free BN) or "abandit"
      (`robust_ops.ABANDIT_OPS`, whose pools carry their own BN).
  """
  features: int
  stride: int = 1
  primitives: Sequence[str] = tuple(space.PRIMITIVES)
  affine: bool = False
  registry: str = "darts"

  @nn.compact
  def __call__(self, x: jax.Array, weights: jax.Array, train: bool = False) -> jax.Array:
    """Returns sum_k weights[k] * op_k(x); `weights` has one entry per primitive."""
    if self.registry == "darts":
      ops = space.OPS
    elif self.registry == "abandit":
      from jaxcompress.nas import robust_ops  # pylint: disable=g-import-not-at-top
      ops = robust_ops.ABANDIT_OPS
    else:
      raise ValueError(f"Unknown registry {self.registry!r}; use 'darts' or 'abandit'.")
    out = 0.0
    for k, name in enumerate(self.primitives):
      y = ops[name](self.features, self.stride, self.affine)(x, train)
      if "pool" in name and self.registry == "darts":
        # DARTS wraps search-net pools in an affine-free BN (model_search.MixedOp).
        y = space.batch_norm(train, False)(y)
      out = out + weights[k].astype(y.dtype) * y
    return out


class PCMixedOp(nn.Module):
  """PC-DARTS partial-channel mixed op: 1/k of the channels through `MixedOp`, then shuffle.

  Attributes:
    features: channels C of the edge; the inner ops are built with C // k channels.
    stride: edge stride.
    k: channel proportion K (4 in PC-DARTS) and the shuffle group count.
    primitives: op names, the order of `weights`.
    affine: BN scale/bias inside the ops.
  """
  features: int
  stride: int = 1
  k: int = 4
  primitives: Sequence[str] = tuple(space.PRIMITIVES)
  affine: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, weights: jax.Array, train: bool = False) -> jax.Array:
    c = x.shape[-1]
    x_sel, x_bypass = x[..., : c // self.k], x[..., c // self.k:]
    y = MixedOp(self.features // self.k, self.stride, self.primitives, self.affine)(
        x_sel, weights, train)
    if y.shape[1] != x.shape[1]:
      # Reduction edge: the bypassed channels are 2x2 max-pooled to the op's resolution.
      x_bypass = nn.max_pool(x_bypass, (2, 2), strides=(2, 2))
    return channel_shuffle(jnp.concatenate([y, x_bypass], axis=-1), self.k)


class SampledOp(nn.Module):
  """One candidate op per call, chosen by a traced index (single-path supernet for bandits).

  ABanditNAS / BNAS sample one op per edge and train only that path, while every (edge, op)
  keeps its own weights. `nn.switch` executes only the selected branch, and the index is a traced
  value, so sampling a different op, or abandoning ops (a mask in `BanditState`), never
  recompiles. All branches are run once at init so every op owns its parameters.

  Attributes:
    features: channels C of the edge.
    stride: edge stride.
    primitives: op names; `index` points into this list.
    affine: BN scale/bias inside the ops.
    registry: "darts" (`space.OPS`) or "abandit" (`robust_ops.ABANDIT_OPS`).
  """
  features: int
  stride: int = 1
  primitives: Sequence[str] = tuple(space.PRIMITIVES)
  affine: bool = False
  registry: str = "darts"

  def setup(self):
    if self.registry == "darts":
      ops = space.OPS
    else:
      from jaxcompress.nas import robust_ops  # pylint: disable=g-import-not-at-top
      ops = robust_ops.ABANDIT_OPS
    self.ops = [ops[name](self.features, self.stride, self.affine) for name in self.primitives]

  def __call__(self, x: jax.Array, index: jax.Array, train: bool = False) -> jax.Array:
    """Returns primitives[index](x); `index` is an int32 scalar (traced or concrete)."""
    branches = [lambda mdl, v, k=k: mdl.ops[k](v, train) for k in range(len(self.primitives))]
    if self.is_initializing():
      ys = [branch(self, x) for branch in branches]
      return ys[0]
    return nn.switch(jnp.asarray(index, jnp.int32), branches, self, x)


def edge_normalization(betas: jax.Array, steps: int = 4) -> jax.Array:
  """PC-DARTS edge weights: softmax of beta over the 2 + i incoming edges of node i.

  Args:
    betas: (..., sum_{i<steps} (2 + i)) raw edge parameters (14 for 4 steps).
    steps: number of intermediate nodes.

  Returns:
    Array of the same shape; each node's slice sums to 1.
  """
  parts, start = [], 0
  for i in range(steps):
    end = start + 2 + i
    parts.append(jax.nn.softmax(betas[..., start:end], axis=-1))
    start = end
  if start != betas.shape[-1]:
    raise ValueError(f"betas has {betas.shape[-1]} edges; {steps} steps need {start}.")
  return jnp.concatenate(parts, axis=-1)
