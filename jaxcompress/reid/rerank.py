"""k-reciprocal re-ranking of a query-gallery distance matrix.

"Re-ranking Person Re-identification with k-reciprocal Encoding" (Zhong, Zheng, Cao and Li,
CVPR 2017, arXiv 1701.08398): Sec. 3.2 (k-reciprocal nearest neighbours, Eq. 4-6), Sec. 3.3
(Jaccard distance on the Gaussian-kernel encoding, Eq. 7-12, with local query expansion,
Eq. 13) and Eq. 14 (final distance). Semantics follow the widely used Python version of the
official code (https://github.com/zhunzhong07/person-re-ranking,
`python-version/re_ranking_ranklist.py`, `re_ranking`, also MEB-Net's `mebnet/utils/rerank.py`):

* the three matrices are stacked into one (N, N) matrix, N = num_query + num_gallery, SQUARED
  (open-reid / MEB-Net pass squared Euclidean distances, which are squared again), each column
  divided by its maximum, and the result transposed;
* R(i, k) = {j in the k + 1 nearest of i : i in the k + 1 nearest of j} (each point is its own
  nearest neighbour); R(i, k1) is expanded by R(c, round(k1 / 2)) (NumPy's round half to even)
  for every c in R(i, k1) sharing more than 2/3 of R(c, round(k1 / 2)) with R(i, k1);
* V[i, j] = exp(-d[i, j]) / sum over the expanded set, query expansion V[i] <- mean of V over the
  k2 nearest of i (skipped when k2 == 1), Jaccard distance 1 - m / (2 - m) with
  m = sum_j min(V[q, j], V[g, j]), final = (1 - lambda) Jaccard + lambda d.

Differences from the official code: ties in the initial ranking go to the lower index (the
official's default NumPy sort leaves them unspecified), and the computation stays in the dtype of
the inputs (at least float32; the official always casts to float32). V is held sparse, so memory
grows with N * k1 * k2 instead of N**2 (only the normalised (N, N) distance matrix is dense).

Host NumPy / SciPy, not jit-able.

Example:
  >>> d = re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3)
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

# Rows per vectorised block of the neighbour computations (bounds temporaries to ~10M entries).
_BLOCK_ENTRIES = 10_000_000


def _nearest(dist: np.ndarray, k: int) -> np.ndarray:
  """The k nearest columns of every row, ascending, ties to the lower index.

  Equal to `np.argsort(dist, kind="stable")[:, :k]`: a partial selection by `np.argpartition`,
  then a stable sort of the selected candidates; rows where the k-th value is tied with
  unselected columns are sorted fully.
  """
  n = dist.shape[1]
  k = min(k, n)
  out = np.empty((dist.shape[0], k), np.int64)
  block = max(1, _BLOCK_ENTRIES // max(n, 1))
  for start in range(0, dist.shape[0], block):
    d = dist[start:start + block]
    if k == n:
      out[start:start + block] = np.argsort(d, axis=1, kind="stable")
      continue
    part = np.argpartition(d, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(d, part, axis=1)
    # Sort candidates by (value, index): the stable order restricted to them.
    order = np.lexsort((part, vals), axis=1)
    idx = np.take_along_axis(part, order, axis=1)
    kth = np.take_along_axis(vals, order, axis=1)[:, -1]
    # A column outside the selection tied with the k-th value may precede a selected one.
    ties = np.count_nonzero(d <= kth[:, None], axis=1) > k
    if np.any(ties):
      idx[ties] = np.argsort(d[ties], axis=1, kind="stable")[:, :k]
    out[start:start + block] = idx
  return out


def _reciprocal(rank: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """(k + 1)-nearest lists of every point and the mask of their k-reciprocal members."""
  fwd = rank[:, :k + 1]
  mask = np.zeros(fwd.shape, bool)
  block = max(1, _BLOCK_ENTRIES // fwd.shape[1] ** 2)
  for start in range(0, fwd.shape[0], block):
    f = fwd[start:start + block]
    own = np.arange(start, start + f.shape[0])[:, None, None]
    # j in fwd(i) is reciprocal when i is among the k + 1 nearest of j.
    mask[start:start + block] = np.any(rank[f, :k + 1] == own, axis=-1)
  return fwd, mask


def _encoding(dist: np.ndarray, rank: np.ndarray, k1: int) -> sp.csr_matrix:
  """The sparse k-reciprocal Gaussian encoding V (Eq. 8 with the expansion of Eq. 6)."""
  n = dist.shape[0]
  half = int(np.around(k1 / 2.0))
  fwd, rmask = _reciprocal(rank, k1)
  hfwd, hmask = _reciprocal(rank, half)
  rows, cols = [], []
  kf = fwd.shape[1]
  block = max(1, _BLOCK_ENTRIES // (kf * kf * hfwd.shape[1]))
  for start in range(0, n, block):
    f, m = fwd[start:start + block], rmask[start:start + block]
    ids = np.arange(start, start + f.shape[0])
    cand_sets, cand_masks = hfwd[f], hmask[f]  # (b, kf, kh): R(c, half) of each candidate c
    # Members of R(c, half) that are also in R(i, k1).
    shared = np.any((cand_sets[..., None] == f[:, None, None, :]) & m[:, None, None, :], axis=-1)
    n_shared = np.count_nonzero(shared & cand_masks, axis=-1)
    size = np.count_nonzero(cand_masks, axis=-1)
    accept = m & (n_shared > 2.0 / 3 * size)
    rows.append(np.broadcast_to(ids[:, None], f.shape)[m])
    cols.append(f[m])
    take = accept[..., None] & cand_masks
    rows.append(np.broadcast_to(ids[:, None, None], cand_sets.shape)[take])
    cols.append(cand_sets[take])
  rows, cols = np.concatenate(rows), np.concatenate(cols)
  # Union of the sets: one entry per (row, column), in sorted order.
  key = np.unique(rows * n + cols)
  rows, cols = key // n, key % n
  weight = np.exp(-dist[rows, cols])
  indptr = np.searchsorted(rows, np.arange(n + 1))
  sums = np.bincount(rows, weights=weight, minlength=n).astype(dist.dtype)
  weight = weight / sums[rows]
  return sp.csr_matrix((weight, cols, indptr), shape=(n, n))


def _check_square(x: np.ndarray, n: int, name: str) -> None:
  if x.shape != (n, n):
    raise ValueError(
        f"re_ranking expects {name} of shape ({n}, {n}), got {x.shape}; pass q_g_dist "
        "(num_query, num_gallery), q_q_dist (num_query, num_query) and g_g_dist "
        "(num_gallery, num_gallery).")


def re_ranking(q_g_dist: np.ndarray, q_q_dist: np.ndarray, g_g_dist: np.ndarray, k1: int = 20,
               k2: int = 6, lambda_value: float = 0.3) -> np.ndarray:
  """k-reciprocal re-ranked query-gallery distances (Zhong et al. 2017, Eq. 14).

  Args:
    q_g_dist: (num_query, num_gallery) distances (squared inside, as the official does).
    q_q_dist: (num_query, num_query) distances among the queries.
    g_g_dist: (num_gallery, num_gallery) distances among the gallery.
    k1: k of the k-reciprocal sets (paper 20); the expansion uses round(k1 / 2).
    k2: size of the local query expansion (paper 6; 1 disables it).
    lambda_value: weight of the original distance in the final one (paper 0.3).

  Returns:
    (num_query, num_gallery) array `(1 - lambda) * jaccard + lambda * d`, d the normalised
    squared distance, in the promoted floating dtype of the inputs (at least float32).
  """
  q_g_dist, q_q_dist, g_g_dist = (np.asarray(x) for x in (q_g_dist, q_q_dist, g_g_dist))
  if q_g_dist.ndim != 2:
    raise ValueError(
        f"re_ranking expects q_g_dist as a 2-D (num_query, num_gallery) matrix, got shape "
        f"{q_g_dist.shape}.")
  nq, ng = q_g_dist.shape
  _check_square(q_q_dist, nq, "q_q_dist")
  _check_square(g_g_dist, ng, "g_g_dist")
  if int(k1) != k1 or k1 < 1 or int(k2) != k2 or k2 < 1:
    raise ValueError(
        f"re_ranking expects positive integer k1 and k2, got k1={k1!r}, k2={k2!r}; the paper "
        "uses k1=20, k2=6.")
  k1, k2 = int(k1), int(k2)
  dtype = np.result_type(q_g_dist, q_q_dist, g_g_dist, np.float32)
  if not np.issubdtype(dtype, np.floating):
    raise ValueError(f"re_ranking expects real distances, got dtype {dtype}.")

  dist = np.block([[q_q_dist, q_g_dist], [q_g_dist.T, g_g_dist]]).astype(dtype)
  dist = dist * dist
  dist = np.ascontiguousarray((dist / np.max(dist, axis=0)).T)
  n = dist.shape[0]
  rank = _nearest(dist, max(k1 + 1, k2))
  v = _encoding(dist, rank, k1)
  if k2 != 1:
    # Local query expansion (Eq. 13): each row becomes the mean of its k2 nearest rows.
    near = rank[:, :k2]
    kq = near.shape[1]  # k2, or n when k2 exceeds it
    qe = sp.csr_matrix(
        (np.full(n * kq, 1.0 / kq, dtype), near.ravel(), np.arange(0, n * kq + 1, kq)),
        shape=(n, n))
    v = (qe @ v).tocsr()
  v = v.astype(dtype)

  # Jaccard distance of each query to every point (Eq. 11-12), through the sparse columns of V.
  vq = v[:nq].tocsr()
  vc = v.tocsc()
  jaccard = np.empty((nq, n), dtype)
  for i in range(nq):
    cols = vq.indices[vq.indptr[i]:vq.indptr[i + 1]]
    vals = vq.data[vq.indptr[i]:vq.indptr[i + 1]]
    sub = vc[:, cols]
    mins = np.minimum(sub.data, np.repeat(vals, np.diff(sub.indptr)))
    overlap = np.bincount(sub.indices, weights=mins, minlength=n).astype(dtype)
    jaccard[i] = 1 - overlap / (2 - overlap)
  final = jaccard * (1 - lambda_value) + dist[:nq] * lambda_value
  return final[:, nq:].astype(dtype)
