"""MEB-Net expert brainstorming: authority regularisation, mean-teacher decay and the joint loss.

"Multiple Expert Brainstorming for Domain Adaptive Person Re-identification" (Zhai, Ye, Lu, Jia,
Ji and Tian, ECCV 2020, arXiv 2007.01546). E experts (students) learn from clustering pseudo
labels and from each other's temporally averaged (EMA) teachers; each teacher's voice is weighted
by its authority, the normalised between/within scatter ratio of a clustering of its own features.
Behaviour follows the official code (https://github.com/YunpengZhai/MEB-Net):
`mebnet/utils/scatter.py` (`J_scatter`), `main/target_train.py` (authority), and
`mebnet/trainers.py` (`MEBTrainer.train` and `_update_ema_variables`).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress.reid.losses import (
    cross_entropy_label_smooth,
    soft_cross_entropy,
    soft_triplet_loss,
)


def j_scatter(features: np.ndarray | jax.Array, labels: np.ndarray | jax.Array) -> np.ndarray:
  """Scatter ratio J of a clustering (the paper's authority criterion, official `J_scatter`).

  Runs on the host with NumPy (labels concrete). Samples labelled -1 are ignored. For each
  remaining cluster c with n_c members and centre mu_c (their mean), and mu_bar the unweighted
  mean of the centres: J = sum_c n_c ||mu_c - mu_bar||**2 / sum_c sum_{i in c} ||x_i - mu_c||**2.
  A larger J means tighter, better separated clusters. Accumulated in float64 (the official
  accumulates in the features' float32) and returned in the features' dtype; inf (or nan) when
  every cluster has zero spread.

  Args:
    features: (N, D) features, e.g. one expert's EMA features of the target training set.
    labels: (N,) integer cluster labels (k-means of these features), -1 for unclustered samples.

  Returns:
    J as a 0-d NumPy array in the floating dtype of features.
  """
  x = np.asarray(features)
  if x.ndim != 2:
    raise ValueError(
        f"j_scatter expects features of shape (N, D), got {x.shape}; flatten the features to "
        "one row per sample first.")
  dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)
  y = np.asarray(labels)
  if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
    raise ValueError(
        f"j_scatter expects integer labels of shape ({x.shape[0]},), got {y.dtype} {y.shape}; "
        "pass one cluster id per feature row (-1 for ignored samples).")
  keep = y != -1
  x, y = x[keep].astype(np.float64), y[keep]
  if y.size == 0:
    raise ValueError("j_scatter got no labelled sample (all labels are -1); pass a clustering "
                     "with at least one cluster.")
  ids, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
  centres = np.zeros((ids.size, x.shape[1]))
  np.add.at(centres, inverse, x)
  centres /= counts[:, None]
  within = np.sum((x - centres[inverse]) ** 2)
  between = np.sum(counts * np.sum((centres - centres.mean(axis=0)) ** 2, axis=1))
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.asarray(between / within, dtype=dtype)


def expert_authority(j: Sequence[float] | jax.Array) -> jax.Array:
  """Authorities of the experts from their scatter ratios: E * j / sum(j), mean 1.

  The official code L1-normalises the (E,) vector of J values (`F.normalize(p=1)`) and
  multiplies by 3, the number of experts, in float32; here E = len(j) and the dtype is j's
  (the default float dtype for integer input). Constant.

  Args:
    j: (E,) positive scatter ratios, each from a k-means of that expert's own EMA features
      (not the consensus clustering), see `j_scatter`.

  Returns:
    (E,) authorities, constant (stop_gradient).
  """
  j = jnp.asarray(j)
  if j.ndim != 1 or j.shape[0] == 0:
    raise ValueError(
        f"expert_authority expects a non-empty (E,) vector of scatter ratios, got shape {j.shape}; "
        "pass one j_scatter value per expert.")
  if not jnp.issubdtype(j.dtype, jnp.floating):
    j = j.astype(jnp.result_type(float))
  j = jax.lax.stop_gradient(j)
  return j.shape[0] * j / jnp.sum(j)


def mean_teacher_decay(step: int | jax.Array, alpha: float | jax.Array = 0.999) -> jax.Array:
  """EMA momentum of the mean teachers at a global step: min(1 - 1 / (step + 1), alpha).

  Official `_update_ema_variables`: 0 at step 0 (the teacher copies the student), 1/2 at step 1,
  then rising to the cap alpha. step = epoch * iterations_per_epoch + iteration.

  Args:
    step: global step, a non-negative Python int or 0-d array (traced without recompiling).
    alpha: cap of the momentum (Python number or 0-d array).

  Returns:
    0-d momentum in alpha's floating dtype (the default float dtype for Python numbers), for
    `ema_update(ema_params, params, momentum)`.
  """
  if isinstance(step, (int, np.integer)) and step < 0:
    raise ValueError(f"mean_teacher_decay expects a non-negative step, got {step}; count steps "
                     "from 0.")
  a = jnp.asarray(alpha)
  if not jnp.issubdtype(a.dtype, jnp.floating):
    a = a.astype(jnp.result_type(float))
  t = jnp.asarray(step).astype(a.dtype)
  return jnp.minimum(1 - 1 / (t + 1), a)


def meb_loss(
    logits: Sequence[jax.Array],
    features: Sequence[jax.Array],
    ema_logits: Sequence[jax.Array],
    ema_features: Sequence[jax.Array],
    targets: jax.Array,
    authority: jax.Array,
    ce_soft_weight: float | jax.Array = 0.5,
    tri_soft_weight: float | jax.Array = 0.8,
    epsilon: float | jax.Array = 0.1,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The per-iteration brainstorming loss of MEB-Net (official `MEBTrainer.train`).

  With teacher (speaker) i and student (listener) j:
    loss_ce = sum_e cross_entropy_label_smooth(logits[e], targets, epsilon)
    loss_tri = sum_e soft_triplet_loss(features[e], targets, margin=0.0)
    loss_ce_soft = sum_{i != j} 0.5 * authority[i] * soft_cross_entropy(logits[j], ema_logits[i])
    loss_tri_soft = sum_{i != j} 0.5 * authority[i] *
        soft_triplet_loss(features[j], targets, teacher_feat=ema_features[i], margin=None)
    total = (1 - ce_soft_weight) * loss_ce + (1 - tri_soft_weight) * loss_tri
        + ce_soft_weight * loss_ce_soft + tri_soft_weight * loss_tri_soft.
  The paper's lambda_id = 0.5 and lambda_tri = 0.8 are the defaults (the official script passes
  them as --soft-ce-weight and --soft-tri-weight). Differentiable w.r.t. the student outputs only.

  Args:
    logits: E student logits (B, K), one per expert, each on that expert's own view.
    features: E student pooled features (B, D_e).
    ema_logits: E EMA-teacher logits (B, K), each on its expert's view; constants.
    ema_features: E EMA-teacher features (B, D_e); constants.
    targets: (B,) integer pseudo labels (k-means of the averaged EMA features).
    authority: (E,) authorities (`expert_authority`); constant.
    ce_soft_weight: lambda_id (Python number or 0-d array).
    tri_soft_weight: lambda_tri (Python number or 0-d array).
    epsilon: label smoothing of the identity loss.

  Returns:
    (total, parts) with parts = {"loss_ce", "loss_tri", "loss_ce_soft", "loss_tri_soft"}.
  """
  n = len(logits)
  if n == 0 or not len(features) == len(ema_logits) == len(ema_features) == n:
    raise ValueError(
        f"meb_loss expects the same positive number of experts in logits, features, ema_logits "
        f"and ema_features, got {len(logits)}, {len(features)}, {len(ema_logits)} and "
        f"{len(ema_features)}; pass one array per expert in each.")
  authority = jax.lax.stop_gradient(jnp.asarray(authority))
  if authority.shape != (n,):
    raise ValueError(
        f"meb_loss expects authority of shape ({n},), one per expert, got {authority.shape}; "
        "pass expert_authority of the experts' scatter ratios (ones for equal weights).")
  loss_ce = sum(cross_entropy_label_smooth(p, targets, epsilon) for p in logits)
  loss_tri = sum(soft_triplet_loss(f, targets, margin=0.0) for f in features)
  loss_ce_soft = 0.0
  loss_tri_soft = 0.0
  for i in range(n):  # speaker: the EMA teacher of expert i
    for j in range(n):  # listener: the student of expert j
      if i == j:
        continue
      w = 0.5 * authority[i]
      loss_ce_soft = loss_ce_soft + w * soft_cross_entropy(logits[j], ema_logits[i])
      loss_tri_soft = loss_tri_soft + w * soft_triplet_loss(
          features[j], targets, teacher_feat=ema_features[i], margin=None)
  dtype = jnp.result_type(loss_ce, loss_tri)
  loss_ce_soft = jnp.asarray(loss_ce_soft, dtype)
  loss_tri_soft = jnp.asarray(loss_tri_soft, dtype)
  wc = jnp.asarray(ce_soft_weight, dtype)
  wt = jnp.asarray(tri_soft_weight, dtype)
  total = (1 - wc) * loss_ce + (1 - wt) * loss_tri + wc * loss_ce_soft + wt * loss_tri_soft
  parts = {"loss_ce": loss_ce, "loss_tri": loss_tri, "loss_ce_soft": loss_ce_soft,
           "loss_tri_soft": loss_tri_soft}
  return total, parts
