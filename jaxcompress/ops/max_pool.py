"""Max pooling whose CPU gradient is a sum of strided scatters instead of XLA's select-and-scatter.

`flax.linen.max_pool` is `lax.reduce_window(max)`; its gradient is XLA's `select_and_scatter_add`,
which XLA:CPU runs as a scalar loop over every window: for the 3x3x3, stride-2 pool after the
stem of Hara et al.'s 3-D ResNet (R3D-18 in DSM, `jaxcompress.models.video_resnet`) it cost more
than PyTorch's `MaxPool3d` backward (timings: BENCHMARKS.md, `benchmarks/video_step.py`). The
video models pool through it (`models.video_layers.max_pool`).

`max_pool` keeps, next to the pooled values, the index of the tap that won each window
(`int8`: the first maximum in the window's row-major order, the tie rule of XLA's `ge`
selection, so ties, frequent after a ReLU, send the gradient to the same element as lax). The
backward pass sums over taps the cotangent where that tap won, spread to the input positions it
read by an interior-padded `lax.pad`: elementwise work that XLA fuses. Values are those of
`flax.linen.max_pool`, gradients lax's up to the order of additions where windows overlap.

On other backends, and for integer inputs, it is `flax.linen.max_pool`. Like any
`jax.custom_vjp`, the CPU path supports reverse mode but not forward mode (`jax.jvp`).
"""
from __future__ import annotations

import functools
import itertools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


def _taps(window: Sequence[int]) -> list[tuple[int, ...]]:
  return list(itertools.product(*[range(k) for k in window]))


def _views(xp: jax.Array, window: Sequence[int], strides: Sequence[int],
           out_sp: Sequence[int]) -> list[jax.Array]:
  """One strided view of the padded input per window tap, each [n, *out_sp, c]."""
  views = []
  for tap in _taps(window):
    start = (0, *tap, 0)
    limit = (xp.shape[0], *[t + (o - 1) * s + 1 for t, o, s in zip(tap, out_sp, strides)],
             xp.shape[-1])
    views.append(lax.slice(xp, start, limit, (1, *strides, 1)))
  return views


def _forward(x: jax.Array, window: tuple[int, ...], strides: tuple[int, ...],
             pads: tuple[tuple[int, int], ...]) -> tuple[jax.Array, jax.Array]:
  """Pooled values and the (first) winning tap of every window."""
  low = jnp.array(-jnp.inf, x.dtype)
  xp = lax.pad(x, low, [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in pads] + [(0, 0, 0)])
  out_sp = [(n - k) // s + 1 for n, k, s in zip(xp.shape[1:-1], window, strides)]
  index_t = jnp.int8 if math.prod(window) <= 127 else jnp.int32
  views = _views(xp, window, strides, out_sp)
  best, index = views[0], jnp.zeros(views[0].shape, index_t)
  for t, view in enumerate(views[1:], start=1):
    # Strictly greater: the first maximum keeps the window (XLA's `ge` select).
    wins = view > best
    best = jnp.where(wins, view, best)
    index = jnp.where(wins, jnp.asarray(t, index_t), index)
  return best, index


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _max_pool(x: jax.Array, window: tuple[int, ...], strides: tuple[int, ...],
              pads: tuple[tuple[int, int], ...], in_sp: tuple[int, ...]) -> jax.Array:
  del in_sp  # the backward pass's output shape
  return _forward(x, window, strides, pads)[0]


def _max_pool_fwd(x, window, strides, pads, in_sp):
  del in_sp
  return _forward(x, window, strides, pads)  # (values, winning taps as the residual)


def _max_pool_bwd(window, strides, pads, in_sp, index, g):
  zero = jnp.zeros((), g.dtype)
  dx = None
  for t, tap in enumerate(_taps(window)):
    # Output position p took tap `tap` from input position p * s + tap - lo: the cotangent where
    # that tap won, interior-padded by s - 1 and shifted there (negative pads crop what fell on
    # the padding).
    cfg = [(0, 0, 0)]
    for size, o, s, (lo, _), ti in zip(in_sp, g.shape[1:-1], strides, pads, tap):
      first = ti - lo
      cfg.append((first, size - first - (o - 1) * s - 1, s - 1))
    cfg.append((0, 0, 0))
    part = lax.pad(jnp.where(index == t, g, zero), zero, cfg)
    dx = part if dx is None else dx + part
  return (dx,)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int],
             padding: Sequence[tuple[int, int]]) -> jax.Array:
  """`flax.linen.max_pool(x, window, strides, padding)` with a fast CPU gradient.

  Args:
    x: channel-last input [n, *spatial, c] (floating).
    window: window shape per spatial dim.
    strides: window strides.
    padding: explicit non-negative (low, high) padding per spatial dim; padded positions never
      win (as -inf), as in flax and PyTorch.

  Returns:
    [n, *out_spatial, c], the values of `flax.linen.max_pool`.

  Raises:
    ValueError: on mismatched lengths or negative padding.
  """
  nsp = x.ndim - 2
  window, strides = tuple(int(k) for k in window), tuple(int(s) for s in strides)
  pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  if not len(window) == len(strides) == len(pads) == nsp or nsp < 1:
    raise ValueError(f"max_pool: input {x.shape} (channel-last, batch first) needs one window "
                     f"size, stride and (low, high) pad per spatial dim; got window {window}, "
                     f"strides {strides}, padding {pads}.")
  if any(lo < 0 or hi < 0 for lo, hi in pads) or min(strides + window) < 1:
    raise ValueError(f"max_pool needs padding >= 0 and windows/strides >= 1, got padding {pads},"
                     f" window {window}, strides {strides}.")
  if jax.default_backend() != "cpu" or not jnp.issubdtype(x.dtype, jnp.floating):
    return nn.max_pool(x, window, strides, padding=pads)
  return _max_pool(x, window, strides, pads, tuple(x.shape[1:-1]))
