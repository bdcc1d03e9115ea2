"""Tests for jaxcompress.optim.cogd against NumPy transcriptions of the released MATLAB loops."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest, parameterized

from jaxcompress.optim import cogd


# ------------------------------------------------------------------------- NumPy transcriptions
def _np_loop_positions(z_mat, alpha, saturate, released):
  """Yields 0-based (row, col, filter) of `for i = 1:uint8(alpha*len3)` in MATLAB layout.

  z_mat is (H, W, K, N) as in MATLAB; positions that MATLAB cannot index are yielded as None.
  """
  h, w, k = z_mat.shape[:3]
  len3, len2, len1 = h * w * k, h * w + 1, h
  z_temp = z_mat.sum(3).reshape(-1, order="F")
  indb = np.argsort(z_temp, kind="stable") + 1  # MATLAB sort: stable, 1-based
  n = int(np.floor(alpha * len3 + 0.5))
  if saturate:
    n = min(n, 255)
  for i in range(1, n + 1):
    idx = min(len3 - i, 255) if saturate else len3 - i
    index_temp = int(indb[idx - 1])
    if released:
      d3 = (index_temp - 1) // len2 + 1
      d2 = ((index_temp - 1) % len2) // len1 + 1
      d1 = ((index_temp % len2) - 1) % len1 + 1
    else:
      d1, d2, d3 = (int(v) + 1 for v in np.unravel_index(index_temp - 1, (h, w, k), order="F"))
    yield None if d2 > w else (d1 - 1, d2 - 1, d3 - 1)


def np_backtracking_d(d, z, alpha, d_old, saturate=True, released=True):
  """`backtracking_d.m` in MATLAB layout: d (H, W, K), z (H, W, K, N)."""
  d = d.copy()
  for pos in _np_loop_positions(z, alpha, saturate, released):
    if pos is not None:
      d[pos] = d[pos] * 0.01 + d_old[pos] * 0.99
  return d


def np_backtracking_btb(d, z, alpha, d_old, z_old, btb, saturate=True, released=True):
  """`backtracking_btb.m` in MATLAB layout; btb (h, w, N) the masked residual."""
  d = d.copy()
  btb = btb.sum(2)
  ax = np.ones(btb.shape[0]) * 0.05
  c = np.sum(btb.T.sum(0) * ax)
  for pos in _np_loop_positions(z, alpha, saturate, released):
    if pos is None:
      continue
    zz = z - z_old
    with np.errstate(divide="ignore", invalid="ignore"):
      p = np.fmin(np.linalg.norm(zz[pos]) / abs((d[pos] - d_old[pos]) + 0.00001), 1)
    d[pos] = d[pos] + d_old[pos] * 0.1 * c * p
  return d


def to_mat(a):
  """(K, H, W) or (N, K, H, W) of this package -> MATLAB (H, W, K[, N])."""
  return np.transpose(a, (1, 2, 0)) if a.ndim == 3 else np.transpose(a, (2, 3, 1, 0))


def from_mat(a):
  return np.transpose(a, (2, 0, 1))


def _csc_data(seed=0, k=4, h=12, w=13, n=3):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(k, h, w)), rng.normal(size=(k, h, w)), rng.normal(size=(n, k, h, w)),
          rng.normal(size=(n, k, h, w)), rng.normal(size=(n, h - 4, w - 4)))


class CscCorrectionTest(parameterized.TestCase):

  @parameterized.product(saturate=[True, False], released=[True, False], t=[1, 3, 7])
  def test_pull_back_matches_matlab(self, saturate, released, t):
    d, d_old, z, _, _ = _csc_data(t)
    num_iters = 8
    ref = np_backtracking_d(to_mat(d), to_mat(z), (num_iters - t) / (2 * num_iters),
                            to_mat(d_old), saturate, released)
    with jax.enable_x64(True):
      fn = jax.jit(lambda *a: cogd.matlab_pull_back(*a, num_iters, saturate=saturate,
                                                    released_decoding=released))
      out = fn(d, d_old, z, t)
    np.testing.assert_allclose(np.asarray(out), from_mat(ref), rtol=1e-12, atol=1e-12)
    self.assertGreater(np.sum(np.asarray(out) != d), 0)

  @parameterized.product(saturate=[True, False], released=[True, False], t=[1, 4])
  def test_residual_push_matches_matlab(self, saturate, released, t):
    d, d_old, z, z_old, res = _csc_data(10 + t)
    res = res * 0.01
    num_iters = 8
    ref = np_backtracking_btb(to_mat(d), to_mat(z), (num_iters - t) / (3 * num_iters),
                              to_mat(d_old), to_mat(z_old), np.transpose(res, (1, 2, 0)),
                              saturate, released)
    with jax.enable_x64(True):
      out = cogd.matlab_residual_push(jnp.asarray(d), d_old, z, z_old, res, t, num_iters,
                                      saturate=saturate, released_decoding=released)
    np.testing.assert_allclose(np.asarray(out), from_mat(ref), rtol=1e-10, atol=1e-12)

  def test_saturated_pull_back_hand_case(self):
    # The uint8 loop visits the 255th smallest entry 255 times: it ends at d_old (0.01**255 = 0)
    # and nothing else moves. z ranks linear MATLAB index m by value m, so that entry is m = 255.
    k, h, w = 3, 20, 20  # len3 - i >= 255 for every visit
    zsum = np.arange(k * h * w, dtype=np.float64).reshape(h, w, k, order="F")  # value = index
    z = from_mat(zsum)[None]
    d = np.ones((k, h, w))
    d_old = np.zeros((k, h, w))
    with jax.enable_x64(True):
      out = np.asarray(cogd.matlab_pull_back(d, d_old, z, 1, 4, released_decoding=False))
    row, col, fil = np.unravel_index(254, (h, w, k), order="F")
    expected = d.copy()
    expected[fil, row, col] = 0.0
    np.testing.assert_array_equal(out, expected)

  def test_unsaturated_pull_back_hand_case(self):
    # alpha * len3 = 3 / 8 * 300 = 112.5 -> 113 entries: ranks 2..114 from the top, each once.
    k, h, w = 3, 10, 10
    zsum = np.arange(k * h * w, dtype=np.float64)
    z = from_mat(zsum.reshape(h, w, k, order="F"))[None]
    d = np.ones((k, h, w))
    d_old = np.zeros((k, h, w))
    with jax.enable_x64(True):
      out = np.asarray(cogd.matlab_pull_back(d, d_old, z, 1, 4, saturate=False,
                                             released_decoding=False))
    touched = np.zeros(k * h * w, bool)
    touched[300 - 1 - 113:300 - 1] = True  # 0-based linear indices 186..298
    expected = np.where(touched, 0.01, 1.0).reshape(h, w, k, order="F")
    np.testing.assert_allclose(out, from_mat(expected), rtol=1e-15)

  def test_released_decoding_skips_out_of_grid_entry(self):
    # With len2 = H*W + 1, linear index m = H*W + 1 decodes to column W + 1: MATLAB stops with
    # an index error there; the correction must leave d unchanged instead of wrapping.
    k, h, w = 3, 20, 20
    vals = np.arange(k * h * w, dtype=np.float64)
    bad = h * w  # 0-based linear index with (m - 1) mod len2 == H*W
    vals[[254, bad]] = vals[[bad, 254]]  # make it the 255th smallest
    z = from_mat(vals.reshape(h, w, k, order="F"))[None]
    d = np.ones((k, h, w))
    with jax.enable_x64(True):
      out = np.asarray(cogd.matlab_pull_back(d, np.zeros_like(d), z, 1, 4))
    np.testing.assert_array_equal(out, d)

  def test_float32_and_dispatch(self):
    d, d_old, z, z_old, res = _csc_data(3)
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    hook = cogd.csc_correction("matlab_heuristic", "reconstruction")
    out = jax.jit(hook, static_argnums=6)(f32(d), f32(d_old), f32(z), f32(z_old), f32(res), 2, 8)
    self.assertEqual(out.dtype, jnp.float32)
    ref = np_backtracking_d(to_mat(d).astype(np.float32), to_mat(z).astype(np.float32), 6 / 16,
                            to_mat(d_old).astype(np.float32))
    np.testing.assert_allclose(np.asarray(out), from_mat(ref), rtol=1e-6, atol=1e-6)
    none = cogd.csc_correction("none", "inpainting")
    np.testing.assert_array_equal(none(d, d_old, z, z_old, res, 1, 8), d)

  def test_errors(self):
    with self.assertRaisesRegex(NotImplementedError, "projection function"):
      cogd.csc_correction("paper")
    with self.assertRaisesRegex(ValueError, "unknown CoGD variant"):
      cogd.csc_correction("cogd")
    with self.assertRaisesRegex(ValueError, "unknown CSC task"):
      cogd.csc_correction("none", "denoising")
    with self.assertRaisesRegex(NotImplementedError, "unconfirmed"):
      cogd.run_bilinear(jnp.ones((2, 3)), jnp.ones(3), jnp.ones(2), lam=0.1, mu=0.1,
                        num_steps=2, variant="paper")


# ------------------------------------------------------------------------------- bilinear form
def np_pull_back_columns(a, a_old, x, t, num_iters, saturate):
  """Column version of the released loop, one visit at a time."""
  n = a.shape[1]
  order = np.argsort(x.reshape(n, -1).sum(1), kind="stable") + 1
  count = int(np.floor((num_iters - t) / (2 * num_iters) * n + 0.5))
  count = min(count, 255) if saturate else count
  a = a.copy()
  for i in range(1, count + 1):
    j = order[(min(n - i, 255) if saturate else n - i) - 1] - 1
    a[:, j] = a[:, j] * 0.01 + a_old[:, j] * 0.99
  return a


class BilinearTest(chex.TestCase):

  def test_soft_threshold(self):
    u = np.array([-2.0, -0.5, 0.0, 0.3, 0.5, 1.5])
    ref = np.sign(u) * np.maximum(np.abs(u) - 0.5, 0)
    np.testing.assert_allclose(cogd.soft_threshold(jnp.asarray(u, jnp.float32), 0.5), ref,
                               atol=1e-7)

  @chex.variants(with_jit=True, without_jit=True)
  def test_steps_against_hand_gradients(self):
    rng = np.random.default_rng(0)
    a, x, b = rng.normal(size=(5, 7)), rng.normal(size=(7, 3)), rng.normal(size=(5, 3))
    mu, lam, lr = 0.3, 0.2, 0.01
    with jax.enable_x64(True):
      smooth = lambda a_, x_: jnp.sum((b - a_ @ x_) ** 2) + mu * jnp.sum(a_ * a_)  # noqa: E731
      x_new, gx = self.variant(lambda a_, x_: cogd.x_step(smooth, a_, x_, lam, lr))(a, x)
      a_new, ga = self.variant(lambda a_, x_: cogd.a_step(smooth, a_, x_, lr))(a, x_new)
      self.assertEqual(x_new.dtype, jnp.float64)
    grad_x = -2 * a.T @ (b - a @ x)
    u = x - lr * grad_x
    x_ref = np.sign(u) * np.maximum(np.abs(u) - lr * lam, 0)
    np.testing.assert_allclose(x_new, x_ref, rtol=1e-12)
    np.testing.assert_allclose(gx, np.linalg.norm((x - x_ref) / lr), rtol=1e-12)
    grad_a = -2 * (b - a @ x_ref) @ x_ref.T + 2 * mu * a
    np.testing.assert_allclose(a_new, a - lr * grad_a, rtol=1e-12)
    np.testing.assert_allclose(ga, np.linalg.norm(grad_a), rtol=1e-12)

  def test_pull_back_columns(self):
    rng = np.random.default_rng(1)
    for n, t, saturate in [(40, 1, True), (40, 5, False), (600, 1, True), (600, 2, False)]:
      a, a_old, x = rng.normal(size=(3, n)), rng.normal(size=(3, n)), rng.normal(size=(n, 2))
      with jax.enable_x64(True):
        out = cogd.pull_back_columns(a, a_old, x, t, 10, saturate=saturate)
      np.testing.assert_allclose(out, np_pull_back_columns(a, a_old, x, t, 10, saturate),
                                 rtol=1e-12, atol=1e-14)

  def test_alternation_decreases_objective_and_reports_gradients(self):
    key = jax.random.PRNGKey(0)
    b, a_star, x_star = cogd.synthetic_bilinear_problem(key, m=16, n=32, samples=40,
                                                        density=0.1)
    a0 = jax.random.normal(jax.random.PRNGKey(1), a_star.shape) / 4
    x0 = jnp.zeros_like(x_star)
    a, x, trace = jax.jit(lambda *v: cogd.run_bilinear(*v, lam=0.1, mu=0.01, num_steps=60))(
        a0, x0, b)
    obj = np.asarray(trace.objective)
    self.assertEqual(obj.shape, (60,))
    self.assertEqual(trace.grad_norm_a.shape, (60,))
    # Each block step is a 1/L proximal gradient step: the objective cannot increase.
    self.assertTrue(np.all(np.diff(obj) <= 1e-4 * obj[:-1]))
    ref = (np.sum((np.asarray(b) - np.asarray(a) @ np.asarray(x)) ** 2)
           + 0.1 * np.abs(np.asarray(x)).sum() + 0.01 * np.sum(np.asarray(a) ** 2))
    np.testing.assert_allclose(obj[-1], ref, rtol=1e-5)
    self.assertGreater(float(trace.grad_norm_x[0]), float(trace.grad_norm_x[-1]))


@pytest.mark.slow
def test_synthetic_check_spread():
  """Synthetic Eq. 1 with A* 64x128, x* 5% nonzero: final objectives of both variants."""
  gaps = []
  with jax.enable_x64(True):
    run = jax.jit(lambda a0, x0, b, v: cogd.run_bilinear(a0, x0, b, lam=0.1, mu=0.01,
                                                         num_steps=200, variant=v),
                  static_argnums=3)
    for seed in range(5):
      b, a_star, x_star = cogd.synthetic_bilinear_problem(jax.random.PRNGKey(seed),
                                                          dtype=jnp.float64)
      a0 = jax.random.normal(jax.random.PRNGKey(100 + seed), a_star.shape, jnp.float64) / 8
      x0 = jnp.zeros_like(x_star)
      base = run(a0, x0, b, "none")[2].objective
      heur = run(a0, x0, b, "matlab_heuristic")[2].objective
      assert np.all(np.isfinite(heur))
      gaps.append(float(heur[-1] - base[-1]) / float(base[-1]))
  print("relative final-objective gap (heuristic - none) / none per seed:", gaps)


if __name__ == "__main__":
  absltest.main()
