"""Slow: `configs/dtdn/quick.py:small` end to end (both stages, the report)."""
from __future__ import annotations

import json
import os

import pytest

from configs.dtdn import quick
from jaxcompress.train import stages


@pytest.mark.slow
def test_quick_small_writes_report(tmp_path):
  stages.run_stages(quick.get_config("small"), str(tmp_path))
  with open(os.path.join(tmp_path, "reid_report.json"), encoding="utf-8") as f:
    report = json.load(f)
  assert set(report) >= {"source_only_accuracy", "dtdn_accuracy"}
  # What the small run reliably gives: both stages retrieve far above chance (1/40 persons).
  # The full toy run ties DTDN with source-only (see the quick config), no gain.
  for key in ("source_only_accuracy", "dtdn_accuracy"):
    assert 0.1 < report[key] <= 1.0
