"""End-to-end NAS pipelines on digits: search -> genotype.json -> retrained evaluation network.

Slow (minutes each on a CPU); deselected by default. Run with
  python -m pytest -q -m slow tests/methods/nas_pipeline_test.py
"""
from __future__ import annotations

import json
import os
import time

import pytest

from configs.bnas import digits_eval as bnas_digits_eval
from configs.bnas import digits_search as bnas_digits_search
from configs.pc_darts import digits_eval as pc_darts_digits_eval
from configs.pc_darts import digits_search as pc_darts_digits_search
from jaxcompress.train import loop


@pytest.mark.slow
@pytest.mark.parametrize("name,search_cfg,eval_cfg", [
    ("pc_darts", pc_darts_digits_search, pc_darts_digits_eval),
    ("bnas", bnas_digits_search, bnas_digits_eval)])
def test_search_then_eval_reaches_90_percent(tmp_path, name, search_cfg, eval_cfg):
  t0 = time.time()
  search_dir = str(tmp_path / f"{name}_search")
  config = search_cfg.get_config()
  config.progress = "none"
  loop.run(config, search_dir)
  genotype_path = os.path.join(search_dir, "genotype.json")
  genotype = json.load(open(genotype_path, encoding="utf-8"))
  assert len(genotype["normal"]) == len(genotype["reduce"]) == 2 * config.nas.steps
  t_search = time.time() - t0
  config = eval_cfg.get_config(f"genotype={genotype_path}")
  config.progress = "none"
  out = loop.run(config, str(tmp_path / f"{name}_eval"))
  total = time.time() - t0
  print(f"{name}: search {t_search:.0f} s, total {total:.0f} s, accuracy "
        f"{out['eval']['accuracy']:.4f}")
  assert out["eval"]["accuracy"] >= 0.90
