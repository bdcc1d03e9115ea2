"""Super-resolution data: offline photos, benchmark folders, DIV2K errors, the sr_patch transform."""
from __future__ import annotations

import numpy as np
import pytest

from jaxcompress import errors
from jaxcompress.data import sources, sr, transforms
from jaxcompress.data.imresize import imresize


def test_offline_source_pairs_split_and_lr_is_matlab_bicubic():
  train = sources.get("sr_offline", "train", scale=4, repeat=3)
  test = sources.get("sr_offline", "test", scale=4)
  assert len(train) == 3 * len(sr.OFFLINE_TRAIN) and len(test) == len(sr.OFFLINE_TEST)
  assert not set(train.names) & set(test.names)
  ex = test[0]
  lr, hr = ex["lr"], ex["hr"]
  assert lr.dtype == hr.dtype == np.uint8 and hr.shape[-1] == 3
  assert hr.shape[0] == 4 * lr.shape[0] and hr.shape[1] == 4 * lr.shape[1]   # modcrop
  np.testing.assert_array_equal(lr, imresize(hr, 1 / 4))
  assert train[len(sr.OFFLINE_TRAIN)]["hr"] is not None   # repeats wrap around
  with pytest.raises(errors.ConfigError):
    sources.get("sr_offline", "bogus")


def test_sr_patch_train_is_aligned_and_eval_is_a_fixed_center_crop():
  src = sources.get("sr_offline", "test", scale=2)
  ex = src[0]
  fn = transforms.get("sr_patch", train=True, patch_size=64, augment=False)
  out = fn(ex, np.random.default_rng(3))
  assert out["lr"].shape == (32, 32, 3) and out["hr"].shape == (64, 64, 3)
  # The LR patch is the bicubic LR of the HR patch region (interior pixels, away from the
  # kernel's support at the patch border).
  down = imresize(out["hr"], 1 / 2).astype(int)
  inner = (slice(3, -3), slice(3, -3))
  assert np.max(np.abs(down[inner] - out["lr"][inner].astype(int))) <= 1
  # Augmented patches: still aligned (same flips/transposes on both).
  aug = transforms.get("sr_patch", train=True, patch_size=64)
  for seed in range(4):
    o = aug(ex, np.random.default_rng(seed))
    d = imresize(o["hr"], 1 / 2).astype(int)
    assert np.max(np.abs(d[inner] - o["lr"][inner].astype(int))) <= 1
  ev = transforms.get("sr_patch", train=False, patch_size=64, eval_patch_size=96)
  a, b = ev(ex, np.random.default_rng(0)), ev(ex, np.random.default_rng(1))
  assert a["hr"].shape == (96, 96, 3) and a["lr"].shape == (48, 48, 3)
  np.testing.assert_array_equal(a["hr"], b["hr"])
  with pytest.raises(errors.ConfigError, match="multiple of the scale"):
    transforms.get("sr_patch", train=True, patch_size=63)(ex, np.random.default_rng(0))


def test_benchmark_folder_layout_and_missing_error(tmp_path):
  from PIL import Image
  rng = np.random.default_rng(0)
  hr_dir = tmp_path / "Set5" / "HR"
  hr_dir.mkdir(parents=True)
  img = rng.integers(0, 256, (37, 42, 3), dtype=np.uint8)
  Image.fromarray(img).save(hr_dir / "baby.png")
  Image.fromarray(img[..., 0]).save(hr_dir / "gray.png")
  src = sources.get("sr_benchmark", "Set5", scale=4, root=str(tmp_path))
  assert src.names == ["baby", "gray"]
  ex = src[0]
  assert ex["hr"].shape == (36, 40, 3) and ex["lr"].shape == (9, 10, 3)
  np.testing.assert_array_equal(ex["lr"], imresize(img[:36, :40], 1 / 4))
  assert src[1]["hr"].shape == (36, 40, 3)   # gray -> 3 channels
  with pytest.raises(errors.DatasetNotFoundError, match=r"<root>/Set14/HR"):
    sources.get("sr_benchmark", "Set14", scale=4, root=str(tmp_path))


def test_missing_div2k_names_the_tfds_build_command(tmp_path):
  with pytest.raises(errors.DatasetNotFoundError,
                     match=r"tfds build div2k/bicubic_x4 --file_format=array_record"):
    sources.get("div2k", "train", scale=4, data_dir=str(tmp_path))
