"""Pairwise distances between re-identification features.

Both functions expand `||x - y||**2 = ||x||**2 + ||y||**2 - 2 x.y`, so a whole (M, N) matrix costs
one matrix product. They are pure and jit-able and compute in the dtype of the inputs (float64
in, float64 out when x64 is enabled).

Example:
  >>> d = euclidean_dist(query_feats, gallery_feats)   # (M, N), for triplet losses
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

# Floor of the squared distance in `euclidean_dist` (open-reid / MEB-Net `euclidean_dist`:
# `dist.clamp(min=1e-12).sqrt()`), so a self-distance is 1e-6 and sqrt's gradient stays finite.
_MIN_SQ_DIST = 1e-12


def _check_pair(x: jax.Array, y: jax.Array, name: str) -> None:
  """Raises ValueError unless x is (M, D) and y is (N, D)."""
  if x.ndim != 2 or y.ndim != 2:
    raise ValueError(
        f"{name} expects two 2-D feature matrices (M, D) and (N, D), got shapes {x.shape} and "
        f"{y.shape}; flatten the features to one row per sample first.")
  if x.shape[1] != y.shape[1]:
    raise ValueError(
        f"{name} expects features of the same width, got {x.shape[1]} (x) and {y.shape[1]} (y); "
        "compare features of the same model and layer.")


def pairwise_sq_dist(x: jax.Array, y: jax.Array) -> jax.Array:
  """Squared Euclidean distances `||x_i||**2 - 2 x_i.y_j + ||y_j||**2`, unclamped.

  DDAN's evaluation distance: no clamp and no square root, so rounding can leave tiny negative
  values for (near-)identical rows; ranking is unaffected.

  Args:
    x: (M, D) features.
    y: (N, D) features.

  Returns:
    (M, N) array in the promoted dtype of x and y.
  """
  x = jnp.asarray(x)
  y = jnp.asarray(y)
  _check_pair(x, y, "pairwise_sq_dist")
  xx = jnp.sum(x * x, axis=1, keepdims=True)
  yy = jnp.sum(y * y, axis=1)[None, :]
  # Highest precision: the expansion cancels catastrophically for close rows, and TF32 / bf16
  # passes of the product would turn that into errors of ~1e-3 relative to ||x||**2.
  xy = jnp.matmul(x, y.T, precision=jax.lax.Precision.HIGHEST)
  return xx - 2 * xy + yy


def euclidean_dist(x: jax.Array, y: jax.Array) -> jax.Array:
  """Euclidean distances `sqrt(max(||x_i||**2 + ||y_j||**2 - 2 x_i.y_j, 1e-12))`.

  As `euclidean_dist` of open-reid / MEB-Net (https://github.com/YunpengZhai/MEB-Net,
  `mebnet/loss/triplet.py`): the squared distance is clamped at 1e-12 before the square root, so
  the distance of a row to itself is 1e-6 and its gradient is zero (the clamp is active) instead
  of the infinite gradient of sqrt at 0.

  Args:
    x: (M, D) features.
    y: (N, D) features.

  Returns:
    (M, N) array in the promoted dtype of x and y.
  """
  d2 = pairwise_sq_dist(x, y)
  # `where`, not `maximum`: zero gradient wherever the clamp is active, ties included.
  return jnp.sqrt(jnp.where(d2 > _MIN_SQ_DIST, d2, _MIN_SQ_DIST))
