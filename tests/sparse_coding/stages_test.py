"""The CoGD experiment as an engine stage: one command writes cogd_report.json."""
from __future__ import annotations

import json

import ml_collections
import pytest

from configs.cogd import quick
from jaxcompress import methods
from jaxcompress.train import loop


def _tiny(config):
  config.stages.csc.csc.update(num_images=2, image_size=24, num_filters=4, filter_size=5,
                               num_iters=1, num_iters_d=2, num_iters_z=2)
  return config


def test_report_stage_runs_every_hook(tmp_path):
  config = _tiny(quick.get_config())
  loop.run(config, str(tmp_path))
  with open(tmp_path / "cogd_report.json", encoding="utf-8") as f:
    report = json.load(f)
  assert report["task"] == "reconstruction"
  for label in ("ffcsc", "cogd", "cogd_unsaturated"):
    assert 0 < report[f"{label}/ssim"] <= 1 and report[f"{label}/objective"] > 0
    assert (tmp_path / "csc" / f"{label}_history.json").exists()
  assert methods.get_report("cogd_csc")


def test_inpainting_variant_and_unknown_keys(tmp_path):
  c = quick.get_config("inpainting")
  assert c.stages.csc.csc.task == "inpainting"
  c = _tiny(c)
  c.stages.csc.hooks = ml_collections.ConfigDict({"bad": {"corection": "none"}})
  with pytest.raises(ValueError, match="unknown run_csc keys"):
    loop.run(c, str(tmp_path))


@pytest.mark.slow
def test_small_config_under_five_minutes(tmp_path):
  import time  # pylint: disable=g-import-not-at-top
  cpu0 = time.process_time()
  loop.run(quick.get_config("small"), str(tmp_path))
  with open(tmp_path / "cogd_report.json", encoding="utf-8") as f:
    report = json.load(f)
  assert report["ffcsc/psnr"] > 10 and report["cogd/psnr"] > 10
  assert time.process_time() - cpu0 < 300
