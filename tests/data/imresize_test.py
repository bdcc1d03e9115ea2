"""Tests for jaxcompress.data.imresize (MATLAB bicubic imresize)."""
from __future__ import annotations

import math

import numpy as np
from absl.testing import absltest, parameterized

from jaxcompress.data import imresize as ir


def _keys(t):
  t = abs(t)
  if t <= 1:
    return 1.5 * t ** 3 - 2.5 * t ** 2 + 1
  if t <= 2:
    return -0.5 * t ** 3 + 2.5 * t ** 2 - 4 * t + 2
  return 0.0


def _mirror(i, n):
  """1-based symmetric extension including the edge: 0 -> 1, -1 -> 2, n + 1 -> n."""
  i = (i - 1) % (2 * n)
  return i if i < n else 2 * n - 1 - i  # 0-based


def ref_resize_1d(v, scale):
  """Loop-per-pixel transcription of MATLAB's formula for one dimension (float64)."""
  n = len(v)
  out_n = int(math.ceil(n * scale))
  aa = scale < 1
  width = 4.0 / scale if aa else 4.0
  out = np.zeros(out_n)
  for x in range(1, out_n + 1):
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = math.floor(u - width / 2)
    ws, vals = [], []
    for j in range(left, left + int(math.ceil(width)) + 2):
      w = scale * _keys(scale * (u - j)) if aa else _keys(u - j)
      ws.append(w)
      vals.append(v[_mirror(j, n)])
    ws = np.array(ws) / np.sum(ws)
    out[x - 1] = np.dot(ws, vals)
  return out


def ref_imresize(img, scale):
  img = np.asarray(img)
  is_u8 = img.dtype == np.uint8
  x = img.astype(np.float64)
  for axis in (0, 1):  # equal scales: rows first
    x = np.apply_along_axis(ref_resize_1d, axis, x, scale)
    if is_u8:
      x = np.floor(np.clip(x, 0, 255) + 0.5)
  return x.astype(np.uint8) if is_u8 else x


class ImresizeTest(parameterized.TestCase):

  def test_upscale_weights_by_hand(self):
    # x2 upscaling taps of MATLAB: cubic(1.75), cubic(.75), cubic(.25), cubic(1.25).
    w, ind = ir.contributions(4, 8, 2.0)
    np.testing.assert_allclose(w[4], [-0.0234375, 0.2265625, 0.8671875, -0.0703125], atol=1e-15)
    np.testing.assert_array_equal(ind[4], [0, 1, 2, 3])
    np.testing.assert_array_equal(ind[2], [0, 0, 1, 2])  # u = 1.75: tap 0 mirrors to pixel 1
    # imresize([0; 1], 2) = [-0.09375; 0.203125; 0.796875; 1.09375] (edges mirrored).
    out = ir.imresize(np.array([[0.0], [1.0]]), 2)
    self.assertEqual(out.shape, (4, 2))
    np.testing.assert_allclose(out[:, 0], [-0.09375, 0.203125, 0.796875, 1.09375], atol=1e-15)
    np.testing.assert_allclose(out[:, 1], out[:, 0], atol=1e-15)

  def test_downscale_antialias_by_hand(self):
    # x1/2 with antialiasing: kernel 0.5 * cubic(t / 2), width 8.
    ramp = np.tile(np.arange(8.0)[:, None], (1, 8))
    out = ir.imresize(ramp, 0.5)
    self.assertEqual(out.shape, (4, 4))
    # Interior output 2 sits at 3.5 (1-based); the mirrored tap (0 instead of -1) costs 0.01171875.
    np.testing.assert_allclose(out[1], 2.5 - 0.01171875, atol=1e-14)
    w, _ = ir.contributions(8, 4, 0.5)
    np.testing.assert_allclose(
        w[1], [-0.01171875, -0.03515625, 0.11328125, 0.43359375, 0.43359375, 0.11328125,
               -0.03515625, -0.01171875], atol=1e-15)

  @parameterized.parameters(0.5, 1 / 3, 0.25, 2, 3)
  def test_constant_image_stays_constant(self, scale):
    img = np.full((13, 10, 3), 77, np.uint8)
    out = ir.imresize(img, scale)
    self.assertEqual(out.dtype, np.uint8)
    self.assertEqual(out.shape, (math.ceil(13 * scale), math.ceil(10 * scale), 3))
    np.testing.assert_array_equal(out, 77)
    np.testing.assert_allclose(ir.imresize(img.astype(np.float64) / 255, scale), 77 / 255,
                               rtol=1e-13)

  @parameterized.parameters(0.5, 1 / 3, 0.25, 2)
  def test_against_loop_reference(self, scale):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (12, 9, 2)).astype(np.uint8)
    out = ir.imresize(img, scale)
    ref = ref_imresize(img, scale)
    np.testing.assert_array_equal(out, ref)
    out_f = ir.imresize(img.astype(np.float64), scale)
    self.assertEqual(out_f.dtype, np.float64)
    np.testing.assert_allclose(out_f, ref_imresize(img.astype(np.float64), scale), atol=1e-11)
    # uint8 input is clipped and rounded after each pass (MATLAB), not only at the end.
    two_step = np.floor(np.clip(out_f, 0, 255) + 0.5).astype(np.uint8)
    if scale == 2:  # overshoot of the first pass is clipped before the second
      self.assertTrue(np.any(out != two_step))

  def test_published_matlab_2x2_matrix(self):
    # MATLAB: imresize([1 2; 3 4], 2) (bicubic, the default), as printed by MATLAB:
    #   0.7188  1.0156  1.6094  1.9063
    #   1.3125  1.6094  2.2031  2.5000
    #   2.5000  2.7969  3.3906  3.6875
    #   3.0938  3.3906  3.9844  4.2813
    # By hand: the image is 1 + 2 r + c, resizing is separable and linear, and imresize([0; 1], 2)
    # = R = [-0.09375, 0.203125, 0.796875, 1.09375] (test_upscale_weights_by_hand), so the exact
    # result is 1 + 2 R[i] + R[j].
    r = np.array([-0.09375, 0.203125, 0.796875, 1.09375])
    exact = 1 + 2 * r[:, None] + r[None, :]
    matlab = np.array([[0.7188, 1.0156, 1.6094, 1.9063], [1.3125, 1.6094, 2.2031, 2.5000],
                       [2.5000, 2.7969, 3.3906, 3.6875], [3.0938, 3.3906, 3.9844, 4.2813]])
    out = ir.imresize(np.array([[1.0, 2.0], [3.0, 4.0]]), 2)
    np.testing.assert_allclose(out, exact, atol=1e-14)
    np.testing.assert_allclose(out, matlab, atol=5e-5)   # MATLAB's 4-decimal display

  @parameterized.parameters(2, 3, 4)
  def test_linear_ramp_upscale_is_exact_in_the_interior(self, scale):
    # The Keys cubic (a = -0.5) reproduces linear functions: away from the mirrored borders the
    # output of a ramp v[i] = i (0-based) at output x (1-based) is u - 1, u = x / s + (1 - 1/s) / 2.
    n = 12
    out = ir.imresize(np.tile(np.arange(n, dtype=np.float64)[:, None], (1, 3)), scale)[:, 0]
    x = np.arange(1, n * scale + 1)
    u = x / scale + 0.5 * (1 - 1 / scale)
    interior = (np.floor(u) - 1 >= 1) & (np.floor(u) + 2 <= n)
    self.assertGreater(interior.sum(), n)
    np.testing.assert_allclose(out[interior], u[interior] - 1, atol=1e-12)

  def test_linear_ramp_downscale_is_exact_in_the_interior(self):
    # x1/2 with antialiasing (symmetric kernel 0.5 cubic(t / 2), 8 taps): interior outputs of a
    # ramp sit at u = 2 x - 0.5 (1-based), value u - 1 (0-based ramp).
    n = 24
    out = ir.imresize(np.tile(np.arange(n, dtype=np.float64)[:, None], (1, 2)), 0.5)[:, 0]
    x = np.arange(1, n // 2 + 1)
    u = 2 * x - 0.5
    interior = (u - 4 >= 1) & (u + 4 <= n)
    self.assertGreater(interior.sum(), 4)
    np.testing.assert_allclose(out[interior], u[interior] - 1, atol=1e-12)

  def test_output_shape_and_errors(self):
    img = np.zeros((10, 6))
    self.assertEqual(ir.imresize(img, output_shape=(5, 4)).shape, (5, 4))
    with self.assertRaises(ValueError):
      ir.imresize(img)
    with self.assertRaises(ValueError):
      ir.imresize(img, 0.5, output_shape=(5, 3))


if __name__ == "__main__":
  absltest.main()
