"""Re-identification losses of DDAN and MEB-Net: batch-hard triplets and (soft) cross-entropies.

* `triplet_loss`: the batch-hard triplet loss of DDAN ("Dual Distribution Alignment Network for
  Generalizable Person Re-Identification", Chen et al., arXiv 2007.13249; official code
  https://github.com/PeixianChen/DDAN, `reid/loss/tripletloss.py`, `TripletLoss`).
* `soft_triplet_loss`: MEB-Net's soft-margin triplet and its mutual-learning form, where the
  target is the 2-way softmax of a teacher's distances ("Multiple Expert Brainstorming for Domain
  Adaptive Person Re-identification", Zhai et al., arXiv 2007.01546: the triplet loss of the
  source pre-training and the mutual triplet loss of the brainstorming stage; official code
  https://github.com/YunpengZhai/MEB-Net, `mebnet/loss/triplet.py`, `SoftTripletLoss`).
* `cross_entropy_label_smooth` and `soft_cross_entropy`: MEB-Net's label-smoothed identity loss
  and mutual (soft) identity loss (`mebnet/loss/crossentropy.py`,
  `CrossEntropyLabelSmooth` and `SoftEntropy`); with epsilon = 0 the first is the plain
  cross-entropy of DDAN's identity and discriminator losses (`nn.CrossEntropyLoss`).
* `uniform_confusion_loss`: DDAN's adversarial term, the cross-entropy of the discriminator's
  prediction to the uniform distribution (official `reid/trainers.py`, `loss_s_cam`).

All functions are pure and jit-able and compute in the dtype of their floating inputs.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcompress.reid.distance import euclidean_dist
from jaxcompress.reid.mining import check_labels, hard_example_mining

# DDAN's `normalize`: x / (||x||_2 + 1e-12) (an epsilon added to the norm, not a floor).
_NORM_EPS = 1e-12


def _check_features(feat: jax.Array, name: str, what: str = "feat") -> jax.Array:
  feat = jnp.asarray(feat)
  if feat.ndim != 2:
    raise ValueError(
        f"{name} expects {what} of shape (N, D), one row per sample, got {feat.shape}; flatten "
        "the features to one row per sample first.")
  if not jnp.issubdtype(feat.dtype, jnp.floating):
    raise ValueError(
        f"{name} expects floating {what}, got dtype {feat.dtype}; cast to float32 or float64.")
  return feat


def _check_logits(logits: jax.Array, name: str, what: str = "logits") -> jax.Array:
  logits = jnp.asarray(logits)
  if logits.ndim != 2:
    raise ValueError(
        f"{name} expects {what} of shape (B, K), one row of class scores per sample, got "
        f"{logits.shape}; reshape to (B, K).")
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    raise ValueError(
        f"{name} expects floating {what}, got dtype {logits.dtype}; cast to float32 or float64.")
  return logits


def _l2_normalize_plus_eps(x: jax.Array) -> jax.Array:
  sq = jnp.sum(x * x, axis=1, keepdims=True)
  # sqrt's gradient is infinite at 0: give an all-zero row a zero norm gradient (as PyTorch's
  # norm backward does), so it maps to 0 with a finite gradient of 1 / 1e-12 through x.
  nonzero = sq > 0
  norm = jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, sq, 1)), 0)
  return x / (norm + _NORM_EPS)


def triplet_loss(
    feat: jax.Array,
    labels: jax.Array,
    margin: float | jax.Array | None = 0.3,
    normalize: bool = True,
) -> jax.Array:
  """DDAN's batch-hard triplet loss.

  x = feat / (||feat_i||_2 + 1e-12) when `normalize`, else feat; dist = `euclidean_dist(x, x)`;
  the hardest positive and negative of each anchor come from `hard_example_mining` and
  loss = mean_i max(0, dist_ap_i - dist_an_i + margin) (PyTorch `MarginRankingLoss`), or
  mean_i softplus(dist_ap_i - dist_an_i) when margin is None (`SoftMarginLoss`).

  The default follows the official code: DDAN applies the loss to the pre-BN features but its
  flag test is commented out, so it always normalises them; normalize=False is the plain
  Euclidean batch-hard loss of Hermans et al.

  Args:
    feat: (N, D) features.
    labels: (N,) integer identity labels; the batch should hold at least two identities.
    margin: hinge margin (Python number or 0-d array, traced without recompiling), or None for
      the soft margin.
    normalize: Python bool, L2-normalise the rows first.

  Returns:
    Scalar loss in the dtype of feat.
  """
  feat = _check_features(feat, "triplet_loss")
  x = _l2_normalize_plus_eps(feat) if normalize else feat
  dist_ap, dist_an, _, _ = hard_example_mining(euclidean_dist(x, x), labels)
  if margin is None:
    return jnp.mean(jax.nn.softplus(dist_ap - dist_an))
  m = jnp.asarray(margin, feat.dtype)
  return jnp.mean(jnp.maximum(dist_ap - dist_an + m, 0))


def soft_triplet_loss(
    feat: jax.Array,
    labels: jax.Array,
    teacher_feat: jax.Array | None = None,
    margin: float | jax.Array | None = 0.0,
) -> jax.Array:
  """MEB-Net's `SoftTripletLoss` (no feature normalisation).

  dist = `euclidean_dist(feat, feat)`, mined with `hard_example_mining` (the indices always come
  from the student), l_i = log_softmax([dist_ap_i, dist_an_i]).
  Without a teacher (the paper's triplet loss):
  loss = mean_i (-margin * l_i0 - (1 - margin) * l_i1); margin 0 is the soft-margin batch-hard
  loss mean_i softplus(dist_ap_i - dist_an_i), not a hinge.
  With `teacher_feat` (the mutual triplet loss, margin ignored):
  Dt = `euclidean_dist(teacher_feat, teacher_feat)`, target_i = softmax([Dt[i, pos_idx_i],
  Dt[i, neg_idx_i]]), a constant, and loss = -mean_i sum_k target_ik * l_ik.

  Args:
    feat: (N, D) student features.
    labels: (N,) integer (pseudo) labels; the batch should hold at least two identities.
    teacher_feat: optional (N, D') teacher features (the EMA expert's); held constant.
    margin: weight of the positive term without a teacher (Python number or 0-d array, traced
      without recompiling); ignored with a teacher, where the official passes None.

  Returns:
    Scalar loss in the promoted dtype of the features.
  """
  feat = _check_features(feat, "soft_triplet_loss")
  dist_ap, dist_an, pos_idx, neg_idx = hard_example_mining(euclidean_dist(feat, feat), labels)
  log_p = jax.nn.log_softmax(jnp.stack([dist_ap, dist_an], axis=1), axis=1)
  if teacher_feat is None:
    if margin is None:
      raise ValueError(
          "soft_triplet_loss needs a margin without teacher_feat (margin=None is the teacher "
          "form); pass margin=0.0 for the soft-margin loss or give teacher_feat.")
    m = jnp.asarray(margin, log_p.dtype)
    return jnp.mean(-m * log_p[:, 0] - (1 - m) * log_p[:, 1])
  teacher_feat = _check_features(teacher_feat, "soft_triplet_loss", "teacher_feat")
  if teacher_feat.shape[0] != feat.shape[0]:
    raise ValueError(
        f"soft_triplet_loss expects teacher_feat with the student's {feat.shape[0]} rows, got "
        f"{teacher_feat.shape[0]}; pass the teacher's features of the same batch.")
  teacher_feat = jax.lax.stop_gradient(teacher_feat)
  dt = euclidean_dist(teacher_feat, teacher_feat)
  t_ap = jnp.take_along_axis(dt, pos_idx[:, None], axis=1)[:, 0]
  t_an = jnp.take_along_axis(dt, neg_idx[:, None], axis=1)[:, 0]
  target = jax.nn.softmax(jnp.stack([t_ap, t_an], axis=1), axis=1)
  return -jnp.mean(jnp.sum(target * log_p, axis=1))


def cross_entropy_label_smooth(
    logits: jax.Array, labels: jax.Array, epsilon: float | jax.Array = 0.1
) -> jax.Array:
  """Label-smoothed cross-entropy (MEB-Net identity loss, official `CrossEntropyLabelSmooth`).

  K = logits.shape[-1], target = (1 - epsilon) * onehot(labels) + epsilon / K,
  loss = mean_b -sum_c target_bc * log_softmax(logits_b)_c; epsilon = 0 is the plain
  cross-entropy.

  Args:
    logits: (B, K) class scores.
    labels: (B,) integer classes in [0, K).
    epsilon: smoothing weight (Python number or 0-d array, traced without recompiling).

  Returns:
    Scalar loss in the dtype of logits.
  """
  logits = _check_logits(logits, "cross_entropy_label_smooth")
  labels = check_labels(labels, logits.shape[0], "cross_entropy_label_smooth")
  k = logits.shape[-1]
  eps = jnp.asarray(epsilon, logits.dtype)
  target = (1 - eps) * jax.nn.one_hot(labels, k, dtype=logits.dtype) + eps / k
  return -jnp.mean(jnp.sum(target * jax.nn.log_softmax(logits, axis=-1), axis=-1))


def soft_cross_entropy(logits: jax.Array, teacher_logits: jax.Array) -> jax.Array:
  """Soft cross-entropy to a teacher's softmax (MEB-Net mutual identity loss, `SoftEntropy`).

  loss = mean_b -sum_c softmax(teacher_logits_b)_c * log_softmax(logits_b)_c, teacher constant.

  Args:
    logits: (B, K) student class scores.
    teacher_logits: (B, K) teacher class scores; held constant.

  Returns:
    Scalar loss in the promoted dtype of the logits.
  """
  logits = _check_logits(logits, "soft_cross_entropy")
  teacher_logits = _check_logits(teacher_logits, "soft_cross_entropy", "teacher_logits")
  if teacher_logits.shape != logits.shape:
    raise ValueError(
        f"soft_cross_entropy expects logits and teacher_logits of the same shape, got "
        f"{logits.shape} and {teacher_logits.shape}; give both models the same classifier size.")
  target = jax.nn.softmax(jax.lax.stop_gradient(teacher_logits), axis=-1)
  return -jnp.mean(jnp.sum(target * jax.nn.log_softmax(logits, axis=-1), axis=-1))


def uniform_confusion_loss(logits: jax.Array, eps: float | jax.Array = 1e-6) -> jax.Array:
  """DDAN's adversarial term: cross-entropy of a discriminator's softmax to the uniform target.

  loss = -mean over all B * C entries of log_softmax(logits + eps) (official
  `-torch.mean(torch.log(F.softmax(outputs_cam_s + 1e-6)))`; adding eps to every logit changes
  nothing). It equals ln C when the discriminator outputs a uniform distribution. The
  discriminator's own loss is `cross_entropy_label_smooth(d_logits, domains, epsilon=0.0)` on
  detached features.

  Args:
    logits: (B, C) discriminator scores of the (mapped) features.
    eps: the official constant added to the logits.

  Returns:
    Scalar loss in the dtype of logits.
  """
  logits = _check_logits(logits, "uniform_confusion_loss")
  return -jnp.mean(jax.nn.log_softmax(logits + jnp.asarray(eps, logits.dtype), axis=-1))
