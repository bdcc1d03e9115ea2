"""MEB-Net's per-epoch targets, computed on the host: pseudo labels, classifiers, authorities.

Zhai et al., "Multiple Expert Brainstorming for Domain Adaptive Person Re-identification", ECCV
2020, arXiv 2007.01546, Sec. 3.2-3.3; official `main/target_train.py` (the start of every epoch):

  F_bar = (1/E) sum_e F_e               (the EMA experts' L2-normalised eval features, averaged
                                         without re-normalisation)
  (centroids, y) = k-means(F_bar, k)    (the pseudo labels)
  W_e = centroids / ||centroids||       (row-wise; every student's and teacher's classifier)
  J_e = j_scatter(F_e, k-means(F_e, k)) (each expert's OWN clustering, not the consensus one)
  a = E * J / sum(J)                    (`reid.expert_authority`)

The release clusters with an unseeded scikit-learn MiniBatchKMeans (max_iter 100, batch 100,
init_size 1500); here every k-means is `reid.kmeans` (greedy k-means++ and Lloyd iterations on
the device) seeded by the epoch key, run e + 1 of the epoch for expert e's own clustering.
Used by `jaxcompress.methods.mebnet.MEBNet`'s host hooks.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress import reid
from jaxcompress.errors import ConfigError


@dataclasses.dataclass
class BrainstormTargets:
  """One epoch's targets.

  Attributes:
    labels: (N,) int32 pseudo labels of the consensus clustering.
    centroids: (k, D) consensus centroids (of F_bar).
    classifiers: per expert, the (k, D) L2-normalised rows its classifier is set to.
    scatter: (E,) J of each expert's own clustering (ones when not computed).
    authority: (E,) float32 authorities, mean 1.
  """
  labels: np.ndarray
  centroids: np.ndarray
  classifiers: list[np.ndarray]
  scatter: np.ndarray
  authority: np.ndarray


def _l2_rows(x: np.ndarray) -> np.ndarray:
  """`sklearn.preprocessing.normalize(x, axis=1)`: rows over their L2 norm (zero rows stay 0)."""
  norm = np.linalg.norm(x, axis=1, keepdims=True)
  return x / np.where(norm > 0, norm, 1.0)


def cluster_means(features: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
  """(k, D) mean of the rows of each cluster 0..k-1 (zeros for an empty cluster)."""
  sums = np.zeros((k, features.shape[1]), np.float64)
  np.add.at(sums, labels, features)
  counts = np.bincount(labels, minlength=k)[:, None]
  return (sums / np.maximum(counts, 1)).astype(features.dtype)


def brainstorm_targets(features: Sequence[np.ndarray], k: int, key: jax.Array, *,
                       iterations: int = 100, scatter: bool = True,
                       centroids: str = "consensus") -> BrainstormTargets:
  """The targets of one adaptation epoch (module docstring).

  Args:
    features: E arrays (N, D), each expert's EMA eval features of the target train split.
    k: number of clusters.
    key: the epoch's PRNG key.
    iterations: Lloyd iterations of every k-means.
    scatter: compute the authorities from J (False: all ones, the release's `--scatter 0`).
    centroids: "consensus" (the release: every classifier from the consensus centroids) or
      "own" (expert e's classifier from the means of F_e over the consensus clusters).

  Returns:
    A `BrainstormTargets`.
  """
  feats = [np.asarray(f, np.float32) for f in features]
  shapes = {f.shape for f in feats}
  if len(shapes) != 1 or len(next(iter(shapes))) != 2:
    raise ConfigError(f"MEB-Net averages the experts' features, which must share one (N, D) "
                      f"shape; got {[f.shape for f in feats]}. Give every expert the same "
                      "head.num_features (or duplicate DenseNet's pooled features).")
  if centroids not in ("consensus", "own"):
    raise ConfigError(f"centroids must be 'consensus' or 'own', got {centroids!r}.")
  consensus = sum(feats) / len(feats)
  centres, labels, _ = reid.kmeans(jnp.asarray(consensus), k, key, iterations=iterations)
  centres, labels = np.asarray(centres), np.asarray(labels, np.int32)
  if centroids == "consensus":
    classifiers = [_l2_rows(centres)] * len(feats)
  else:
    classifiers = [_l2_rows(cluster_means(f, labels, k)) for f in feats]
  j = np.ones(len(feats), np.float32)
  if scatter:
    for e, f in enumerate(feats):
      _, own, _ = reid.kmeans(jnp.asarray(f), k, jax.random.fold_in(key, e + 1),
                              iterations=iterations)
      j[e] = reid.j_scatter(f, np.asarray(own))
  authority = np.asarray(reid.expert_authority(j), np.float32)
  return BrainstormTargets(labels=labels, centroids=centres, classifiers=classifiers,
                           scatter=j, authority=authority)


def with_classifier(params: dict[str, Any], kernel: np.ndarray,
                    put: Callable[[Any, jax.Array], jax.Array]) -> dict[str, Any]:
  """An expert's parameters with its classifier kernel replaced, placed by `put(value, like)`."""
  old = params["classifier"]["kernel"]
  if tuple(kernel.shape) != tuple(old.shape):
    raise ConfigError(f"Centroids give a classifier of shape {kernel.shape} but the expert's is "
                      f"{old.shape}; its eval feature size must equal the classifier input.")
  return {**params, "classifier": {**params["classifier"], "kernel": put(kernel, old)}}


def cluster_metrics(result: BrainstormTargets, names: Sequence[str],
                    train_source: Any = None) -> dict[str, float]:
  """Logged values: clusters in use, each expert's J and authority, and the NMI of the pseudo
  labels against the source's identity labels when it has them (pseudo-label quality)."""
  metrics = {"clusters": float(len(np.unique(result.labels)))}
  for name, j, a in zip(names, result.scatter, result.authority):
    metrics[f"scatter_{name}"] = float(j)
    metrics[f"authority_{name}"] = float(a)
  truth = getattr(train_source, "labels", None)
  if truth is not None and len(truth) == len(result.labels):
    from sklearn import metrics as sk_metrics  # pylint: disable=g-import-not-at-top
    metrics["nmi"] = float(sk_metrics.normalized_mutual_info_score(np.asarray(truth),
                                                                   result.labels))
  return metrics


def retrieval_scores(query: dict[str, np.ndarray], gallery: dict[str, np.ndarray],
                     name: str) -> dict[str, float]:
  """mAP and rank-1 of features `name` (Euclidean on L2-normalised features, the standard
  protocol of `reid.evaluate`, as the "retrieval" evaluator)."""
  qf, gf = (np.asarray(o[name], np.float64) for o in (query, gallery))
  qf = qf / np.maximum(np.linalg.norm(qf, axis=1, keepdims=True), 1e-12)
  gf = gf / np.maximum(np.linalg.norm(gf, axis=1, keepdims=True), 1e-12)
  dist = np.sqrt(np.maximum((qf**2).sum(1)[:, None] + (gf**2).sum(1)[None] - 2 * qf @ gf.T,
                            1e-12))
  mean_ap, cmc = reid.evaluate(dist, query["label"], gallery["label"], query["camera"],
                               gallery["camera"], topk=1)
  return {"mAP": float(mean_ap), "rank1": float(cmc[0])}
