"""End-to-end NAS pipelines on digits: search -> genotype.json -> retrained evaluation network.

Slow (minutes each on a CPU); deselected by default. Run with
  python -m pytest -q -m slow tests/methods/nas_pipeline_test.py
"""
from __future__ import annotations

import json
import os
import time

import pytest

from configs.bnas import digits_pipeline as bnas_pipeline
from configs.pc_darts import digits_pipeline as pc_darts_pipeline
from jaxcompress.train import loop


@pytest.mark.slow
@pytest.mark.parametrize("name,pipeline", [("pc_darts", pc_darts_pipeline),
                                           ("bnas", bnas_pipeline)])
def test_search_then_eval_reaches_90_percent(tmp_path, name, pipeline):
  t0 = time.time()
  config = pipeline.get_config()
  for stage in config.stage_order:
    config.stages[stage].progress = "none"
  out = loop.run(config, str(tmp_path))
  genotype_path = os.path.join(tmp_path, "search", "genotype.json")
  genotype = json.load(open(genotype_path, encoding="utf-8"))
  steps = config.stages.search.nas.steps
  assert len(genotype["normal"]) == len(genotype["reduce"]) == 2 * steps
  total = time.time() - t0
  print(f"{name}: total {total:.0f} s, accuracy {out['eval']['accuracy']:.4f}")
  assert out["eval"]["accuracy"] >= 0.90
