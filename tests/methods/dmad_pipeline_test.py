"""DMAD quick pipelines (configs/dmad/quick_{cyclegan,pix2pix}.py, `:small` variants) keep the
promises of their docstrings and the DMAD claims at CPU size (arXiv 2011.08382): one command runs
teacher -> search -> materialize -> distilled and undistilled fine-tuning -> report; the student
generator has >= 4x fewer MACs than the teacher (GAN convention, 1x3x256x256) and really fewer
parameters; dmad_report.json reports teacher, distilled and undistilled quality, whichever wins;
the Pix2Pix student is within 1 dB PSNR of its teacher on the held-out pairs.

Slow (minutes each on a CPU); deselected by default. Run with
  python -m pytest -q -m slow tests/methods/dmad_pipeline_test.py
"""
from __future__ import annotations

import json
import math
import os

import pytest

from configs.dmad import quick_cyclegan, quick_pix2pix
from jaxcompress.train import loop

_PIPELINES = {"cyclegan": (quick_cyclegan, "psnr_B_ref"), "pix2pix": (quick_pix2pix, "psnr")}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(_PIPELINES))
def test_small_pipeline_meets_the_promises(name, tmp_path):
  module, metric = _PIPELINES[name]
  workdir = str(tmp_path / name)
  loop.run(module.get_config("small"), workdir)
  with open(os.path.join(workdir, "dmad_report.json"), encoding="utf-8") as f:
    report = json.load(f)
  assert report["student_macs"] * 4 <= report["teacher_macs"], report
  assert report["student_params"] < report["teacher_params"], report
  for label in ("teacher", "distilled", "undistilled"):
    assert math.isfinite(report[f"{label}/{metric}"]), report
  if name == "pix2pix":
    assert report["distilled/psnr"] >= report["teacher/psnr"] - 1.0, report
