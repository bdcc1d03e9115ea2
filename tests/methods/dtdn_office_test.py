"""`configs/dtdn/office31.py` end to end on a tiny Office-31 fixture folder (the real layout),
shrunk to a few steps: the closed-set path (class-folder data, per-sample gates, the target
stream with exemplar slots, the top-1 "classification" evaluation at the test size, the report)."""
from __future__ import annotations

import json
import os

import ml_collections
import numpy as np
from PIL import Image

from configs.dtdn import office31
from jaxcompress.train import stages

CLASSES = ("back_pack", "bike", "calculator")


def _office31(root, per_class=4):
  rng = np.random.default_rng(0)
  for d, domain in enumerate(("amazon", "dslr", "webcam")):
    for c, name in enumerate(CLASSES):
      folder = os.path.join(root, "office31", domain, "images", name)
      os.makedirs(folder, exist_ok=True)
      for i in range(per_class):
        pixels = rng.integers(0, 60, (40, 40, 3)) + np.array([80 * c, 40 * d, 100])
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(
            os.path.join(folder, f"frame_{i + 1:04d}.jpg"))
  return len(CLASSES) * per_class


def test_office31_config_runs_both_stages_and_reports_accuracy(tmp_path):
  data_dir = str(tmp_path / "data")
  per_domain = _office31(data_dir)
  config = office31.get_config("task=D_W")
  for name in ("source_only", "dtdn"):
    c = config.stages[name]
    c.data.data_dir = data_dir
    c.data.source_kwargs.image_size = (40, 40)
    c.data.augment = [("random_crop", {"size": 32}), ("flip", {})]
    c.data.batch_size = c.data.eval_batch_size = 4
    c.evals.target.data.data_dir = data_dir
    c.evals.target.data.source_kwargs.image_size = (32, 32)
    c.model.kwargs.update(block="basic", stage_sizes=(1, 1, 2, 1), width=4)
    c.dtdn.update(num_features=16, reduction=2, num_target=per_domain, knn=2, switch_epoch=0)
    c.num_epochs, c.steps_per_epoch = 2, 2
    # The release's SGD table (0.08 on the heads) is for ResNet-50 at batch 32; this toy network
    # at batch 4 takes Adam.
    c.optim = ml_collections.ConfigDict(dict(name="adam", learning_rate=1e-3))
    if name == "dtdn":
      c.data.streams.target.data_dir = data_dir
      c.data.streams.target.source_kwargs.image_size = (40, 40)
      c.data.streams.target.augment = [("random_crop", {"size": 32}), ("flip", {})]
      c.data.streams.target.batch_size = 4
  assert config.stages.dtdn.dtdn.gate == "per_sample" and config.stages.dtdn.dtdn.beta == 0.5
  stages.run_stages(config, str(tmp_path / "run"))
  with open(os.path.join(tmp_path, "run", "reid_report.json"), encoding="utf-8") as f:
    report = json.load(f)
  for key in ("source_only_accuracy", "dtdn_accuracy"):
    # Accuracy over the 12 webcam images: a multiple of 1/12.
    assert 0.0 <= report[key] <= 1.0
    assert abs(report[key] * per_domain - round(report[key] * per_domain)) < 1e-6
