"""k-means on the accelerator, for the pseudo labels of unsupervised re-identification.

Lloyd's algorithm ("Least squares quantization in PCM", Lloyd, 1982) seeded with k-means++
("k-means++: The Advantages of Careful Seeding", Arthur and Vassilvitskii, SODA 2007), written
to reproduce scikit-learn's `KMeans(algorithm="lloyd")` step for step where that is
deterministic (https://github.com/scikit-learn/scikit-learn, `sklearn/cluster/_kmeans.py`):

* the data are centred on their mean first (scikit-learn does the same for precision), and the
  centroids moved back at the end;
* initialisation "k-means++" is scikit-learn's GREEDY k-means++ (`_kmeans_plusplus`): the first
  centre uniformly at random; each next one from `n_local_trials` (default 2 + floor(ln k))
  candidates sampled with probability proportional to D(x)**2, the squared distance to the
  nearest centre chosen so far, keeping the candidate that most lowers the potential
  sum_x D(x)**2;
* each Lloyd iteration assigns every point to its nearest centroid (argmin of
  ||c||**2 - 2 x.c, lowest index on ties) and moves each centroid to the mean of its points.
  An EMPTY cluster is re-seeded as scikit-learn does (`_relocate_empty_clusters_dense`): the
  points farthest from their assigned centroids are moved into the empty clusters (the farthest
  to the empty cluster of lowest index, and so on; scikit-learn pairs them in an unspecified
  order) and removed from the sums of their old clusters;
* a fixed number of iterations (no tolerance test: after convergence an iteration changes
  nothing), then a last assignment gives the labels and the inertia
  sum_x ||x - c_label(x)||**2.

Distances use the matrix-product expansion at HIGHEST precision, over chunks of rows so that no
(n, k) matrix larger than the chunk is formed; centroid sums are one-hot matrix products, so the
result is deterministic on every backend. Everything runs under one `jax.jit` with `k`,
`iterations`, `n_init`, `n_local_trials`, `chunk_size` and the init mode static.

Example:
  >>> centroids, labels, inertia = kmeans(features, 500, jax.random.key(0), iterations=100)
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST
# Default bound on the entries of one chunk's (rows, k) distance matrix.
_CHUNK_ENTRIES = 1 << 24
INITS = ("k-means++", "random")


def _chunks(x: jax.Array, chunk: int) -> tuple[jax.Array, jax.Array]:
  """x padded with zero rows to a multiple of chunk, as (n_chunks, chunk, D), and row validity."""
  n = x.shape[0]
  pad = -n % chunk
  valid = jnp.arange(n + pad) < n
  x = jnp.pad(x, ((0, pad), (0, 0)))
  return x.reshape(-1, chunk, x.shape[1]), valid.reshape(-1, chunk)


def _assign(xc: jax.Array, valid: jax.Array, centres: jax.Array, n: int):
  """Nearest centroid of every row, its exact squared distance, and the per-cluster sums.

  Returns (labels (n,), sq_dist (n,), sums (k, D), counts (k,)).
  """
  k = centres.shape[0]
  c_sq = jnp.sum(centres * centres, axis=1)

  def body(carry, inp):
    sums, counts = carry
    x, v = inp
    # ||x||**2 is the same for every centroid of a row: left out of the argmin, as scikit-learn.
    score = c_sq[None, :] - 2 * jnp.matmul(x, centres.T, precision=_HIGHEST)
    lab = jnp.argmin(score, axis=1)
    diff = x - centres[lab]
    sq = jnp.sum(diff * diff, axis=1)
    onehot = (lab[:, None] == jnp.arange(k)[None, :]).astype(x.dtype) * v[:, None]
    sums = sums + jnp.matmul(onehot.T, x, precision=_HIGHEST)
    return (sums, counts + jnp.sum(onehot, axis=0)), (lab, sq)

  init = (jnp.zeros(centres.shape, centres.dtype), jnp.zeros((k,), centres.dtype))
  (sums, counts), (labels, sq) = jax.lax.scan(body, init, (xc, valid))
  return labels.reshape(-1)[:n].astype(jnp.int32), sq.reshape(-1)[:n], sums, counts


def _lloyd_update(x, labels, sq, sums, counts):
  """New centroids from the sums, after re-seeding empty clusters at the farthest points."""
  k = sums.shape[0]
  n_far = min(k, x.shape[0])
  empty = counts == 0
  n_empty = jnp.sum(empty)
  _, far = jax.lax.top_k(sq, n_far)  # farthest first, ties to the lower index
  use = (jnp.arange(n_far) < n_empty).astype(x.dtype)
  sums = sums.at[labels[far]].add(-use[:, None] * x[far])
  counts = counts.at[labels[far]].add(-use)
  # The r-th empty cluster (by index) takes the r-th farthest point.
  src = far[jnp.clip(jnp.cumsum(empty) - 1, 0, n_far - 1)]
  sums = jnp.where(empty[:, None], x[src], sums)
  counts = jnp.where(empty, 1, counts)
  # A cluster emptied by the re-seeding keeps its (zero) sum, as scikit-learn's _average_centers.
  pos = counts > 0
  return jnp.where(pos[:, None], sums / jnp.where(pos, counts, 1)[:, None], sums)


def _greedy_kmeans_pp(x: jax.Array, first: jax.Array, uniforms: jax.Array) -> jax.Array:
  """scikit-learn's greedy k-means++ given its random draws.

  Args:
    x: (n, D) points.
    first: index of the first centre.
    uniforms: (k - 1, trials) uniform [0, 1) draws; candidate t of centre c is the first point
      whose cumulative D**2 reaches uniforms[c - 1, t] times the current potential.

  Returns:
    (k,) int32 indices of the chosen centres.
  """
  n = x.shape[0]
  k = uniforms.shape[0] + 1
  x_sq = jnp.sum(x * x, axis=1)

  def sq_dist(rows):
    d = x_sq[rows][:, None] - 2 * jnp.matmul(x[rows], x.T, precision=_HIGHEST) + x_sq[None, :]
    return jnp.maximum(d, 0)

  closest = sq_dist(first[None])[0]
  idx = jnp.zeros((k,), jnp.int32).at[0].set(first)

  def body(c, carry):
    idx, closest = carry
    pot = jnp.sum(closest)
    cand = jnp.searchsorted(jnp.cumsum(closest), uniforms[c - 1] * pot, side="left",
                            method="compare_all")
    cand = jnp.minimum(cand, n - 1)
    d = jnp.minimum(closest[None, :], sq_dist(cand))
    best = jnp.argmin(jnp.sum(d, axis=1))
    return idx.at[c].set(cand[best].astype(jnp.int32)), d[best]

  idx, _ = jax.lax.fori_loop(1, k, body, (idx, closest))
  return idx


def _kmeans_single(x, key, init_centres, k, iterations, init, n_local_trials, chunk_size):
  n = x.shape[0]
  if init == "k-means++":
    k_first, k_unif = jax.random.split(key)
    first = jax.random.randint(k_first, (), 0, n)
    uniforms = jax.random.uniform(k_unif, (k - 1, n_local_trials), x.dtype)
    centres = x[_greedy_kmeans_pp(x, first, uniforms)]
  elif init == "random":
    centres = x[jax.random.choice(key, n, (k,), replace=False)]
  else:
    centres = init_centres
  xc, valid = _chunks(x, chunk_size)

  def step(_, centres):
    labels, sq, sums, counts = _assign(xc, valid, centres, n)
    return _lloyd_update(x, labels, sq, sums, counts)

  centres = jax.lax.fori_loop(0, iterations, step, centres)
  labels, sq, _, _ = _assign(xc, valid, centres, n)
  return centres, labels, jnp.sum(sq)


def kmeans(
    features: jax.Array,
    k: int,
    key: jax.Array,
    iterations: int = 100,
    n_init: int = 1,
    init: str | jax.Array = "k-means++",
    n_local_trials: int | None = None,
    chunk_size: int | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """k-means++-seeded Lloyd k-means, the best of `n_init` runs by inertia.

  Minimises the inertia sum_i ||x_i - c_{label_i}||**2 (Lloyd 1982) from greedy k-means++
  seeds (Arthur and Vassilvitskii 2007, as scikit-learn's `_kmeans_plusplus`).

  Args:
    features: (n, D) floating points; computed in their dtype.
    k: number of clusters (static), 1 <= k <= n.
    key: PRNG key; run r (0-based) uses `jax.random.fold_in(key, r)`.
    iterations: Lloyd iterations (static; scikit-learn's default max_iter is 300 with a
      tolerance stop, MEB-Net's MiniBatchKMeans 100).
    n_init: independent seedings (static); the run of lowest inertia is returned.
    init: "k-means++" (greedy, the default), "random" (k distinct points uniformly), or a (k, D)
      array of initial centroids (then n_init must be 1 and key is unused).
    n_local_trials: candidates per k-means++ centre (static); None: 2 + floor(ln k), as
      scikit-learn. 1 gives the plain D**2 sampling of the paper.
    chunk_size: rows per distance block (static); None: as many as keep a block's (rows, k)
      matrix under 2**24 entries.

  Returns:
    (centroids (k, D), labels (n,) int32, inertia scalar), in the dtype of features; labels and
    inertia are from a last assignment to the returned centroids.
  """
  x = jnp.asarray(features)
  if x.ndim != 2 or not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(
        f"kmeans expects a floating (n, D) feature matrix, got shape {x.shape} and dtype "
        f"{x.dtype}; flatten to one row per sample and cast with .astype(jnp.float32).")
  n, dim = x.shape
  if not isinstance(k, int) or not 1 <= k <= n:
    raise ValueError(f"kmeans expects k as a Python int in [1, {n}] (the number of points), got "
                     f"{k!r}.")
  if not isinstance(iterations, int) or iterations < 0:
    raise ValueError(f"kmeans expects iterations as a Python int >= 0, got {iterations!r}.")
  if not isinstance(n_init, int) or n_init < 1:
    raise ValueError(f"kmeans expects n_init as a Python int >= 1, got {n_init!r}.")
  init_centres = None
  if not isinstance(init, str):
    init_centres = jnp.asarray(init, x.dtype)
    if init_centres.shape != (k, dim) or n_init != 1:
      raise ValueError(
          f"kmeans expects init centroids of shape ({k}, {dim}) with n_init=1, got shape "
          f"{init_centres.shape} and n_init={n_init}; pass one (k, D) array per call.")
    init = "array"
  elif init not in INITS:
    raise ValueError(f"kmeans init must be one of {INITS} or a (k, D) array, got {init!r}.")
  if n_local_trials is None:
    n_local_trials = 2 + int(math.log(k))
  if not isinstance(n_local_trials, int) or n_local_trials < 1:
    raise ValueError(f"kmeans expects n_local_trials >= 1, got {n_local_trials!r}.")
  if chunk_size is None:
    chunk_size = max(1, min(n, _CHUNK_ENTRIES // k))
  if not isinstance(chunk_size, int) or chunk_size < 1:
    raise ValueError(f"kmeans expects chunk_size as a Python int >= 1, got {chunk_size!r}.")
  chunk_size = min(chunk_size, n)

  if init_centres is None:
    init_centres = jnp.zeros((k, dim), x.dtype)
  return _kmeans(x, key, init_centres, k=k, iterations=iterations, n_init=n_init, init=init,
                 n_local_trials=n_local_trials, chunk_size=chunk_size)


@functools.partial(jax.jit, static_argnames=("k", "iterations", "n_init", "init",
                                             "n_local_trials", "chunk_size"))
def _kmeans(x, key, init_centres, k, iterations, n_init, init, n_local_trials, chunk_size):
  # Centred data: the expansion ||c||**2 - 2 x.c loses fewer digits (as scikit-learn).
  mean = jnp.mean(x, axis=0)
  xm = x - mean
  run = functools.partial(_kmeans_single, k=k, iterations=iterations, init=init,
                          n_local_trials=n_local_trials, chunk_size=chunk_size)
  if init == "array":
    centres, labels, inertia = run(xm, key, init_centres - mean)
  else:
    # fold_in, not split: run r is the same for every n_init > r, so more runs never do worse.
    keys = jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(n_init))
    centres, labels, inertia = jax.lax.map(lambda kk: run(xm, kk, init_centres), keys)
    best = jnp.argmin(inertia)
    centres, labels, inertia = centres[best], labels[best], inertia[best]
  return centres + mean, labels, inertia
