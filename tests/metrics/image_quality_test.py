"""Tests for jaxcompress.metrics.image_quality (MATLAB-protocol PSNR / SSIM)."""
from __future__ import annotations

import math

import numpy as np
from absl.testing import absltest
from skimage import metrics as skm

from jaxcompress import metrics
from jaxcompress.metrics import image_quality as iq


def _images(seed=0, shape=(40, 36, 3)):
  rng = np.random.default_rng(seed)
  hr = rng.integers(0, 256, shape).astype(np.uint8)
  sr = np.clip(hr + rng.normal(0, 6, shape), -10, 270)  # float, out of range on purpose
  return sr, hr


class ImageQualityTest(absltest.TestCase):

  def test_rgb2ycbcr_y(self):
    # MATLAB: rgb2ycbcr(im2double(uint8([255 0 0]))) * 255 = 16 + 65.481 = 81.481.
    px = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 0, 0], [255, 255, 255]], np.uint8)
    np.testing.assert_allclose(iq.rgb2ycbcr_y(px), [81.481, 144.553, 40.966, 16.0, 235.0],
                               rtol=1e-12)
    np.testing.assert_allclose(metrics.rgb2ycbcr_y(np.array([10.0, 20.0, 30.0])),
                               16 + (654.81 + 2571.06 + 748.98) / 255, rtol=1e-12)

  def test_psnr_matches_skimage_on_y(self):
    sr, hr = _images()
    scale = 3
    sr_q = np.floor(np.clip(sr, 0, 255) + 0.5)
    y_sr = iq.rgb2ycbcr_y(sr_q)[scale:-scale, scale:-scale]
    y_hr = iq.rgb2ycbcr_y(hr)[scale:-scale, scale:-scale]
    expected = skm.peak_signal_noise_ratio(y_hr, y_sr, data_range=255)
    self.assertAlmostEqual(metrics.psnr(sr, hr, scale), expected, places=10)
    # rgb_range 1 inputs give the same number.
    self.assertAlmostEqual(metrics.psnr(sr / 255, hr / 255.0, scale, rgb_range=1), expected,
                           places=10)
    # RGB protocol.
    expected_rgb = skm.peak_signal_noise_ratio(
        hr[scale:-scale, scale:-scale].astype(np.float64), sr_q[scale:-scale, scale:-scale],
        data_range=255)
    self.assertAlmostEqual(metrics.psnr(sr, hr, scale, y_channel=False), expected_rgb, places=10)

  def test_psnr_hand_value_and_batch(self):
    hr = np.full((8, 8), 100, np.uint8)
    sr = hr.astype(np.float64) + 2.4  # rounds to +2 -> MSE 4 on the gray image
    self.assertAlmostEqual(iq.psnr(sr, hr, 2), 10 * math.log10(255 ** 2 / 4), places=12)
    self.assertEqual(iq.psnr(hr, hr, 2), math.inf)
    sr1, hr1 = _images(1)
    sr2, hr2 = _images(2)
    batch = iq.psnr(np.stack([sr1, sr2]), np.stack([hr1, hr2]), 2)
    self.assertAlmostEqual(batch, (iq.psnr(sr1, hr1, 2) + iq.psnr(sr2, hr2, 2)) / 2, places=12)
    with self.assertRaisesRegex(ValueError, "shapes differ"):
      iq.psnr(sr1[:-1], hr1, 2)

  def test_ssim_matches_skimage(self):
    sr, hr = _images(3, (48, 44, 3))
    scale = 2
    sr_q = np.floor(np.clip(sr, 0, 255) + 0.5)
    y_sr = iq.rgb2ycbcr_y(sr_q)[scale:-scale, scale:-scale]
    y_hr = iq.rgb2ycbcr_y(hr)[scale:-scale, scale:-scale]
    # skimage with Wang's settings: 11x11 Gaussian sigma 1.5, population covariance; its mean
    # over the map cropped by 5 equals MATLAB's 'valid' filtering.
    expected = skm.structural_similarity(y_hr, y_sr, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, data_range=255)
    self.assertAlmostEqual(metrics.ssim(sr, hr, scale), expected, places=8)
    self.assertAlmostEqual(metrics.ssim(hr, hr, scale), 1.0, places=12)
    rgb = metrics.ssim(sr, hr, scale, y_channel=False)
    per_channel = [skm.structural_similarity(
        hr[scale:-scale, scale:-scale, c].astype(np.float64), sr_q[scale:-scale, scale:-scale, c],
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
                   for c in range(3)]
    self.assertAlmostEqual(rgb, np.mean(per_channel), places=8)

  def test_psnr_hand_value_on_y_channel(self):
    # RGB gray 100 and the same with red + 10: only Y's red term changes, by 10 * 65.481 / 255
    # (MATLAB rgb2ycbcr), so MSE = (10 * 65.481 / 255)^2 on every pixel.
    hr = np.full((10, 10, 3), 100, np.uint8)
    sr = hr.astype(np.float64)
    sr[..., 0] += 10
    dy = 10 * 65.481 / 255
    self.assertAlmostEqual(iq.psnr(sr, hr, 2), 10 * math.log10(255 ** 2 / dy ** 2), places=10)

  def test_ssim_hand_values(self):
    # Identical images: 1. Two constant images a, b: variances and covariance are 0, so
    # SSIM = (2ab + C1) / (a^2 + b^2 + C1) with C1 = (0.01 * 255)^2 (the C2 factor is C2 / C2).
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, (16, 16))
    self.assertAlmostEqual(iq.ssim_index(img, img), 1.0, places=12)
    a, b, c1 = 100.0, 120.0, (0.01 * 255) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    self.assertAlmostEqual(iq.ssim_index(np.full((13, 13), a), np.full((13, 13), b)), expected,
                           places=12)
    # Through the protocol (gray uint8 images, shave 1): same value.
    self.assertAlmostEqual(iq.ssim(np.full((15, 15), b), np.full((15, 15), a, np.uint8), 1),
                           expected, places=12)

  def test_ssim_window(self):
    g = iq._gaussian_window_1d()
    r = np.arange(-5, 6)
    w2 = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5 ** 2))
    np.testing.assert_allclose(np.outer(g, g), w2 / w2.sum(), rtol=1e-12)

  def test_edsr_psnr(self):
    sr, hr = _images(4)
    hr = hr.astype(np.float64)
    s = np.round(np.clip(sr, 0, 255))
    d = (s - hr) / 255 @ (np.array([65.738, 129.057, 25.064]) / 256)
    expected = -10 * math.log10(np.mean(d[4:-4, 4:-4] ** 2))
    self.assertAlmostEqual(iq.edsr_psnr(sr, hr, 4), expected, places=10)
    d_rgb = ((s - hr) / 255)[10:-10, 10:-10]
    self.assertAlmostEqual(iq.edsr_psnr(sr, hr, 4, benchmark=False),
                           -10 * math.log10(np.mean(d_rgb ** 2)), places=10)


if __name__ == "__main__":
  absltest.main()
