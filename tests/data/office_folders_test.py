"""Tests for the Office-31 and Office-Home folder readers on tiny fixture folders with the real
layouts and file names: class order, labels shared across domains, splits, errors."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from jaxcompress.data import office_folders, sources, transforms
from jaxcompress.errors import ConfigError, DatasetNotFoundError

OFFICE31 = {  # domain -> class -> files, the archive's names
    "amazon": {"back_pack": ["frame_0001.jpg", "frame_0002.jpg"], "bike": ["frame_0001.jpg"],
               "trash_can": ["frame_0007.jpg"]},
    "dslr": {"back_pack": ["frame_0001.jpg"], "bike": ["frame_0003.jpg", "frame_0004.jpg"],
             "trash_can": ["frame_0002.jpg"]},
    "webcam": {"back_pack": ["frame_0005.jpg"], "bike": ["frame_0001.jpg"],
               "trash_can": ["frame_0001.jpg", "frame_0009.jpg"]},
}
OFFICE_HOME = {"Art": {"Alarm_Clock": ["00001.jpg", "00002.jpg"], "Bike": ["00001.jpg"]},
               "Clipart": {"Alarm_Clock": ["00003.jpg"], "Bike": ["00002.png"]},
               "Product": {"Alarm_Clock": ["00001.jpg"], "Bike": ["00004.jpg"]},
               "Real_World": {"Alarm_Clock": ["00001.jpg"], "Bike": ["00001.jpg"]}}


def _write_tree(root, tree, images_dir=True):
  for d, (domain, classes) in enumerate(tree.items()):
    for c, (name, files) in enumerate(classes.items()):
      folder = os.path.join(root, domain, "images", name) if images_dir else os.path.join(
          root, domain, name)
      os.makedirs(folder, exist_ok=True)
      for f in files:
        # A colour per (domain, class): the reader must return the right file for each index.
        Image.new("RGB", (12, 10), (40 * d, 60 * c, 100)).save(os.path.join(folder, f))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("office")
  _write_tree(os.path.join(root, "office31"), OFFICE31)
  _write_tree(os.path.join(root, "OfficeHome"), OFFICE_HOME, images_dir=False)
  return str(root)


def test_office31_labels_are_sorted_class_folders_shared_across_domains(data_dir):
  for d, domain in enumerate(office_folders.OFFICE31_DOMAINS):
    src = office_folders.office31("train", data_dir=data_dir, domain=domain, image_size=None)
    assert src.classes == ("back_pack", "bike", "trash_can")
    expected = [c for c, files in enumerate(OFFICE31[domain].values()) for _ in files]
    np.testing.assert_array_equal(src.labels, expected)
    assert len(src) == sum(len(f) for f in OFFICE31[domain].values())
    for i in range(len(src)):
      ex = src[i]
      assert ex["image"].shape == (10, 12, 3) and ex["image"].dtype == np.uint8
      # JPEG moves a flat colour by a grey level or two.
      np.testing.assert_allclose(ex["image"][5, 6], [40 * d, 60 * ex["label"], 100], atol=4)


def test_every_split_is_the_whole_domain_and_images_are_resized(data_dir):
  paths = {s: office_folders.office31(s, data_dir=data_dir, domain="webcam").paths
           for s in office_folders.SPLITS}
  assert paths["train"] == paths["test"] == paths["all"]
  ex = office_folders.office31("test", data_dir=data_dir, domain="webcam")[0]
  assert ex["image"].shape == (224, 224, 3)


def test_office_home_layout_and_registered_sources(data_dir):
  transforms.load_providers()
  src = sources.get("office_home", "test", data_dir=data_dir, domain="Clipart",
                    image_size=(8, 8))
  assert src.classes == ("Alarm_Clock", "Bike")
  assert [os.path.basename(p) for p in src.paths] == ["00003.jpg", "00002.png"]
  np.testing.assert_array_equal(src.labels, [0, 1])
  office = sources.get("office31", "train", data_dir=data_dir, domain="dslr", image_size=(8, 8))
  assert len(office) == 4 and office[0]["image"].shape == (8, 8, 3)


def test_the_archive_folder_name_is_accepted(tmp_path):
  _write_tree(os.path.join(tmp_path, "domain_adaptation_images"), OFFICE31)
  assert len(office_folders.office31("train", data_dir=str(tmp_path), domain="amazon")) == 4


def test_errors_name_the_problem_and_the_fix(data_dir, tmp_path):
  with pytest.raises(DatasetNotFoundError, match="config.data.data_dir"):
    office_folders.office31("train", domain="amazon")
  with pytest.raises(DatasetNotFoundError, match="office31/{amazon,dslr,webcam}/images"):
    office_folders.office31("train", data_dir=str(tmp_path), domain="amazon")
  with pytest.raises(ConfigError, match="domains"):
    office_folders.office31("train", data_dir=data_dir, domain="Amazon")
  with pytest.raises(ConfigError, match="splits"):
    office_folders.office_home("query", data_dir=data_dir, domain="Art")
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(ConfigError, match="no class folders"):
    office_folders.read_class_folders(str(empty))
