"""Tests for the CSC image preparation against loop transcriptions of `CreateImages.m` parts."""
from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
from absl.testing import absltest

from jaxcompress.sparse_coding import data

sys.path.insert(0, os.path.dirname(__file__))
import csc_refs  # noqa: E402  (a sibling module of the tests)


def np_rconv2(large, small):
  """`rconv2.m`: reflected copies by MATLAB index lists, then `conv2(..., 'valid')` by loops."""
  ly, lx = large.shape
  sy, sx = small.shape
  sy2, sx2 = (sy - 1) // 2, (sx - 1) // 2
  top = list(range(sy - sy2 - 1, 0, -1))        # MATLAB sy-sy2:-1:2, 0-based
  bottom = list(range(ly - 2, ly - sy2 - 2, -1))  # MATLAB ly-1:-1:ly-sy2
  left = list(range(sx - sx2 - 1, 0, -1))
  right = list(range(lx - 2, lx - sx2 - 2, -1))
  rows = top + list(range(ly)) + bottom
  cols = left + list(range(lx)) + right
  padded = large[np.ix_(rows, cols)]
  out = np.zeros((padded.shape[0] - sy + 1, padded.shape[1] - sx + 1))
  for i in range(out.shape[0]):
    for j in range(out.shape[1]):
      for a in range(sy):
        for b in range(sx):
          out[i, j] += padded[i + a, j + b] * small[sy - 1 - a, sx - 1 - b]
  return out


class DataTest(absltest.TestCase):

  def test_gaussian_kernel(self):
    k = data.gaussian_kernel(5, 1.3)
    np.testing.assert_allclose(k.sum(), 1.0)
    np.testing.assert_allclose(k[2, 3] / k[2, 2], np.exp(-1 / (2 * 1.3 ** 2)))
    np.testing.assert_allclose(k[0, 0] / k[2, 2], np.exp(-8 / (2 * 1.3 ** 2)))

  def test_rconv2(self):
    rng = np.random.default_rng(0)
    img = rng.normal(size=(9, 11))
    ker = rng.normal(size=(5, 3))  # asymmetric: checks the flip and the padding sides
    np.testing.assert_allclose(data.rconv2(img, ker), np_rconv2(img, ker), rtol=1e-12)
    ker4 = rng.normal(size=(4, 4))
    np.testing.assert_allclose(data.rconv2(img, ker4), np_rconv2(img, ker4), rtol=1e-12)

  def test_local_contrast_normalize(self):
    rng = np.random.default_rng(1)
    img = rng.random((20, 18))
    k = data.gaussian_kernel(13, 3 * 1.591)
    lmn = np_rconv2(img, k)
    lstd = np.sqrt(np.maximum(np_rconv2(img ** 2, k) - lmn ** 2, 0))
    q = np.sort(lstd.ravel())
    th = q[int(round(q.size / 2 + 1e-9)) - 1]
    ref = (img - lmn) / np.maximum(lstd, th)
    out = data.local_contrast_normalize(img)
    self.assertEqual(out.dtype, np.float32)
    np.testing.assert_allclose(out, ref, rtol=2e-6, atol=1e-6)
    # Constant image: zero deviation everywhere, eps floor, zero output.
    np.testing.assert_array_equal(data.local_contrast_normalize(np.full((16, 16), 0.3)), 0)

  def test_to_gray(self):
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 255]]], np.uint8)
    np.testing.assert_allclose(data.to_gray(rgb), [[0.2989360, 0.5870431], [0.1140209, 1.0]],
                               rtol=1e-6)
    np.testing.assert_allclose(data.to_gray(np.array([[0, 51]], np.uint8)), [[0, 0.2]])
    np.testing.assert_allclose(data.to_gray(np.array([[0.5, 1.0]])), [[0.5, 1.0]])

  def test_edge_taper(self):
    rng = np.random.default_rng(2)
    img = rng.normal(size=(24, 20))
    psf = data.gaussian_kernel(5, 5 / 3)
    betas = []
    for axis, n in enumerate(img.shape):
      p = np.zeros(n - 1)
      p[:5] = psf.sum(axis=1 - axis)
      ac = np.array([sum(p[j] * p[(j + k) % (n - 1)] for j in range(n - 1))
                     for k in range(n - 1)])
      betas.append(np.append(ac, ac[0]) / ac.max())
    alpha = np.outer(1 - betas[0], 1 - betas[1])
    centred = np.zeros_like(img)
    centred[:5, :5] = psf
    centred = np.roll(centred, (-2, -2), axis=(0, 1))
    blurred = csc_refs.circ_conv(centred, img)
    ref = np.clip(alpha * img + (1 - alpha) * blurred, img.min(), img.max())
    out = data.edge_taper(img, psf)
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out[6:-6, 6:-6], img[6:-6, 6:-6], rtol=1e-12)  # interior kept
    self.assertFalse(np.allclose(out[0], img[0]))

  def test_prepare_and_folder(self):
    from skimage import io
    rng = np.random.default_rng(3)
    imgs = [rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8) for _ in range(3)]
    prep = data.prepare_images(imgs)
    self.assertEqual(prep.shape, (3, 16, 16))
    self.assertEqual(prep.dtype, np.float64)
    np.testing.assert_allclose(prep.mean((1, 2)), 0, atol=1e-6)
    ref0 = data.local_contrast_normalize(data.to_gray(imgs[0]))
    np.testing.assert_allclose(prep[0], ref0 - ref0.mean(), atol=1e-6)
    with tempfile.TemporaryDirectory() as tmp:
      with self.assertRaisesRegex(FileNotFoundError, "CoGD-master.zip"):
        data.load_image_folder(tmp)
      for i, im in enumerate(imgs):
        io.imsave(os.path.join(tmp, f"{i + 1}.png"), im, check_contrast=False)
      np.testing.assert_allclose(data.load_image_folder(tmp), prep)
      with self.assertRaisesRegex(FileNotFoundError, "does not exist"):
        data.load_image_folder(os.path.join(tmp, "missing"))
    with self.assertRaisesRegex(ValueError, "different sizes"):
      data.prepare_images([imgs[0], imgs[1][:8]])
    tapered = data.prepare_images(imgs[:1], edge_taper_filter_size=5)
    np.testing.assert_allclose(tapered[0, 6:-6, 6:-6], prep[0, 6:-6, 6:-6])

  def test_skimage_photos_and_mask(self):
    photos = data.skimage_photos(10)
    self.assertEqual(photos.shape, (10, 100, 100))
    np.testing.assert_allclose(photos.mean((1, 2)), 0, atol=1e-5)
    self.assertTrue(np.all(photos.std((1, 2)) > 0.1))
    with self.assertRaisesRegex(ValueError, "num_images"):
      data.skimage_photos(11)
    mask = data.inpainting_mask((10, 100, 100))
    self.assertAlmostEqual(mask.mean(), 0.75, delta=0.01)


if __name__ == "__main__":
  absltest.main()
