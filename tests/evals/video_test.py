"""Tests for the video evaluators' metrics against loop references."""
from __future__ import annotations

import numpy as np

from jaxcompress.evals import video


def _loop_video_accuracy(logits, labels, videos):
  per_video = {}
  for l, y, v in zip(logits, labels, videos):
    p = np.exp(l - l.max())
    p /= p.sum()
    acc, _ = per_video.get(v, (np.zeros_like(p), y))
    per_video[v] = (acc + p, y)
  correct = {v: int(np.argmax(p) == y) for v, (p, y) in per_video.items()}
  classes = {}
  for v, (_, y) in per_video.items():
    classes.setdefault(y, []).append(correct[v])
  return (np.mean(list(correct.values())), np.mean([np.mean(c) for c in classes.values()]))


def test_video_accuracies_match_a_loop_reference():
  rng = np.random.default_rng(0)
  videos = np.repeat(np.arange(30), 3)
  labels = np.repeat(rng.integers(0, 5, 30), 3)
  logits = rng.normal(size=(90, 5)) + 1.5 * np.eye(5)[labels]
  out = video.video_accuracies(logits, labels, videos)
  want_video, want_class = _loop_video_accuracy(logits, labels, videos)
  np.testing.assert_allclose(out["clip_accuracy"], np.mean(logits.argmax(1) == labels))
  np.testing.assert_allclose(out["video_accuracy"], want_video)
  np.testing.assert_allclose(out["mean_class_accuracy"], want_class)
  single = video.video_accuracies(logits, labels, None)
  assert single["video_accuracy"] == single["clip_accuracy"]


def test_video_accuracy_averages_probabilities_not_votes():
  # Two clips vote class 1 weakly, one votes class 0 strongly: the mean softmax picks class 0.
  logits = np.array([[0.0, 0.2], [0.0, 0.2], [5.0, 0.0]])
  out = video.video_accuracies(logits, np.array([0, 0, 0]), np.array([4, 4, 4]))
  assert out["video_accuracy"] == 1.0 and np.isclose(out["clip_accuracy"], 1 / 3)


def test_retrieval_recall_matches_a_loop_reference():
  rng = np.random.default_rng(1)
  q, g = rng.normal(size=(20, 8)), rng.normal(size=(50, 8))
  ql, gl = rng.integers(0, 6, 20), rng.integers(0, 6, 50)
  out = video.retrieval_recall(q, ql, g, gl, ranks=(1, 5, 10))
  for k in (1, 5, 10):
    hits = 0
    for i in range(20):
      sims = [float(q[i] @ g[j] / np.linalg.norm(q[i]) / np.linalg.norm(g[j])) for j in range(50)]
      top = sorted(range(50), key=lambda j: -sims[j])[:k]
      hits += any(gl[j] == ql[i] for j in top)
    np.testing.assert_allclose(out[f"recall@{k}"], hits / 20)
  # Identical features and labels: every query finds itself first.
  assert video.retrieval_recall(g, gl, g, gl, ranks=(1,))["recall@1"] == 1.0
