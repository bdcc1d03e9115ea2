"""Re-identification retrieval metrics: mean average precision and the CMC curve.

For each query the gallery is ranked by increasing distance (ties broken by gallery index), the
entries with the query's identity AND camera are removed (the Market-1501 protocol, Zheng et al.
2015: same-camera shots of the same person are too easy to count), and `r_1 < ... < r_n` are the
1-based ranks of the n remaining true matches in the filtered list. A query with no remaining
match has no defined AP and is skipped.

Two protocols:
  * "standard" (open-reid, MEB-Net https://github.com/YunpengZhai/MEB-Net `evaluators.py`,
    Market-1501 settings): AP = (1/n) sum_k k / r_k, the area under the step precision-recall
    curve (what scikit-learn's `average_precision_score` computes when there are no ties);
    cmc[r - 1] = fraction of queries whose first match has rank <= r.
  * "ddan" (the official DDAN evaluator, for comparing with its tables): AP = the trapezoid area
    under the precision-recall curve, (1/n) sum_k (p_{k-1} + k / r_k) / 2 with
    p_{k-1} = (k - 1) / (r_k - 1) (1 when r_k = 1); the CMC curve averages over all matches of a
    query: match k adds 1/n at 0-based entry r_k - k (the number of non-matches ranked before
    it), then the curve is the cumulative sum, averaged over queries.

The returned `cmc` is indexed by true rank in both protocols: rank-r accuracy is `cmc[r - 1]`.
DDAN's printed "rank-5" and "rank-10" are that evaluator's `CMC[1]` and `CMC[5]`, i.e. ranks 2
and 6 here: compare them with `cmc[1]` and `cmc[5]`, not `cmc[4]` and `cmc[9]`.

Plain NumPy on host, vectorised over blocks of queries (a 3k x 20k distance matrix takes a few
seconds, dominated by the sort).

Example:
  >>> mAP, cmc = evaluate(dist, q_ids, g_ids, q_cams, g_cams)
  >>> print(f"mAP {mAP:.1%}  rank-1 {cmc[0]:.1%}  rank-5 {cmc[4]:.1%}")
"""
from __future__ import annotations

import numpy as np

from jaxcompress.errors import ConfigError

PROTOCOLS = ("standard", "ddan")

# Queries per vectorised block: bounds the (block, gallery) temporaries to ~8M entries each.
_BLOCK_ENTRIES = 1 << 23


def _as_vector(x, name: str, length: int, what: str) -> np.ndarray:
  """`x` as a 1-D array of `length` entries, or ValueError naming the argument."""
  x = np.asarray(x)
  if x.ndim != 1 or x.shape[0] != length:
    raise ValueError(
        f"evaluate: {name} must be a 1-D array with one entry per {what} ({length}), got shape "
        f"{x.shape}; distmat is (num_query, num_gallery).")
  return x


def _same_id_entries(dist: np.ndarray, q_ids: np.ndarray,
                     g_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Ranking of each row and the (row, position) of its same-identity entries, in rank order.

  Equal to a row-wise `argsort(kind="stable")` wherever it matters, about 5x faster: NumPy's
  stable sort of floats is a merge sort, its default introsort is much faster but orders equal
  distances arbitrarily. The arbitrary order among tied non-matches changes no rank, so only rows
  where a same-identity entry is tied with a neighbour are sorted again with the stable sort.

  Returns:
    (order, rows, cols): order (Q, G) the ranking; rows, cols the row-major coordinates in
    `order` of the entries whose gallery identity equals the query's.
  """
  order = np.argsort(dist, axis=1)
  rows, cols = np.nonzero(g_ids[order] == q_ids[:, None])
  value = dist[rows, order[rows, cols]]
  num_g = dist.shape[1]
  left = dist[rows, order[rows, np.maximum(cols - 1, 0)]]
  right = dist[rows, order[rows, np.minimum(cols + 1, num_g - 1)]]
  tied = ((cols > 0) & (left == value)) | ((cols < num_g - 1) & (right == value))
  if tied.any():
    redo = np.unique(rows[tied])
    order[redo] = np.argsort(dist[redo], axis=1, kind="stable")
    rows, cols = np.nonzero(g_ids[order] == q_ids[:, None])
  return order, rows, cols


def _block_stats(dist: np.ndarray, q_ids: np.ndarray, q_cams: np.ndarray, g_ids: np.ndarray,
                 g_cams: np.ndarray, topk: int, protocol: str) -> tuple[float, np.ndarray, int]:
  """Sums of AP and of per-query CMC curves over the valid queries of one block.

  Returns:
    (sum of AP, (topk,) sum of CMC curves, number of valid queries).
  """
  num_q, num_g = dist.shape
  # Same-identity entries are few per row: work on their coordinates, not on dense masks.
  order, rows, cols = _same_id_entries(dist, q_ids, g_ids)
  same_cam = g_cams[order[rows, cols]] == q_cams[rows]
  good_rows, good_cols = rows[~same_cam], cols[~same_cam]
  junk_rows, junk_cols = rows[same_cam], cols[same_cam]
  n_good = np.bincount(good_rows, minlength=num_q)
  num_valid = int((n_good > 0).sum())
  if num_valid == 0:
    return 0.0, np.zeros(topk), 0

  # r: 1-based rank in the filtered list = 1-based position - junk entries ranked before it
  # (junk of the same row, found by searching the row-major flat indices).
  good_flat = good_rows * num_g + good_cols
  junk_flat = junk_rows * num_g + junk_cols
  junk_before = (np.searchsorted(junk_flat, good_flat)
                 - np.searchsorted(junk_flat, good_rows * num_g))
  r = (good_cols + 1 - junk_before).astype(np.float64)
  # k: 1-based index of the match among its query's matches.
  row_start = np.cumsum(n_good) - n_good
  k = (np.arange(good_rows.size) - row_start[good_rows] + 1).astype(np.float64)
  n = n_good[good_rows].astype(np.float64)

  precision = k / r
  if protocol == "standard":
    ap_terms = precision / n
  else:
    # Precision just before match k (recall (k-1)/n): (k-1)/(r_k-1); 1 at the top of the list.
    prev = np.where(r > 1, (k - 1) / np.maximum(r - 1, 1), 1.0)
    ap_terms = 0.5 * (prev + precision) / n
  ap_sum = float(ap_terms.sum())

  if protocol == "standard":
    r1 = r[k == 1].astype(np.int64)  # first match of each valid query
    hist = np.bincount(r1[r1 <= topk] - 1, minlength=topk).astype(np.float64)
  else:
    entry = (r - k).astype(np.int64)  # non-matches ranked before match k
    inside = entry < topk
    hist = np.bincount(entry[inside], weights=1.0 / n[inside], minlength=topk)
  return ap_sum, np.cumsum(hist), num_valid


def evaluate(distmat: np.ndarray, query_ids: np.ndarray, gallery_ids: np.ndarray,
             query_cams: np.ndarray, gallery_cams: np.ndarray, topk: int = 100,
             protocol: str = "standard") -> tuple[float, np.ndarray]:
  """Mean average precision and CMC curve of a query-gallery distance matrix.

  See the module docstring for the two protocols. Rank-r accuracy is `cmc[r - 1]` in both; DDAN's
  printed "rank-5/rank-10" correspond to `cmc[1]` / `cmc[5]`.

  Args:
    distmat: (num_query, num_gallery) distances; smaller is more similar. Ties are ranked by
      gallery index.
    query_ids: (num_query,) identity labels (any comparable type).
    gallery_ids: (num_gallery,) identity labels.
    query_cams: (num_query,) camera labels.
    gallery_cams: (num_gallery,) camera labels.
    topk: length of the returned CMC curve.
    protocol: "standard" (open-reid / MEB-Net / Market-1501) or "ddan" (the official DDAN
      evaluator).

  Returns:
    (mAP, cmc): mAP a float in [0, 1], cmc a (topk,) float64 array, both averaged over the
    queries that keep at least one true match after the same-identity-same-camera removal.

  Raises:
    ValueError: the shapes disagree, or no query has a true match in the gallery.
    ConfigError: unknown protocol or topk < 1.
  """
  if protocol not in PROTOCOLS:
    raise ConfigError(
        f"evaluate: unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}.")
  if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) or topk < 1:
    raise ConfigError(f"evaluate: topk must be a positive integer, got {topk!r}.")
  topk = int(topk)
  distmat = np.asarray(distmat)
  if distmat.ndim != 2:
    raise ValueError(
        f"evaluate: distmat must be 2-D (num_query, num_gallery), got shape {distmat.shape}.")
  num_q, num_g = distmat.shape
  if np.isnan(distmat).any():
    raise ValueError(
        "evaluate: distmat contains NaN; the features are not finite (check the model's "
        "output) and NaN distances have no rank.")
  query_ids = _as_vector(query_ids, "query_ids", num_q, "query")
  query_cams = _as_vector(query_cams, "query_cams", num_q, "query")
  gallery_ids = _as_vector(gallery_ids, "gallery_ids", num_g, "gallery entry")
  gallery_cams = _as_vector(gallery_cams, "gallery_cams", num_g, "gallery entry")

  block = max(1, _BLOCK_ENTRIES // max(num_g, 1))
  ap_sum, cmc_sum, num_valid = 0.0, np.zeros(topk), 0
  for start in range(0, num_q, block):
    stop = min(start + block, num_q)
    a, c, v = _block_stats(distmat[start:stop], query_ids[start:stop], query_cams[start:stop],
                           gallery_ids, gallery_cams, topk, protocol)
    ap_sum += a
    cmc_sum += c
    num_valid += v
  if num_valid == 0:
    raise ValueError(
        "evaluate: no query has a true match in the gallery (same identity, different camera); "
        "check that query and gallery identities and cameras come from the same split.")
  return ap_sum / num_valid, cmc_sum / num_valid
