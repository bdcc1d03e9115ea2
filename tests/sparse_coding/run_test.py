"""Tests for run_csc: a tiny run of each task, its outputs against the metrics, config errors."""
from __future__ import annotations

import numpy as np
import pytest

from jaxcompress import sparse_coding as sc
from jaxcompress.sparse_coding.run import run_csc

_TINY = dict(num_images=2, image_size=20, num_filters=4, filter_size=5, num_iters=3,
             num_iters_d=2, num_iters_z=2, dtype="float32")


def test_inpainting_run_outputs():
  out = run_csc({**_TINY, "task": "inpainting"})
  assert out["reconstruction"].shape == (2, 20, 20) and out["filters"].shape == (4, 5, 5)
  assert len(out["objective"]) == 3 and len(out["rolled_back"]) == 3
  assert np.isfinite(out["psnr"]) and -1 <= out["ssim"] <= 1
  clean = sc.data.skimage_photos(2, 20)
  # The cropped reconstruction re-padded by 2 on each side gives back the reported means.
  padded = np.pad(out["reconstruction"], ((0, 0), (2, 2), (2, 2)))
  np.testing.assert_allclose(out["psnr_per_image"], sc.psnr_bt(clean, padded), rtol=1e-5)
  np.testing.assert_allclose(out["ssim"], np.mean(sc.ssim_bt(clean, padded)), rtol=1e-5)
  assert out["psnr"] == pytest.approx(out["psnr_history"][-1], rel=1e-4)


def test_config_errors(tmp_path):
  with pytest.raises(ValueError, match="unknown run_csc keys"):
    run_csc({"iterations": 3})
  with pytest.raises(ValueError, match="task must be"):
    run_csc({"task": "denoising"})
  with pytest.raises(FileNotFoundError, match="CoGD-master.zip"):
    run_csc({**_TINY, "images": str(tmp_path)})
  with pytest.raises(NotImplementedError, match="projection function"):
    run_csc({**_TINY, "correction": "paper"})
