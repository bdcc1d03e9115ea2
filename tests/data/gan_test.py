"""Image-translation data: batch contract, paired/unpaired crops, folders, TFDS, offline sets."""
from __future__ import annotations

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from configs import common
from jaxcompress import errors
from jaxcompress.data import gan, gan_offline, pipeline, sources, transforms
from jaxcompress.train import evaluation, loop


def _config(name: str, **source_kwargs) -> ml_collections.ConfigDict:
  c = common.base_config()
  c.data.name = name
  c.data.source_kwargs = ml_collections.ConfigDict(source_kwargs)
  c.data.transform = "gan_resize_crop"
  c.data.transform_kwargs = ml_collections.ConfigDict({"load_size": 40, "crop_size": 32})
  c.data.batch_size = c.data.eval_batch_size = 4
  c.num_steps = 3
  c.num_devices = 1
  c.progress = "none"
  return c


def _find_window(big: np.ndarray, small: np.ndarray) -> tuple[int, int, bool]:
  """The (x, y, flip) at which `small` is a window of `big` (flipped when `flip`)."""
  k = small.shape[0]
  hits = [(x, y, flip) for flip in (False, True) for y in range(big.shape[0] - k + 1)
          for x in range(big.shape[1] - k + 1)
          if np.array_equal(big[y:y + k, x:x + k][:, ::-1] if flip else big[y:y + k, x:x + k],
                            small)]
  assert len(hits) == 1, hits
  return hits[0]


def _bicubic(image: np.ndarray, size: int) -> np.ndarray:
  return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))


def _to_uint8(x: np.ndarray) -> np.ndarray:
  return np.round((x + 1.0) * 127.5).astype(np.uint8)


@pytest.mark.parametrize("name", ["gan_offline_unpaired", "gan_offline_paired"])
def test_offline_sets_through_the_engine_meet_the_batch_contract(name):
  c = _config(name, num_examples=12, num_test_examples=10, image_size=48)
  setup = loop.build(c)
  batch = setup.train_ds[1]
  assert set(batch) == {"A", "B", "index"}
  for key in ("A", "B"):
    assert batch[key].dtype == np.float32 and batch[key].shape == (4, 32, 32, 3)
    assert batch[key].min() >= -1.0 and batch[key].max() <= 1.0 and batch[key].std() > 0.05
  np.testing.assert_array_equal(loop.build(c).train_ds[1]["B"], batch["B"])  # (seed, step)
  c.seed = 1
  assert not np.array_equal(loop.build(c).train_ds[1]["A"], batch["A"])
  ev = evaluation.Evaluation(c, setup.method, setup.mesh, every=1, options=setup.options)
  batches = list(pipeline.iterate(ev.dataset(ev.evaluators[0], "test")))
  # The unpaired offline set knows the ideal translation of its held-out A crops.
  extra = {"B_ref"} if name == "gan_offline_unpaired" else set()
  assert set(batches[0]) == {"A", "B", "mask"} | extra and batches[0]["A"].shape == (4, 32, 32, 3)
  assert sum(b["mask"].sum() for b in batches) == 10
  if extra:
    valid = np.concatenate([b["mask"] for b in batches]) > 0
    ref = np.concatenate([b["B_ref"] for b in batches])[valid]
    a = np.concatenate([b["A"] for b in batches])[valid]
    want = gan_offline.winter(np.round((a + 1) * 127.5).astype(np.uint8))
    # (resized 48 -> 32 after the map, so equal up to resampling)
    assert np.mean(np.abs((ref + 1) * 127.5 - want)) < 1.5
    assert np.mean(np.abs((ref + 1) * 127.5 - (a + 1) * 127.5)) > 10  # not the input itself


def test_offline_unpaired_is_photo_to_winter_on_held_out_photos():
  train = sources.get("gan_offline_unpaired", "train", num_examples=24, image_size=32)
  test = sources.get("gan_offline_unpaired", "test", num_test_examples=8, image_size=32)
  assert not set(gan_offline.TRAIN_A + gan_offline.TRAIN_B) & set(
      gan_offline.TEST_A + gan_offline.TEST_B)
  assert len(train) == 24 and len(test) == 8
  assert len({train.a[i].tobytes() for i in range(24)}) == 24   # distinct crops
  # B = winter(crops of the B photos): less saturated, bluer, brighter (darkest pixel >= 63).
  raw = gan_offline.random_crops(gan_offline.TRAIN_B, 24, 32, [0, 1, 0]).astype(np.float32)
  b = np.asarray(train.b, np.float32)
  sat = lambda x: (x.max(-1) - x.min(-1)).mean()  # noqa: E731
  blue = lambda x: (x[..., 2] - x[..., 0]).mean()  # noqa: E731
  assert sat(b) < 0.6 * sat(raw) and blue(b) > blue(raw) + 10
  assert b.min() >= 63 and b.mean() > raw.mean() + 20
  assert sources.get("gan_offline_unpaired", "test", num_test_examples=8, image_size=32).a is test.a
  with pytest.raises(errors.ConfigError, match="'train' and 'test'"):
    sources.get("gan_offline_unpaired", "bogus")


def test_winter_matches_its_documented_formula():
  rng = np.random.default_rng(0)
  px = rng.integers(0, 256, (50, 3)).astype(np.uint8)
  out = gan_offline.winter(px)
  for p, o in zip(px, out):
    r, g, b = (float(v) / 255 for v in p)
    gray = 0.299 * r + 0.587 * g + 0.114 * b
    ref = [1 - 0.75 * (1 - (gray + 0.4 * (v - gray)) * t)
           for v, t in zip((r, g, b), (0.9, 0.97, 1.1))]
    ref = np.round(255 * np.clip(ref, 0, 1))
    assert np.max(np.abs(ref - o.astype(float))) <= 1


def test_offline_paired_a_is_the_edge_map_of_b():
  src = sources.get("gan_offline_paired", "train", num_examples=6, image_size=48)
  for i in range(6):
    ex = src[i]
    from skimage import color, feature
    edges = feature.canny(color.rgb2gray(ex["B"]), sigma=1.5)
    assert ex["A"].shape == ex["B"].shape == (48, 48, 3)
    np.testing.assert_array_equal(ex["A"][..., 1], np.where(edges, 0, 255))
    np.testing.assert_array_equal(ex["A"][..., 0], ex["A"][..., 2])
    assert 0.01 < edges.mean() < 0.5


def test_paired_crop_and_flip_are_shared_by_a_and_b():
  rng = np.random.default_rng(0)
  a = rng.integers(0, 256, (30, 38, 3), dtype=np.uint8)
  src = gan.PairedSource([a], [255 - a])   # B a known function of A
  fn = transforms.get("gan_resize_crop", train=True, load_size=24, crop_size=16)
  ra, rb = _bicubic(a, 24), _bicubic(255 - a, 24)
  seen = set()
  for seed in range(12):
    out = fn(src[0], np.random.default_rng(seed))
    assert out["A"].dtype == np.float32 and out["A"].shape == (16, 16, 3)
    assert np.max(np.abs(out["A"] + out["B"])) <= 1.01 / 127.5   # B = -A up to rounding
    where = _find_window(ra, _to_uint8(out["A"]))
    assert _find_window(rb, _to_uint8(out["B"])) == where
    seen.add(where)
  assert len(seen) > 6 and {w[2] for w in seen} == {False, True}
  no_flip = transforms.get("gan_resize_crop", train=True, load_size=24, crop_size=16,
                           no_flip=True)
  assert not any(_find_window(ra, _to_uint8(no_flip(src[0], np.random.default_rng(s))["A"]))[2]
                 for s in range(8))
  ev = transforms.get("gan_resize_crop", train=False, load_size=24, crop_size=16)(
      src[0], np.random.default_rng(5))
  np.testing.assert_array_equal(_to_uint8(ev["A"]), _bicubic(a, 16))


def test_unpaired_b_is_random_in_training_and_serial_in_eval():
  dom_a = [np.full((8, 8, 3), i, np.uint8) for i in range(6)]
  dom_b = [np.full((8, 8, 3), 100 + j, np.uint8) for j in range(10)]
  src = gan.UnpairedSource(dom_a, dom_b)
  assert len(src) == 10 and len(gan.UnpairedSource(dom_a, dom_b, length="A")) == 6
  fn = transforms.get("gan_resize_crop", train=True, load_size=8, crop_size=8)
  drawn = [int(_to_uint8(fn(src[7], np.random.default_rng(s))["B"])[0, 0, 0]) - 100
           for s in range(300)]
  assert int(_to_uint8(fn(src[7], np.random.default_rng(0))["A"])[0, 0, 0]) == 7 % 6
  assert np.bincount(drawn, minlength=10).min() >= 12   # every B image, about uniformly
  serial = transforms.get("gan_resize_crop", train=True, load_size=8, crop_size=8,
                          serial_batches=True)
  ev = transforms.get("gan_resize_crop", train=False, load_size=8, crop_size=8)
  for i in range(10):
    for f in (serial, ev):
      assert int(_to_uint8(f(src[i], np.random.default_rng(i))["B"])[0, 0, 0]) == 100 + i
  # Own crop and flip per image: the same ramp in both domains comes out differently.
  ramp = np.tile(np.linspace(0, 255, 12).astype(np.uint8)[None, :, None], (12, 1, 3))
  ramp = ramp + np.arange(12, dtype=np.uint8)[:, None, None]
  fn = transforms.get("gan_resize_crop", train=True, load_size=12, crop_size=8)
  outs = [fn(gan.UnpairedSource([ramp], [ramp])[0], np.random.default_rng(s)) for s in range(10)]
  assert sum(not np.array_equal(o["A"], o["B"]) for o in outs) >= 7
  paired = [fn(gan.PairedSource([ramp], [ramp])[0], np.random.default_rng(s)) for s in range(10)]
  assert all(np.array_equal(o["A"], o["B"]) for o in paired)


def test_btoa_swaps_input_and_target():
  rng = np.random.default_rng(1)
  a, b = rng.integers(0, 256, (2, 20, 20, 3), dtype=np.uint8)
  ex = gan.PairedSource([a], [b])[0]
  for train in (True, False):
    ab = transforms.get("gan_resize_crop", train=train, load_size=18, crop_size=16)
    ba = transforms.get("gan_resize_crop", train=train, load_size=18, crop_size=16,
                        direction="BtoA")
    x, y = ab(ex, np.random.default_rng(3)), ba(ex, np.random.default_rng(3))
    np.testing.assert_array_equal(x["A"], y["B"])
    np.testing.assert_array_equal(x["B"], y["A"])
    assert not np.array_equal(x["A"], y["A"])


def test_transform_errors_name_the_fix():
  with pytest.raises(errors.ConfigError, match="load_size >= crop_size"):
    transforms.get("gan_resize_crop", train=True, load_size=16, crop_size=32)
  with pytest.raises(errors.ConfigError, match="'AtoB' or 'BtoA'"):
    transforms.get("gan_resize_crop", train=True, direction="AtoC")
  src = gan.UnpairedSource([np.zeros((4, 4, 3), np.uint8)] * 4, [np.zeros((4, 4, 3), np.uint8)])
  ds = pipeline.train_dataset(src, global_batch_size=2, num_steps=1, seed=0,
                              options=pipeline.ImageOptions())
  with pytest.raises(errors.ConfigError, match="transform = 'gan_resize_crop'"):
    ds[0]


def _side_by_side(path, a_color, b_color, h=24, w=32):  # halves on JPEG 16-pixel blocks
  ab = np.zeros((h, 2 * w, 3), np.uint8)
  ab[:, :w], ab[:, w:] = a_color, b_color
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(ab).save(path, quality=95)


def test_pix2pix_folder_splits_side_by_side_images(tmp_path):
  root = tmp_path / "facades"
  for i in range(3):
    _side_by_side(root / "train" / f"{i}.jpg", (200, 30, 30 + 10 * i), (20, 40, 220))
  _side_by_side(root / "train" / "more" / "9.jpg", (0, 0, 0), (255, 255, 255))  # recursive
  _side_by_side(root / "val" / "1.jpg", (90, 90, 90), (10, 10, 10))
  src = sources.get("pix2pix_folder", "train", root=str(root))
  assert len(src) == 4
  ex = src[1]
  assert ex["A"].shape == ex["B"].shape == (24, 32, 3)
  # Away from the seam (JPEG chroma upsampling blends a few columns across it).
  assert np.abs(ex["A"][:, :-3].astype(int) - (200, 30, 40)).max() <= 6
  assert np.abs(ex["B"][:, 3:].astype(int) - (20, 40, 220)).max() <= 6
  assert len(gan.pix2pix_folder("validation", data_dir=str(root))) == 1
  c = _config("pix2pix_folder", root=str(root))
  c.data.eval_split = "val"
  batch = loop.build(c).train_ds[0]
  assert batch["A"].shape == (4, 32, 32, 3) and batch["B"].dtype == np.float32
  with pytest.raises(errors.DatasetNotFoundError, match=r"sub-folders: \['train', 'val'\]"):
    sources.get("pix2pix_folder", "test", root=str(root))
  with pytest.raises(errors.DatasetNotFoundError,
                     match=r"(?s)<root>/train/<name>.jpg.*pix2pix/datasets/edges2shoes.tar.gz"
                           r".*gan_offline_paired"):
    sources.get("pix2pix_folder", "train", root=str(tmp_path / "edges2shoes"))


def test_cyclegan_folder_reads_the_official_unaligned_layout(tmp_path):
  for sub, n in (("trainA", 3), ("trainB", 5), ("testA", 2), ("testB", 1)):
    (tmp_path / sub).mkdir()
    for i in range(n):
      Image.fromarray(np.full((10, 12, 3), 40 * i, np.uint8)).save(tmp_path / sub / f"{i}.png")
  train = sources.get("cyclegan_folder", "train", root=str(tmp_path))
  assert len(train) == 5 and train[4]["A"][0, 0, 0] == 40 * (4 % 3)
  assert train[4]["B"].image()[0, 0, 0] == 160
  assert len(sources.get("cyclegan_folder", "test", root=str(tmp_path))) == 2
  with pytest.raises(errors.DatasetNotFoundError, match=r"cyclegan/datasets/horse2zebra.zip"):
    sources.get("cyclegan_folder", "train")


def test_tfds_cycle_gan_reads_through_data_source_with_mock_data():
  with tfds.testing.mock_data(num_examples=6):
    src = sources.get("cycle_gan", "train", task="summer2winter_yosemite")
    assert len(src) == 6
    fn = transforms.get("gan_resize_crop", train=True, load_size=36, crop_size=32)
    ds = pipeline.train_dataset(src, global_batch_size=3, num_steps=2, seed=0,
                                options=pipeline.ImageOptions(), example_fn=fn)
    batch = ds[1]
    assert batch["A"].shape == batch["B"].shape == (3, 32, 32, 3)
    assert -1.0 <= batch["A"].min() and batch["B"].max() <= 1.0


def test_missing_or_unknown_cycle_gan_task_names_the_fix(tmp_path):
  with pytest.raises(errors.DatasetNotFoundError,
                     match=r"(?s)pip install -e \.\[prepare\] && tfds build cycle_gan/horse2zebra "
                           r"--file_format=array_record.*gan_offline_unpaired"):
    gan.cycle_gan("train", task="horse2zebra", data_dir=str(tmp_path))
  with pytest.raises(errors.ConfigError, match="horse2zebra"):
    sources.get("cycle_gan", "train", task="horse2dog")
