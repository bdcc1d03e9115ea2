"""Batch-hard example mining for re-identification triplet losses.

For every anchor of a batch, the hardest positive (the farthest sample with the anchor's label)
and the hardest negative (the closest sample with another label), as in "In Defense of the
Triplet Loss for Person Re-Identification" (Hermans, Beyer and Leibe, arXiv 1703.07737) and the
official code of DDAN (https://github.com/PeixianChen/DDAN, `reid/loss/tripletloss.py`,
`hard_example_mining`) and MEB-Net (https://github.com/YunpengZhai/MEB-Net,
`mebnet/loss/triplet.py`, `_batch_hard`).

The anchor itself counts as one of its positives (its self-distance is the 1e-6 floor of
`euclidean_dist`), as in both official implementations. Ties resolve to the lowest index.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def check_labels(labels: jax.Array, n: int, name: str) -> jax.Array:
  """Returns labels as an integer array of shape (n,); raises ValueError otherwise."""
  labels = jnp.asarray(labels)
  if labels.shape != (n,):
    raise ValueError(
        f"{name} expects labels of shape ({n},), one per sample, got {labels.shape}; pass a 1-D "
        "integer array aligned with the rows of the features.")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(
        f"{name} expects integer labels, got dtype {labels.dtype}; cast them with "
        "labels.astype(jnp.int32).")
  return labels


def hard_example_mining(
    dist: jax.Array, labels: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Hardest positive and negative of every anchor of a square distance matrix.

  pos_idx_i = argmax_j {dist[i, j] : labels_j == labels_i} (i itself included) and
  neg_idx_i = argmin_j {dist[i, j] : labels_j != labels_i}, ties to the lowest index. The
  distances are gathered at these indices, so the gradient reaches dist[i, pos_idx_i] and
  dist[i, neg_idx_i] only. An anchor whose label every sample shares has no negative; its
  neg_idx is then 0 (a positive): batches are expected to hold at least two identities.

  Args:
    dist: (N, N) floating distance matrix (e.g. `euclidean_dist(x, x)`).
    labels: (N,) integer labels.

  Returns:
    dist_ap (N,), dist_an (N,) in the dtype of dist, and pos_idx (N,), neg_idx (N,) as int32.
  """
  dist = jnp.asarray(dist)
  if dist.ndim != 2 or dist.shape[0] != dist.shape[1]:
    raise ValueError(
        f"hard_example_mining expects a square (N, N) distance matrix, got shape {dist.shape}; "
        "pass the distances of the batch to itself, e.g. euclidean_dist(x, x).")
  if not jnp.issubdtype(dist.dtype, jnp.floating):
    raise ValueError(
        f"hard_example_mining expects floating distances, got dtype {dist.dtype}; cast them "
        "to float32 or float64.")
  labels = check_labels(labels, dist.shape[0], "hard_example_mining")
  same = labels[:, None] == labels[None, :]
  # The selection is piecewise constant: mine on a detached copy so only the gathers carry
  # gradient. argmax / argmin return the first extremum, i.e. ties go to the lowest index.
  d = jax.lax.stop_gradient(dist)
  pos_idx = jnp.argmax(jnp.where(same, d, -jnp.inf), axis=1).astype(jnp.int32)
  neg_idx = jnp.argmin(jnp.where(same, jnp.inf, d), axis=1).astype(jnp.int32)
  dist_ap = jnp.take_along_axis(dist, pos_idx[:, None], axis=1)[:, 0]
  dist_an = jnp.take_along_axis(dist, neg_idx[:, None], axis=1)[:, 0]
  return dist_ap, dist_an, pos_idx, neg_idx
