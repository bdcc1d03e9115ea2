"""The CoGD experiment as an engine stage: one command writes cogd_table.json and per-stage reports."""
from __future__ import annotations

import json

import ml_collections
import pytest

from configs.cogd import csc_quick, quick
from jaxcompress import methods
from jaxcompress.train import loop

HOOKS = ("none", "matlab_heuristic", "matlab_heuristic_unsaturated")


def _tiny(config):
  for name in config.stage_order:
    config.stages[name].csc.update(num_images=2, image_size=24, num_filters=4, filter_size=5,
                                   num_iters=1, num_iters_d=2, num_iters_z=2)
  return config


def _json(path):
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def test_report_stage_runs_every_hook(tmp_path):
  config = _tiny(quick.get_config())
  loop.run(config, str(tmp_path))
  report = _json(tmp_path / "csc" / "cogd_report.json")
  assert report["task"] == "reconstruction"
  for label in HOOKS:
    assert 0 < report[f"{label}/ssim"] <= 1 and report[f"{label}/objective"] > 0
    assert (tmp_path / "csc" / f"{label}_history.json").exists()
  assert _json(tmp_path / "cogd_table.json") == {"reconstruction": {
      label: {"psnr": report[f"{label}/psnr"], "ssim": report[f"{label}/ssim"]}
      for label in HOOKS}}
  assert not list(tmp_path.glob("*.tmp"))
  assert methods.get_report("cogd_csc")


def test_csc_quick_fills_both_tasks_of_the_table(tmp_path, capsys):
  config = _tiny(csc_quick.get_config())
  loop.run(config, str(tmp_path))
  table = _json(tmp_path / "cogd_table.json")
  printed = capsys.readouterr().out
  assert "| task | none | matlab_heuristic | matlab_heuristic_unsaturated |" in printed
  row = table["inpainting"]["none"]
  assert f"| inpainting | {row['psnr']:.2f} / {row['ssim']:.4f} |" in printed
  assert sorted(table) == ["inpainting", "reconstruction"]
  for task in table:
    assert sorted(table[task]) == sorted(HOOKS)
    report = _json(tmp_path / task / "cogd_report.json")
    assert report["task"] == task
    for hook, row in table[task].items():
      assert row == {"psnr": report[f"{hook}/psnr"], "ssim": report[f"{hook}/ssim"]}
      assert 0 < row["ssim"] <= 1


def test_inpainting_variant_and_unknown_keys(tmp_path):
  c = quick.get_config("inpainting")
  assert c.stages.csc.csc.task == "inpainting"
  c = _tiny(c)
  c.stages.csc.hooks = ml_collections.ConfigDict({"bad": {"corection": "none"}})
  with pytest.raises(ValueError, match="unknown run_csc keys"):
    loop.run(c, str(tmp_path))


@pytest.mark.slow
def test_small_csc_quick_under_five_minutes(tmp_path):
  import time  # pylint: disable=g-import-not-at-top
  cpu0 = time.process_time()
  loop.run(csc_quick.get_config("small"), str(tmp_path))
  table = _json(tmp_path / "cogd_table.json")
  for task in ("reconstruction", "inpainting"):
    assert table[task]["none"]["psnr"] > 10 and table[task]["matlab_heuristic"]["psnr"] > 10
  assert time.process_time() - cpu0 < 300
