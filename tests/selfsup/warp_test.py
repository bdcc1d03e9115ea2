"""Tests for jaxcompress.selfsup.dsm_warp against a per-pixel loop reference of the official warp."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from jaxcompress import selfsup


def np_one_warp(clip, point):
  """One warp as the official `spatial_warp_torch` loop, rows bounded by H and columns by W."""
  p0, p1, s0, s1 = point
  height, width = clip.shape[2], clip.shape[3]
  out = clip.copy()
  for i in range(max(0, p0 - 3 * s0), min(height, p0 + 3 * s0)):
    for j in range(max(0, p1 - 3 * s1), min(width, p1 + 3 * s1)):
      dist = math.hypot(i - (p0 + s0), j - (p1 + s1))
      pull = 0.5 / (3 * (dist / math.hypot(s0, s1)) ** 4 + 1)
      src_i = min(max(i + int(-pull * s0), 0), height - 1)
      src_j = min(max(j + int(-pull * s1), 0), width - 1)
      out[:, :, i, j] = clip[:, :, src_i, src_j]  # reads the unwarped input only
  return out


def np_warp(clip, points):
  for point in points:
    clip = np_one_warp(clip, point)
  return clip


def np_warp_grad(shape, points, cot):
  """Gradient of sum(cot * warp(clip)) w.r.t. clip: each output pixel adds its cotangent at its
  source, found by warping a clip of pixel ids."""
  n, t, height, width, c = shape
  ids = np.broadcast_to(np.arange(height * width).reshape(1, 1, height, width, 1), shape).copy()
  src = np_warp(ids, points)
  grad = np.zeros(shape)
  for i in range(height):
    for j in range(width):
      si, sj = divmod(int(src[0, 0, i, j, 0]), width)
      grad[:, :, si, sj, :] += cot[:, :, i, j, :]
  return grad


class DsmWarpTest(parameterized.TestCase):

  @parameterized.parameters(True, False)
  def test_matches_loop_reference_on_non_square_frames(self, jit):
    rng = np.random.default_rng(0)
    # H > W and a first window reaching rows beyond W: the official bounds (rows by W) would
    # stop at row 24; the contract bounds rows by H.
    clip = rng.normal(size=(2, 3, 40, 24, 2)).astype(np.float32)
    points = [(30, 10, 4, 3), (12, 20, 5, 2), (20, 5, 3, 6)]
    fn = jax.jit(lambda c: selfsup.dsm_warp(c, points)) if jit else (
        lambda c: selfsup.dsm_warp(c, points))
    out = fn(jnp.asarray(clip))
    self.assertEqual(out.shape, clip.shape)
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_array_equal(np.asarray(out), np_warp(clip, points))
    # Rows 24..33 of the first window moved, which the official width bound would have skipped.
    first = np_one_warp(clip, points[0])
    self.assertFalse(np.array_equal(first[:, :, 24:34], clip[:, :, 24:34]))

  def test_sequential_warps_read_the_previous_output(self):
    rng = np.random.default_rng(1)
    clip = rng.normal(size=(1, 2, 30, 30, 1)).astype(np.float32)
    points = [(15, 15, 4, 4), (13, 17, 3, 5)]
    out = np.asarray(selfsup.dsm_warp(jnp.asarray(clip), points))
    np.testing.assert_array_equal(out, np_one_warp(np_one_warp(clip, points[0]), points[1]))
    # Not the same as both warps reading the original clip.
    self.assertFalse(np.array_equal(out, np_one_warp(clip, points[1])))

  @parameterized.parameters((0, 0), (0, 7), (1, 1), (1, 0))
  def test_identity_for_zero_or_unit_shift(self, s0, s1):
    clip = np.random.default_rng(2).normal(size=(1, 2, 20, 20, 3)).astype(np.float32)
    out = selfsup.dsm_warp(jnp.asarray(clip), [(10, 10, s0, s1)])
    np.testing.assert_array_equal(np.asarray(out), clip)

  def test_changes_confined_to_window_centred_on_point(self):
    height, width = 48, 64
    clip = np.arange(height * width, dtype=np.float32).reshape(1, 1, height, width, 1)
    p0, p1, s0, s1 = 20, 30, 5, 4
    out = np.asarray(selfsup.dsm_warp(jnp.asarray(clip), [(p0, p1, s0, s1)]))
    changed = (out != clip)[0, 0, :, :, 0]
    rows, cols = np.nonzero(changed)
    self.assertGreater(rows.size, 0)
    self.assertGreaterEqual(rows.min(), p0 - 3 * s0)
    self.assertLess(rows.max(), p0 + 3 * s0)
    self.assertGreaterEqual(cols.min(), p1 - 3 * s1)
    self.assertLess(cols.max(), p1 + 3 * s1)
    # The pull is strongest near the shifted point, so pixels there must move.
    self.assertTrue(changed[p0 + s0, p1 + s1])

  def test_window_clipped_at_frame_border(self):
    clip = np.random.default_rng(3).normal(size=(2, 1, 16, 20, 1)).astype(np.float32)
    points = [(2, 18, 5, 6)]  # window rows [-13, 17), columns [0, 36): clipped on all sides
    out = np.asarray(selfsup.dsm_warp(jnp.asarray(clip), points))
    np.testing.assert_array_equal(out, np_warp(clip, points))

  def test_official_range_on_224_frames(self):
    clip = np.random.default_rng(4).normal(size=(1, 1, 224, 224, 1)).astype(np.float32)
    points = [(139, 60, 19, 10), (60, 139, 10, 19)]  # extremes of the official draw
    out = np.asarray(selfsup.dsm_warp(jnp.asarray(clip), points))
    np.testing.assert_array_equal(out, np_warp(clip, points))

  def test_float64_and_integer_dtypes(self):
    points = [(8, 9, 3, 4)]
    with jax.enable_x64(True):
      clip = np.random.default_rng(5).normal(size=(1, 2, 18, 20, 2))
      out = selfsup.dsm_warp(jnp.asarray(clip), points)
      self.assertEqual(out.dtype, jnp.float64)
      np.testing.assert_array_equal(np.asarray(out), np_warp(clip, points))
    frames = np.random.default_rng(6).integers(0, 256, size=(1, 2, 18, 20, 3)).astype(np.uint8)
    out = selfsup.dsm_warp(jnp.asarray(frames), points)
    self.assertEqual(out.dtype, jnp.uint8)
    np.testing.assert_array_equal(np.asarray(out), np_warp(frames, points))

  @parameterized.parameters(True, False)
  def test_gradient_scatters_back_to_sources(self, jit):
    rng = np.random.default_rng(7)
    shape = (2, 2, 18, 14, 2)
    points = [(9, 7, 3, 2), (6, 8, 2, 3)]
    cot = rng.normal(size=shape)
    loss = lambda c: jnp.sum(jnp.asarray(cot, jnp.float32) * selfsup.dsm_warp(c, points))
    grad_fn = jax.jit(jax.grad(loss)) if jit else jax.grad(loss)
    grad = grad_fn(jnp.asarray(rng.normal(size=shape), jnp.float32))
    np.testing.assert_allclose(np.asarray(grad), np_warp_grad(shape, points, cot), rtol=1e-5,
                               atol=1e-5)

  def test_bad_arguments(self):
    clip = jnp.zeros((1, 1, 8, 8, 1))
    with self.assertRaisesRegex(ValueError, "N, T, H, W, C"):
      selfsup.dsm_warp(jnp.zeros((8, 8, 1)), [])
    with self.assertRaisesRegex(ValueError, "expected 4"):
      selfsup.dsm_warp(clip, [(1, 2, 3)])
    with self.assertRaisesRegex(ValueError, ">= 0"):
      selfsup.dsm_warp(clip, [(4, 4, -2, 2)])
    with self.assertRaisesRegex(ValueError, "concrete"):
      jax.jit(lambda p: selfsup.dsm_warp(clip, [(p, 4, 2, 2)]))(4)


class SampleWarpPointsTest(absltest.TestCase):

  def test_official_ranges_for_224(self):
    rng = np.random.default_rng(0)
    draws = [selfsup.sample_warp_points(rng, 224, 224) for _ in range(3000)]
    self.assertEqual({len(d) for d in draws}, {1, 2, 3})
    pts = np.array([p for d in draws for p in d])
    for col, (lo, hi) in enumerate([(60, 139), (60, 139), (10, 19), (10, 19)]):
      self.assertEqual(pts[:, col].min(), lo)
      self.assertEqual(pts[:, col].max(), hi)
    self.assertTrue(all(isinstance(v, int) for d in draws[:20] for p in d for v in p))

  def test_scaled_ranges(self):
    rng = np.random.default_rng(1)
    pts = np.array([p for _ in range(3000) for p in selfsup.sample_warp_points(rng, 112, 448)])
    # Rows scale with H = 112 (half of 224), columns with W = 448 (twice).
    expected = [(30, 69), (120, 279), (5, 9), (20, 39)]
    for col, (lo, hi) in enumerate(expected):
      self.assertEqual(pts[:, col].min(), lo)
      self.assertEqual(pts[:, col].max(), hi)
    tiny = np.array([p for _ in range(300) for p in selfsup.sample_warp_points(rng, 8, 8)])
    self.assertGreaterEqual(tiny[:, 2:].min(), 1)
    self.assertLess(tiny[:, :2].max(), 8)

  def test_bad_size(self):
    with self.assertRaisesRegex(ValueError, "positive"):
      selfsup.sample_warp_points(np.random.default_rng(0), 0, 10)


if __name__ == "__main__":
  absltest.main()
