"""DDAN quick pipeline (configs/ddan/quick.py, `:small`) keeps the promises of its docstring.

One command trains the ID + triplet baseline and DDAN with the same budget on the synthetic
source domains (the memory term active in the last epoch), evaluates both on the unseen target
domains and writes reid_report.json with `baseline_rank1` and `ddan_rank1`. At this size the
direction of the comparison is not asserted (see the full quick config for it).

Slow (a few minutes on a CPU); deselected by default. Run with
  python -m pytest -q -m slow tests/methods/ddan_pipeline_test.py
"""
from __future__ import annotations

import json
import math
import os

import pytest

from configs.ddan import quick
from jaxcompress.train import loop


@pytest.mark.slow
def test_small_pipeline_writes_the_report(tmp_path):
  workdir = str(tmp_path / "ddan")
  config = quick.get_config("small")
  result = loop.run(config, workdir)
  with open(os.path.join(workdir, "reid_report.json"), encoding="utf-8") as f:
    report = json.load(f)
  targets = tuple(config.stages.report.targets)
  assert report["targets"] == list(targets)
  for label in ("baseline", "ddan"):
    values = [report[f"{label}/{t}/rank1_mean"] for t in targets]
    assert all(0.0 <= v <= 1.0 for v in values), report
    assert math.isclose(report[f"{label}_rank1"], sum(values) / len(values)), report
    # Trained features rank better than chance (1 of num_test_ids gallery persons).
    assert report[f"{label}_rank1"] > 2.0 / config.stages.ddan.data.source_kwargs.num_test_ids
  # The DDAN stage ran the adversarial and memory terms through to the end.
  with open(os.path.join(workdir, "ddan", "metrics.jsonl"), encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  last = [r for r in rows if r.get("split") == "train"][-1]
  for key in ("loss", "adv", "mem", "dis", "d_accuracy"):
    assert math.isfinite(last[key]), last
  assert result["stages"]["report"]["ddan_rank1"] == pytest.approx(report["ddan_rank1"])
