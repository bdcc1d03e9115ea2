"""Tests for the re-identification folder readers on tiny fixture folders that use each
dataset's real naming scheme: identities, cameras, relabelling, splits, junk and distractors."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image
from scipy import io as sio

from jaxcompress.data import reid_folders, sources, transforms
from jaxcompress.errors import ConfigError, DatasetNotFoundError

# One small encoded image per format, written under every fixture name.
_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP"}


def _encoded(ext, colour=(200, 40, 40), size=(8, 16)):
  buf = io.BytesIO()
  Image.new("RGB", size, colour).save(buf, _FORMATS[ext])
  return buf.getvalue()


def _write(folder, names, colour=(200, 40, 40)):
  os.makedirs(folder, exist_ok=True)
  blobs = {}
  for name in names:
    ext = os.path.splitext(name)[1]
    blobs.setdefault(ext, _encoded(ext, colour))
    with open(os.path.join(folder, name), "wb") as f:
      f.write(blobs[ext])


def _names(source):
  return [os.path.basename(p) for p in source.paths]


MARKET = {
    "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg",
                           "0007_c3s1_000551_01.jpg", "0010_c6s4_002452_02.jpg"],
    "query": ["0001_c1s1_001051_00.jpg", "0003_c2s1_000601_00.jpg"],
    "bounding_box_test": ["-1_c1s1_000002_01.jpg", "0000_c1s1_000001_01.jpg",
                          "0001_c1s1_001051_03.jpg", "0001_c2s1_000476_03.jpg",
                          "0003_c4s2_010001_02.jpg", "0004_c5s3_065187_04.jpg"],
}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  """All fixture datasets under one data directory."""
  base = str(tmp_path_factory.mktemp("reid"))
  for sub, names in MARKET.items():
    _write(os.path.join(base, "Market-1501-v15.09.15", sub), names)
  duke = {"bounding_box_train": ["0005_c2_f0046182.jpg", "0005_c8_f0001234.jpg",
                                 "0012_c1_f0000001.jpg"],
          "query": ["0001_c5_f0051112.jpg"],
          "bounding_box_test": ["0001_c6_f0055001.jpg", "0009_c7_f0000002.jpg"]}
  for sub, names in duke.items():
    _write(os.path.join(base, "dukemtmc-reid", "DukeMTMC-reID", sub), names)
  np_layout = {"bounding_box_train": ["0003_c1_1.png", "0003_c2_6.png", "0001_c1_2.png"],
               "query": ["0100_c1_1.png"], "bounding_box_test": ["0100_c2_6.png",
                                                                 "0101_c1_1.png"]}
  for sub, names in np_layout.items():
    _write(os.path.join(base, "cuhk03-np", "detected", sub), names)
  # torchreid's layout for the labeled images: extracted files and the new-protocol file.
  files = ["1_001_1_01.png", "1_001_2_06.png", "1_002_1_01.png", "2_005_1_02.png",
           "2_005_2_07.png", "3_010_2_08.png"]
  _write(os.path.join(base, "cuhk03", "images_labeled"), files)
  filelist = np.empty((len(files), 1), dtype=object)
  for i, f in enumerate(files):
    filelist[i, 0] = f
  sio.savemat(os.path.join(base, "cuhk03", "cuhk03_new_protocol_config_labeled.mat"), {
      "filelist": filelist, "labels": np.array([[7], [7], [3], [20], [20], [11]]),
      "train_idx": np.array([[1], [2], [3], [6]]), "query_idx": np.array([[4]]),
      "gallery_idx": np.array([[5]])})
  msmt = os.path.join(base, "MSMT17_V1")
  lists = {"list_train.txt": [("0000/0000_000_01_0303morning_0008_0.jpg", 0),
                              ("0000/0000_001_05_0303morning_0010_1.jpg", 0),
                              ("0001/0001_000_15_0303noon_0042_0.jpg", 1)],
           "list_val.txt": [("0002/0002_003_02_0304afternoon_0001_2.jpg", 2)],
           "list_query.txt": [("0000/0000_000_03_0113morning_0004_0.jpg", 0)],
           "list_gallery.txt": [("0000/0000_004_07_0113noon_0015_1.jpg", 0),
                                ("0001/0001_000_11_0114morning_0002_0.jpg", 1)]}
  for name, rows in lists.items():
    folder = "train" if name in ("list_train.txt", "list_val.txt") else "test"
    for rel, _ in rows:
      _write(os.path.join(msmt, folder, os.path.dirname(rel)), [os.path.basename(rel)])
    with open(os.path.join(msmt, name), "w") as f:
      f.write("".join(f"{rel} {pid}\n" for rel, pid in rows))
  for k, pair in enumerate(("P1", "P2", "P3", "P4", "P5")):
    for v in (1, 2):
      _write(os.path.join(base, "cuhk02", "Dataset", pair, f"cam{v}"),
             [f"{n:03d}_{v}.png" for n in (1, 2)] + ([f"009_{v}.png"] if k == 0 else []))
  _write(os.path.join(base, "cuhksysu", "cropped_images"),
         ["p10001_s15183.jpg", "p10001_s15190.jpg", "p42_s3.jpg", "p900_s12.jpg"])
  return base


def test_market_ids_cameras_relabelling_junk_and_distractors(root):
  train = reid_folders.market1501("train", data_dir=root)
  # Ascending original ids 2, 7, 10 -> 0, 1, 2; cameras c1..c6 -> 0..5.
  assert _names(train) == sorted(MARKET["bounding_box_train"])
  assert train.labels.tolist() == [0, 0, 1, 2] and train.cameras.tolist() == [0, 1, 2, 5]
  assert train.num_classes == 3
  query = reid_folders.market1501("query", data_dir=root)
  assert query.labels.tolist() == [1, 3] and query.cameras.tolist() == [0, 1]
  assert query.num_classes is None
  gallery = reid_folders.market1501("gallery", data_dir=root)
  # Junk (-1) dropped; the 0000 distractor stays with id 0.
  assert len(gallery) == 5 and -1 not in gallery.labels.tolist()
  assert gallery.labels.tolist() == [0, 1, 1, 3, 4]
  assert gallery.cameras.tolist() == [0, 0, 1, 3, 4]
  everything = reid_folders.market1501("all", data_dir=root)
  # Every identity of every split, neither junk nor distractors: 1, 2, 3, 4, 7, 10.
  assert everything.num_classes == 6 and len(everything) == 4 + 2 + 4
  ids = {1: 0, 2: 1, 3: 2, 4: 3, 7: 4, 10: 5}
  expected = [ids[int(n.split("_")[0])] for n in _names(everything)]
  assert everything.labels.tolist() == expected


def test_images_are_decoded_lazily_and_resized(root):
  train = reid_folders.market1501("train", data_dir=root)
  item = train[0]
  assert set(item) == {"image", "label", "camera"}
  assert item["image"].shape == (256, 128, 3) and item["image"].dtype == np.uint8
  small = reid_folders.market1501("train", data_dir=root, image_size=(16, 8))[1]["image"]
  assert small.shape == (16, 8, 3)
  # A solid colour survives JPEG and the resize.
  np.testing.assert_allclose(small.reshape(-1, 3).mean(0), (200, 40, 40), atol=6)
  native = reid_folders.market1501("train", data_dir=root, image_size=None)[0]["image"]
  assert native.shape == (16, 8, 3)
  with pytest.raises(ConfigError, match="height, width"):
    reid_folders.market1501("train", data_dir=root, image_size=(256,))


def test_duke_eight_cameras_and_all_merges_query_and_gallery_ids(root):
  train = reid_folders.dukemtmc_reid("train", data_dir=root)
  assert train.labels.tolist() == [0, 0, 1] and train.cameras.tolist() == [1, 7, 0]
  gallery = reid_folders.dukemtmc_reid("gallery", data_dir=root)
  assert gallery.labels.tolist() == [1, 9] and gallery.cameras.tolist() == [5, 6]
  everything = reid_folders.dukemtmc_reid("all", data_dir=root)
  # Person 1 is in the query and the gallery: one identity. Ids 1, 5, 9, 12.
  assert everything.num_classes == 4 and len(everything) == 6


def test_cuhk03_np_folders_and_new_protocol_mat(root):
  train = reid_folders.cuhk03("train", data_dir=root)  # detected: CUHK03-NP folders
  assert _names(train) == ["0001_c1_2.png", "0003_c1_1.png", "0003_c2_6.png"]
  assert train.labels.tolist() == [0, 1, 1] and train.cameras.tolist() == [0, 0, 1]
  assert reid_folders.cuhk03("gallery", data_dir=root).labels.tolist() == [100, 101]
  # labeled: the .mat split (1-based indices), camera = the view field, original labels.
  lab = reid_folders.cuhk03("train", data_dir=root, variant="labeled")
  assert _names(lab) == ["1_001_1_01.png", "1_001_2_06.png", "1_002_1_01.png", "3_010_2_08.png"]
  # Labels 7, 7, 3, 11 -> 1, 1, 0, 2.
  assert lab.labels.tolist() == [1, 1, 0, 2] and lab.cameras.tolist() == [0, 1, 0, 1]
  query = reid_folders.cuhk03("query", data_dir=root, variant="labeled")
  gallery = reid_folders.cuhk03("gallery", data_dir=root, variant="labeled")
  assert (_names(query), query.labels.tolist(), query.cameras.tolist()) == (
      ["2_005_1_02.png"], [20], [0])
  assert (_names(gallery), gallery.labels.tolist(), gallery.cameras.tolist()) == (
      ["2_005_2_07.png"], [20], [1])
  assert lab[0]["image"].shape == (256, 128, 3)
  with pytest.raises(ConfigError, match="detected"):
    reid_folders.cuhk03("train", data_dir=root, variant="raw")


def test_msmt17_lists_cameras_and_separate_train_test_numbering(root):
  train = reid_folders.msmt17("train", data_dir=root)
  assert train.labels.tolist() == [0, 0, 1, 2] and train.cameras.tolist() == [0, 4, 14, 1]
  assert len(reid_folders.msmt17("train", data_dir=root, include_val=False)) == 3
  query = reid_folders.msmt17("query", data_dir=root)
  assert query.labels.tolist() == [0] and query.cameras.tolist() == [2]
  assert query.paths[0].endswith(os.path.join("MSMT17_V1", "test", "0000",
                                              "0000_000_03_0113morning_0004_0.jpg"))
  gallery = reid_folders.msmt17("gallery", data_dir=root)
  assert gallery.labels.tolist() == [0, 1] and gallery.cameras.tolist() == [6, 10]
  # Train persons 0, 1, 2 and test persons 0, 1 are five people.
  assert reid_folders.msmt17("all", data_dir=root).num_classes == 5
  assert train[3]["image"].shape == (256, 128, 3)


def test_cuhk02_pairs_cameras_and_p5_test(root):
  train = reid_folders.cuhk02("train", data_dir=root)
  # P1 has persons 1, 2, 9, P2..P4 persons 1, 2: 3 + 2 * 3 = 9 people, two views each.
  assert train.num_classes == 9 and len(train) == 18
  assert sorted(set(train.cameras.tolist())) == list(range(8))
  # The same number in different pairs is a different person.
  first = train.labels[train.cameras == 0]
  second = train.labels[train.cameras == 2]
  assert not set(first.tolist()) & set(second.tolist())
  query = reid_folders.cuhk02("query", data_dir=root)
  gallery = reid_folders.cuhk02("gallery", data_dir=root)
  assert query.labels.tolist() == [1, 2] and query.cameras.tolist() == [8, 8]
  assert gallery.labels.tolist() == [1, 2] and gallery.cameras.tolist() == [9, 9]
  assert reid_folders.cuhk02("all", data_dir=root).num_classes == 11


def test_cuhk_sysu_is_training_only(root):
  train = reid_folders.cuhk_sysu("train", data_dir=root)
  # Ids 42, 900, 10001 in ascending order; one dummy camera.
  by_name = dict(zip(_names(train), train.labels.tolist()))
  assert by_name == {"p10001_s15183.jpg": 2, "p10001_s15190.jpg": 2, "p42_s3.jpg": 0,
                     "p900_s12.jpg": 1}
  assert set(train.cameras.tolist()) == {0}
  with pytest.raises(ConfigError, match="training set"):
    reid_folders.cuhk_sysu("query", data_dir=root)


def test_missing_folders_say_which_layout_to_put_where(tmp_path, root):
  with pytest.raises(DatasetNotFoundError, match="(?s)bounding_box_train.*data_dir"):
    reid_folders.market1501("train", data_dir=str(tmp_path))
  with pytest.raises(DatasetNotFoundError, match="needs a data directory"):
    reid_folders.dukemtmc_reid("train")
  with pytest.raises(DatasetNotFoundError, match="cuhk03_new_protocol_config_labeled.mat"):
    reid_folders.cuhk03("train", data_dir=str(tmp_path), variant="labeled")
  with pytest.raises(DatasetNotFoundError, match="MSMT17_V1/train"):
    reid_folders.msmt17("train", data_dir=str(tmp_path))
  with pytest.raises(ConfigError, match="splits"):
    reid_folders.market1501("test", data_dir=root)


def test_unparsable_file_names_are_reported(tmp_path):
  for sub in reid_folders.MARKET_DIRS.values():
    _write(os.path.join(str(tmp_path), "market1501", sub), ["0001_c1s1_000001_00.jpg"])
  _write(os.path.join(str(tmp_path), "market1501", "query"), ["copy of 1.jpg"])
  with pytest.raises(ConfigError, match="copy of 1.jpg"):
    reid_folders.market1501("query", data_dir=str(tmp_path))


def test_sources_are_registered_and_take_data_dir(root):
  transforms.load_providers()
  for name in ("market1501", "dukemtmc_reid", "cuhk03", "msmt17", "cuhk02", "cuhk_sysu"):
    assert name in sources.names()
  train = sources.get("market1501", "train", data_dir=root, image_size=(8, 4))
  assert len(train) == 4 and train[0]["image"].shape == (8, 4, 3)
  lab = sources.get_configured("cuhk03", "query", root, {"variant": "labeled"})
  assert lab.labels.tolist() == [20]


def test_subset_keeps_order_and_can_relabel(root):
  gallery = reid_folders.market1501("gallery", data_dir=root)
  sub = gallery.subset([4, 1])
  assert sub.labels.tolist() == [4, 1] and sub.paths == [gallery.paths[4], gallery.paths[1]]
  relabelled = gallery.subset([4, 1, 2], relabel=True)
  assert relabelled.labels.tolist() == [1, 0, 0] and relabelled.num_classes == 2
