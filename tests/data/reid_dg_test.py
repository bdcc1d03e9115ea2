"""Tests for DDAN's domain-generalisation benchmark: the concatenated sources (identity offsets,
domain labels) and the four targets' seeded trials, against transcriptions of the release's
evaluation loops (PeixianChen/DDAN, reid/evaluators.py) on fixture folders of the real sizes."""
from __future__ import annotations

import io
import os
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from jaxcompress.data import reid_dg, sources
from jaxcompress.errors import ConfigError, DatasetNotFoundError

_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP"}
# VIPeR numbers its 632 persons with gaps (000..872); the release's copy numbers them 1..632.
VIPER_NUMBERS = [i + i // 2 for i in range(632)]


def _write(folder, names):
  os.makedirs(folder, exist_ok=True)
  blobs = {}
  for name in names:
    ext = os.path.splitext(name)[1]
    if ext not in blobs:
      buf = io.BytesIO()
      Image.new("RGB", (4, 8), (30, 90, 150)).save(buf, _FORMATS[ext])
      blobs[ext] = buf.getvalue()
    with open(os.path.join(folder, name), "wb") as f:
      f.write(blobs[ext])


def _market_style(folder, train, query, gallery):
  for sub, names in (("bounding_box_train", train), ("query", query),
                     ("bounding_box_test", gallery)):
    _write(os.path.join(folder, sub), names)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  base = str(tmp_path_factory.mktemp("dg"))
  # Targets at their real sizes.
  _write(os.path.join(base, "VIPeR", "cam_a"), [f"{n:03d}_45.bmp" for n in VIPER_NUMBERS])
  _write(os.path.join(base, "VIPeR", "cam_b"), [f"{n:03d}_90.bmp" for n in VIPER_NUMBERS])
  prid = os.path.join(base, "prid_2011", "single_shot")
  _write(os.path.join(prid, "cam_a"), [f"person_{i:04d}.png" for i in range(1, 386)])
  _write(os.path.join(prid, "cam_b"), [f"person_{i:04d}.png" for i in range(1, 750)])
  grid = os.path.join(base, "underground_reid")
  _write(os.path.join(grid, "probe"), [f"{i:04d}_{i % 8 + 1}_2500{i}_10_32_106_221.jpeg"
                                       for i in range(1, 251)])
  _write(os.path.join(grid, "gallery"),
         [f"{i:04d}_{(i + 3) % 8 + 1}_3100{i}_11_30_100_200.jpeg" for i in range(1, 251)]
         + [f"0000_{k % 8 + 1}_{40000 + k}_1_1_50_100.jpeg" for k in range(775)])
  _write(os.path.join(base, "i-LIDS_Pedestrian", "Persons"),
         [f"{p:04d}{n:03d}.jpg" for p in range(1, 120) for n in range(1, 5)])
  # Tiny sources.
  _market_style(os.path.join(base, "Market-1501-v15.09.15"),
                ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0007_c3s1_000551_01.jpg"],
                ["0001_c1s1_001051_00.jpg"],
                ["0001_c6s1_000476_03.jpg", "0000_c1s1_000001_01.jpg", "-1_c1s1_000002_01.jpg"])
  _market_style(os.path.join(base, "DukeMTMC-reID"), ["0005_c2_f0046182.jpg"],
                ["0001_c5_f0051112.jpg"], ["0001_c8_f0055001.jpg", "0009_c7_f0000002.jpg"])
  _market_style(os.path.join(base, "cuhk03-np", "detected"), ["0003_c1_1.png", "0003_c2_6.png"],
                ["0100_c1_1.png"], ["0100_c2_6.png"])
  for pair in ("P1", "P2", "P3", "P4", "P5"):
    for v in (1, 2):
      _write(os.path.join(base, "cuhk02", "Dataset", pair, f"cam{v}"), [f"004_{v}.png"])
  _write(os.path.join(base, "cuhksysu", "cropped_images"), ["p7_s1.jpg", "p7_s2.jpg",
                                                             "p8_s1.jpg"])
  return base


def _names(source):
  return [os.path.basename(p) for p in source.paths]


def _pid_to_idx(pids):
  index = defaultdict(list)
  for i, pid in enumerate(pids):
    index[pid].append(i)
  return index


def official_viper(q_pids, g_pids, seed=57, num_folds=10):
  """eval_viper's index selection (ids 1..632), as released."""
  rs = np.random.RandomState(seed)
  q_pid_to_idx, g_pid_to_idx = _pid_to_idx(q_pids), _pid_to_idx(g_pids)
  num_tests, q_num_unique_pids = 316, 632
  folds = []
  for j in range(num_folds):
    if j % 2 == 0:
      selected_pids = rs.choice(q_num_unique_pids, num_tests, replace=False) + 1
    else:
      new_selected_pids = [i for i in range(1, q_num_unique_pids + 1) if i not in selected_pids]
      selected_pids = new_selected_pids
    query_idx = [q_pid_to_idx[pid][0] for pid in selected_pids]
    gallery_idx = [g_pid_to_idx[pid][0] for pid in selected_pids]
    selected_pids = rs.choice(q_num_unique_pids, num_tests, replace=False) + 1
    folds.append((query_idx, gallery_idx))
  return folds


def official_prid(q_pids, g_pids, seed=40, num_folds=10):
  rs = np.random.RandomState(seed)
  q_pid_to_idx, g_pid_to_idx = _pid_to_idx(q_pids), _pid_to_idx(g_pids)
  folds = []
  for _ in range(num_folds):
    selected_pids = rs.choice(200, 100, replace=False) + 1
    query_idx = [q_pid_to_idx[pid][0] for pid in selected_pids]
    gallery_idx = [g_pid_to_idx[pid][0] for pid in selected_pids.tolist() + list(range(201, 750))]
    folds.append((query_idx, gallery_idx))
  return folds


def official_grid(q_pids, g_pids, seed=35, num_folds=10):
  rs = np.random.RandomState(seed)
  q_pid_to_idx, g_pid_to_idx = _pid_to_idx(q_pids), _pid_to_idx(g_pids)
  folds = []
  for _ in range(num_folds):
    selected_pids = rs.choice(250, 125, replace=False) + 1
    query_idx = [q_pid_to_idx[pid][0] for pid in selected_pids]
    gallery_idx = list(g_pid_to_idx[0]) + [g_pid_to_idx[pid][0] for pid in selected_pids]
    folds.append((query_idx, gallery_idx))
  return folds


def official_ilids(all_pids, seed=24, num_folds=10):
  rs = np.random.RandomState(seed)
  pid_to_idx = _pid_to_idx(all_pids)
  num_unique_pids = len(set(all_pids))
  folds = []
  for _ in range(num_folds):
    selected_pids = rs.choice(num_unique_pids, 60, replace=False) + 1
    gallery_idx, query_idx = [], []
    for pid in selected_pids:
      idx1, idx2 = rs.choice(pid_to_idx[pid], 2, replace=False)
      gallery_idx.append(idx1)
      query_idx.append(idx2)
    folds.append((query_idx, gallery_idx))
  return folds


def _trial(target, root, trial):
  return [reid_dg.target_split(target, s, root, trial, image_size=(8, 4))
          for s in ("query", "gallery")]


@pytest.mark.parametrize("trial", range(10))
def test_viper_trials_match_the_release(root, trial):
  q_names = sorted(f"{n:03d}_45.bmp" for n in VIPER_NUMBERS)
  g_names = sorted(f"{n:03d}_90.bmp" for n in VIPER_NUMBERS)
  pid = {n: i + 1 for i, n in enumerate(VIPER_NUMBERS)}  # the release's 1..632
  q_pids = [pid[int(n.split("_")[0])] for n in q_names]
  g_pids = [pid[int(n.split("_")[0])] for n in g_names]
  query_idx, gallery_idx = official_viper(q_pids, g_pids)[trial]
  query, gallery = _trial("viper", root, trial)
  assert _names(query) == [q_names[i] for i in query_idx]
  assert _names(gallery) == [g_names[i] for i in gallery_idx]
  assert len(query) == len(gallery) == 316
  assert query.labels.tolist() == gallery.labels.tolist()
  assert set(query.cameras.tolist()) == {0} and set(gallery.cameras.tolist()) == {1}


def test_viper_odd_trials_complement_the_unused_draw(root):
  chosen = reid_dg._trial_persons("viper", 632, 1, 57)  # pylint: disable=protected-access
  assert len(chosen[1]) == 316
  # Not the complement of trial 0: the release draws once more before trial 1.
  assert set(chosen[0].tolist()) | set(chosen[1].tolist()) != set(range(632))


@pytest.mark.parametrize("trial", [0, 3, 9])
def test_prid_trials_match_the_release(root, trial):
  q_names = [f"person_{i:04d}.png" for i in range(1, 386)]
  g_names = [f"person_{i:04d}.png" for i in range(1, 750)]
  pids = [int(n[7:11]) for n in q_names], [int(n[7:11]) for n in g_names]
  query_idx, gallery_idx = official_prid(*pids)[trial]
  query, gallery = _trial("prid", root, trial)
  assert _names(query) == [q_names[i] for i in query_idx]
  assert _names(gallery) == [g_names[i] for i in gallery_idx]
  assert len(query) == 100 and len(gallery) == 100 + 549
  assert gallery.labels[100:].min() == 201 and query.labels.max() <= 200


@pytest.mark.parametrize("trial", [0, 4, 9])
def test_grid_trials_match_the_release(root, trial):
  base = os.path.join(root, "underground_reid")
  q_names = sorted(os.listdir(os.path.join(base, "probe")))
  g_names = sorted(os.listdir(os.path.join(base, "gallery")))
  pids = [int(n[:4]) for n in q_names], [int(n[:4]) for n in g_names]
  query_idx, gallery_idx = official_grid(*pids)[trial]
  query, gallery = _trial("grid", root, trial)
  assert _names(query) == [q_names[i] for i in query_idx]
  assert _names(gallery) == [g_names[i] for i in gallery_idx]
  assert len(query) == 125 and len(gallery) == 775 + 125
  assert (gallery.labels[:775] == 0).all()
  # Cameras are the second name field, 0-based.
  assert query.cameras.tolist() == [int(n.split("_")[1]) - 1 for n in _names(query)]


@pytest.mark.parametrize("trial", [0, 1, 9])
def test_ilids_trials_match_the_release(root, trial):
  names = sorted(os.listdir(os.path.join(root, "i-LIDS_Pedestrian", "Persons")))
  query_idx, gallery_idx = official_ilids([int(n[:4]) for n in names])[trial]
  query, gallery = _trial("ilids", root, trial)
  assert _names(query) == [names[i] for i in query_idx]
  assert _names(gallery) == [names[i] for i in gallery_idx]
  assert len(query) == 60 and query.labels.tolist() == gallery.labels.tolist()
  # Cameras are the image numbers: a query never shares one with its gallery image.
  assert (query.cameras != gallery.cameras).all()


def test_whole_target_splits_and_train_complements(root):
  assert len(reid_dg.target_split("viper", "query", root)) == 632
  assert len(reid_dg.target_split("prid", "query", root)) == 200
  assert len(reid_dg.target_split("prid", "gallery", root)) == 749
  grid = reid_dg.target_split("grid", "gallery", root)
  assert _names(grid) == sorted(os.listdir(os.path.join(root, "underground_reid", "gallery")))
  train = reid_dg.target_split("viper", "train", root, trial=2, image_size=(8, 4))
  query = reid_dg.target_split("viper", "query", root, trial=2, image_size=(8, 4))
  # The other 316 persons, both views, relabelled; their numbers are not tested in the trial.
  assert len(train) == 632 and train.num_classes == 316
  assert sorted(set(train.labels.tolist())) == list(range(316))
  tested = set(query.labels.tolist())
  assert not tested & {int(n.split("_")[0]) for n in _names(train)}
  ilids_train = reid_dg.target_split("ilids", "train", root, trial=0)
  assert ilids_train.num_classes == 59 and len(ilids_train) == 59 * 4
  assert train[0]["image"].shape == (8, 4, 3)


def test_trial_arguments_are_checked(root):
  with pytest.raises(ConfigError, match="0..9"):
    reid_dg.target_split("viper", "query", root, trial=10)
  with pytest.raises(ConfigError, match="trial"):
    reid_dg.target_split("ilids", "query", root)
  with pytest.raises(ConfigError, match="trial"):
    reid_dg.target_split("grid", "train", root)
  with pytest.raises(ConfigError, match="targets"):
    reid_dg.target_split("market", "query", root, trial=0)
  with pytest.raises(ConfigError, match="target"):
    reid_dg.reid_dg("query", data_dir=root)
  with pytest.raises(ConfigError, match="central"):
    reid_dg.reid_dg("train", data_dir=root, source_names=("cuhk02",), central="market1501")


def test_missing_target_folders_name_the_layout(tmp_path):
  with pytest.raises(DatasetNotFoundError, match="Persons"):
    reid_dg.target_split("ilids", "query", str(tmp_path), trial=0)
  with pytest.raises(DatasetNotFoundError, match="cam_a"):
    reid_dg.target_split("viper", "query", str(tmp_path))


def test_dg_sources_have_identity_offsets_and_domain_labels(root):
  train = reid_dg.reid_dg("train", data_dir=root, image_size=(8, 4))
  # Identities per source ("all": every split, no junk or distractors): Market 1, 2, 7;
  # Duke 1, 5, 9; CUHK03 3, 100; CUHK02 one person in each of 5 pairs; CUHK-SYSU 7, 8.
  assert train.id_offsets == (0, 3, 6, 8, 13) and train.num_classes == 15
  assert train.names == reid_dg.DG_SOURCES and train.central == 4
  np.testing.assert_array_equal(train.id_domains, np.repeat(np.arange(5), [3, 3, 2, 5, 2]))
  items = [train[i] for i in range(len(train))]
  assert len(items) == 5 + 4 + 4 + 10 + 3
  labels = np.array([it["label"] for it in items])
  domains = np.array([it["domain"] for it in items])
  np.testing.assert_array_equal(labels, train.labels)
  np.testing.assert_array_equal(domains, train.domains)
  # Every identity belongs to the dataset of its examples, and each dataset's block is its own.
  np.testing.assert_array_equal(train.id_domains[labels], domains)
  assert np.array_equal(domains, np.sort(domains))
  # Market ids 1, 2, 7 -> 0, 1, 2 in the Market block (query, gallery and train together).
  market = [it["label"] for it in items if it["domain"] == 0]
  assert sorted(market) == [0, 0, 1, 1, 2]
  # Cameras do not collide across datasets: Market c1..c6 -> 0..5, Duke from 6.
  cams = np.array([it["camera"] for it in items])
  np.testing.assert_array_equal(cams, train.cameras)
  assert cams[domains == 0].max() < cams[domains == 1].min()
  assert items[0]["image"].shape == (8, 4, 3)


def test_dg_is_registered_with_targets(root):
  from jaxcompress.data import transforms  # pylint: disable=g-import-not-at-top
  transforms.load_providers()
  query = sources.get("reid_dg", "query", data_dir=root, target="grid", trial=4,
                      image_size=(8, 4))
  assert _names(query) == _names(reid_dg.target_split("grid", "query", root, 4))
  assert len(sources.get("viper", "gallery", data_dir=root, trial=1)) == 316
  sub = sources.get("reid_dg", "train", data_dir=root, source_names=("cuhk02", "cuhk_sysu"),
                    central=None)
  assert sub.id_offsets == (0, 5) and sub.central is None
