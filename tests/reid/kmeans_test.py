"""Tests for jaxcompress.reid.kmeans: NumPy loop references, scikit-learn's KMeans, blobs."""
from __future__ import annotations

import functools
import importlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from jaxcompress import reid

# The package re-exports the function under the module's name.
kmeans_lib = importlib.import_module("jaxcompress.reid.kmeans")


def np_lloyd(x, centres, iterations):
  """Lloyd's iterations point by point, empty clusters re-seeded at the farthest points."""
  x = np.asarray(x, np.float64)
  c = np.array(centres, np.float64)
  n, k = x.shape[0], c.shape[0]

  def assign(c):
    labels, sq = np.zeros(n, int), np.zeros(n)
    for i in range(n):
      d = [((x[i] - c[j]) ** 2).sum() for j in range(k)]
      labels[i] = int(np.argmin(d))
      sq[i] = d[labels[i]]
    return labels, sq

  for _ in range(iterations):
    labels, sq = assign(c)
    sums, counts = np.zeros_like(c), np.zeros(k)
    for i in range(n):
      sums[labels[i]] += x[i]
      counts[labels[i]] += 1
    far = sorted(range(n), key=lambda i: (-sq[i], i))
    empty = [j for j in range(k) if counts[j] == 0]
    for r, j in enumerate(empty):
      p = far[r]
      sums[labels[p]] -= x[p]
      counts[labels[p]] -= 1
      sums[j], counts[j] = x[p], 1
    c = np.array([sums[j] / counts[j] if counts[j] > 0 else sums[j] for j in range(k)])
  labels, sq = assign(c)
  return c, labels, sq.sum()


def np_greedy_kmeans_pp(x, first, uniforms):
  """scikit-learn's greedy k-means++ loop with given draws."""
  x = np.asarray(x, np.float64)
  chosen = [int(first)]
  closest = ((x - x[first]) ** 2).sum(1)
  for u in uniforms:
    pot = closest.sum()
    cum = np.cumsum(closest)
    cands = [min(int(np.searchsorted(cum, v * pot, side="left")), len(x) - 1) for v in u]
    pots = [np.minimum(closest, ((x - x[c]) ** 2).sum(1)).sum() for c in cands]
    best = cands[int(np.argmin(pots))]
    chosen.append(best)
    closest = np.minimum(closest, ((x - x[best]) ** 2).sum(1))
  return np.array(chosen)


def _features(seed, n, d, latent=None):
  rng = np.random.default_rng(seed)
  if latent is None:
    return rng.normal(size=(n, d))
  # Overlapping latent groups plus noise: a problem with many comparable local minima.
  centres = rng.normal(size=(latent, d))
  return centres[rng.integers(0, latent, n)] + 0.8 * rng.normal(size=(n, d))


class KMeansTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_lloyd_matches_loop_reference_float64(self):
    """Given initial centroids, two of them far from the data (two empty clusters)."""
    with jax.enable_x64(True):
      x = _features(0, 60, 3, latent=4)
      init = x[[0, 5, 9, 20]].copy()
      init = np.concatenate([init, [[50.0, 50.0, 50.0], [-40.0, 0.0, 0.0]]])
      fn = self.variant(functools.partial(reid.kmeans, k=6, iterations=5, chunk_size=16))
      c, labels, inertia = fn(jnp.asarray(x), key=jax.random.key(0), init=jnp.asarray(init))
      rc, rl, ri = np_lloyd(x, init, 5)
      self.assertEqual(c.dtype, jnp.float64)
      self.assertEqual(labels.dtype, jnp.int32)
      np.testing.assert_array_equal(labels, rl)
      np.testing.assert_allclose(c, rc, rtol=1e-10, atol=1e-10)
      np.testing.assert_allclose(inertia, ri, rtol=1e-10)
      self.assertLen(np.unique(np.asarray(labels)), 6)  # the far centroids were re-seeded

  def test_lloyd_matches_scikit_learn_with_one_empty_cluster(self):
    with jax.enable_x64(True):
      x = _features(1, 300, 8, latent=6)
      init = np.concatenate([x[:7], np.full((1, 8), 30.0)])
      for iters in (1, 3, 20):
        sk = KMeans(8, init=init, n_init=1, max_iter=iters, tol=0.0, algorithm="lloyd").fit(x)
        c, labels, inertia = reid.kmeans(x, 8, jax.random.key(0), iterations=iters, init=init)
        np.testing.assert_array_equal(labels, sk.labels_)
        np.testing.assert_allclose(c, sk.cluster_centers_, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(inertia, sk.inertia_, rtol=1e-9)

  def test_greedy_kmeans_pp_matches_loop_reference(self):
    with jax.enable_x64(True):
      x = _features(2, 200, 5, latent=8)
      rng = np.random.default_rng(3)
      for trials in (1, 4):
        uniforms = rng.uniform(size=(9, trials))
        got = jax.jit(kmeans_lib._greedy_kmeans_pp)(jnp.asarray(x), jnp.asarray(17), uniforms)
        np.testing.assert_array_equal(got, np_greedy_kmeans_pp(x, 17, uniforms))

  def test_blobs_recovered(self):
    x, y = make_blobs(n_samples=600, n_features=10, centers=8, cluster_std=0.5,
                      center_box=(-10, 10), random_state=0)
    for seed in range(3):
      _, labels, _ = reid.kmeans(jnp.asarray(x, jnp.float32), 8, jax.random.key(seed),
                                 iterations=20)
      self.assertEqual(adjusted_rand_score(y, np.asarray(labels)), 1.0)

  def test_inertia_close_to_scikit_learn(self):
    """Within 1% of scikit-learn's KMeans: one seeding each, and the best of four once.

    Problems whose local minima have similar inertia (scikit-learn's own runs differ by well
    under 1% there), so the comparison is about the algorithm, not about luck.
    """
    rng = np.random.default_rng(11)
    problems = {
        "normal": rng.normal(size=(2000, 64)),
        # Nonnegative, unevenly scaled channels, like pooled ReLU features.
        "relu": np.abs(rng.normal(size=(2000, 64))) * rng.uniform(0.2, 2.0, size=64),
        "uniform": rng.uniform(size=(2000, 64)),
    }
    for seed, (name, x) in enumerate(problems.items()):
      x = x.astype(np.float32)
      _, labels, inertia = reid.kmeans(x, 50, jax.random.key(seed), iterations=100)
      # The inertia is that of the labels (recomputed independently from the cluster means).
      lab = np.asarray(labels)
      means = np.stack([x[lab == j].mean(0) for j in range(50)])
      np.testing.assert_allclose(((x - means[lab]) ** 2).sum(), inertia, rtol=1e-4)
      sk1 = KMeans(50, n_init=1, random_state=seed).fit(x).inertia_
      self.assertLess(abs(float(inertia) / sk1 - 1), 0.01, name)
      if name != "relu":
        continue
      _, _, best = reid.kmeans(x, 50, jax.random.key(seed), iterations=100, n_init=4)
      sk4 = KMeans(50, n_init=4, random_state=seed).fit(x).inertia_
      self.assertLessEqual(float(best), float(inertia), name)  # run 0 is among the four
      self.assertLess(abs(float(best) / sk4 - 1), 0.01, name)

  def test_chunking_jit_and_float64(self):
    x = _features(4, 250, 6, latent=5)
    key = jax.random.key(1)
    ref = reid.kmeans(jnp.asarray(x, jnp.float32), 7, key, iterations=10)
    chunked = reid.kmeans(jnp.asarray(x, jnp.float32), 7, key, iterations=10, chunk_size=64)
    jitted = jax.jit(reid.kmeans, static_argnames=("k", "iterations"))(
        jnp.asarray(x, jnp.float32), k=7, key=key, iterations=10)
    for other in (chunked, jitted):
      np.testing.assert_array_equal(other[1], ref[1])
      np.testing.assert_allclose(other[0], ref[0], rtol=1e-5, atol=1e-6)
    self.assertEqual(ref[0].dtype, jnp.float32)
    with jax.enable_x64(True):
      c, labels, inertia = reid.kmeans(jnp.asarray(x), 7, key, iterations=10, init="random")
      self.assertEqual(c.dtype, jnp.float64)
      self.assertEqual(inertia.dtype, jnp.float64)
      _, rl, ri = np_lloyd(x, np.asarray(c), 0)  # labels and inertia of the returned centroids
      np.testing.assert_array_equal(labels, rl)
      np.testing.assert_allclose(inertia, ri, rtol=1e-10)

  def test_bad_inputs(self):
    x = jnp.ones((10, 3))
    key = jax.random.key(0)
    with self.assertRaisesRegex(ValueError, "k as a Python int"):
      reid.kmeans(x, 11, key)
    with self.assertRaisesRegex(ValueError, "floating"):
      reid.kmeans(jnp.ones((10, 3), jnp.int32), 2, key)
    with self.assertRaisesRegex(ValueError, "init"):
      reid.kmeans(x, 2, key, init="kmeans")
    with self.assertRaisesRegex(ValueError, "init centroids"):
      reid.kmeans(x, 2, key, init=jnp.ones((3, 3)))


if __name__ == "__main__":
  absltest.main()
