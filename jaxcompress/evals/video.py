"""Video evaluators: clip, video and mean-class accuracy, and clip retrieval recall at k.

* `video_classification`: logits of every clip (`method.predict(state, batch)["logits"]`) with
  the clip's label and `video_index` (`data.video.MultiClipSource`: several clips per video).
  clip_accuracy is top-1 over clips; video_accuracy averages the softmax of a video's clips
  first (the official DSM test averages the predictions of its windows); mean_class_accuracy is
  the mean over classes of the per-class video accuracy (what the released `src/test.py`
  prints). Without `video_index` every clip is its own video.
* `video_retrieval` (`splits=(query, gallery)`, the protocol of the DSM C3D retrieval table and
  of VCOP, Xu et al. CVPR 2019: test clips query the train clips): pooled features
  (`predict(...)["features"]`), cosine similarity, and recall@k = the fraction of queries with
  at least one same-class clip among their k nearest gallery clips, for k in `ranks`
  (default 1, 5, 10, 20, 50).
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress import evals

DEFAULT_RANKS = (1, 5, 10, 20, 50)


def video_accuracies(logits: np.ndarray, labels: np.ndarray, video_index: np.ndarray | None
                     ) -> dict[str, float]:
  """Clip accuracy, video accuracy (mean softmax over a video's clips) and mean class accuracy.

  Args:
    logits: (N, K) clip logits.
    labels: (N,) clip labels (equal within a video).
    video_index: (N,) video of each clip, or None (one clip per video).

  Returns:
    {"clip_accuracy", "video_accuracy", "mean_class_accuracy"}.
  """
  logits = np.asarray(logits, np.float64)
  labels = np.asarray(labels)
  clip_acc = float(np.mean(np.argmax(logits, -1) == labels))
  if video_index is None:
    video_index = np.arange(len(labels))
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  videos, inverse = np.unique(np.asarray(video_index), return_inverse=True)
  summed = np.zeros((len(videos), logits.shape[1]))
  np.add.at(summed, inverse, probs)
  video_labels = np.zeros(len(videos), labels.dtype)
  video_labels[inverse] = labels
  correct = np.argmax(summed, -1) == video_labels
  per_class = [np.mean(correct[video_labels == c]) for c in np.unique(video_labels)]
  return {"clip_accuracy": clip_acc, "video_accuracy": float(np.mean(correct)),
          "mean_class_accuracy": float(np.mean(per_class))}


def retrieval_recall(query: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray,
                     gallery_labels: np.ndarray, ranks: tuple[int, ...] = DEFAULT_RANKS
                     ) -> dict[str, float]:
  """Recall@k of clip retrieval by cosine similarity (ties: lower gallery index first).

  Args:
    query, gallery: (M, D) and (N, D) features.
    query_labels, gallery_labels: (M,) and (N,) classes.
    ranks: the k values.

  Returns:
    {"recall@k": fraction of queries with a same-class clip among their k nearest}.
  """
  q = np.asarray(query, np.float64)
  g = np.asarray(gallery, np.float64)
  q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
  g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
  order = np.argsort(-(q @ g.T), axis=1, kind="stable")
  hits = np.asarray(gallery_labels)[order] == np.asarray(query_labels)[:, None]
  first = np.where(hits.any(1), hits.argmax(1), np.inf)
  return {f"recall@{k}": float(np.mean(first < k)) for k in ranks}


class VideoClassification(evals.Evaluator):
  """Clip, video and mean-class accuracy; config `label_key` (default "label")."""

  combine = {"logits": evals.GATHER, "labels": evals.GATHER, "video_index": evals.GATHER}

  def batch_outputs(self, state: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    logits = self.method.predict(state, batch)["logits"].astype(jnp.float32)
    labels = batch[self.cfg.get("label_key", "label")]
    video = batch.get("video_index", jnp.full(labels.shape, -1, jnp.int32))
    return {"logits": logits, "labels": labels, "video_index": video}

  def finalize(self, outputs: Mapping[str, evals.Outputs]) -> dict[str, Any]:
    split = outputs[self.splits[0]]
    video = np.asarray(split["video_index"])
    return video_accuracies(split["logits"], split["labels"],
                            None if np.all(video < 0) else video)


class VideoRetrieval(evals.Evaluator):
  """Recall@k of `splits=(query, gallery)` clips; config `ranks`, `label_key`."""

  combine = {"features": evals.GATHER, "labels": evals.GATHER}

  def batch_outputs(self, state: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    features = self.method.predict(state, batch)["features"].astype(jnp.float32)
    return {"features": features, "labels": batch[self.cfg.get("label_key", "label")]}

  def finalize(self, outputs: Mapping[str, evals.Outputs]) -> dict[str, Any]:
    query, gallery = (outputs[s] for s in self.splits[:2])
    ranks = tuple(int(k) for k in self.cfg.get("ranks", DEFAULT_RANKS))
    return retrieval_recall(query["features"], query["labels"], gallery["features"],
                            gallery["labels"], ranks)
