"""ABanditNAS end to end at quick size (slow): search -> genotype.json -> PGD training -> table.

One staged config, configs/abandit_nas/digits_pipeline.py:quick, through `loop.run`: stage
"search" writes <root>/search/genotype.json; stage "retrain" trains the evaluation network of
that genotype adversarially (handed over by `paths_from`) and writes robust_eval.json /
robust_eval.md / final_report.json. About 1 minute on a shared 2-core CPU.

  python -m pytest -q -m slow tests/methods/abandit_pipeline_test.py
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import pytest
from absl.testing import absltest

from configs.abandit_nas import digits_pipeline
from jaxcompress.methods import abandit_nas
from jaxcompress.nas import abandit_network as an
from jaxcompress.train import loop


def _prepare(config):
  config.num_devices = 1
  config.progress = "none"
  config.async_checkpoint = False
  return config


@pytest.mark.slow
class QuickPipelineTest(absltest.TestCase):

  def test_search_genotype_adversarial_training_robust_table(self):
    root = tempfile.mkdtemp(prefix="abandit_pipeline_")
    search_dir, eval_dir = os.path.join(root, "search"), os.path.join(root, "retrain")
    config = digits_pipeline.get_config("quick")
    for name in config.stage_order:
      _prepare(config.stages[name])
    out = loop.run(config, root)
    search_cfg = config.stages.search
    genotype_path = os.path.join(search_dir, "genotype.json")
    self.assertTrue(os.path.exists(genotype_path))
    report = json.load(open(os.path.join(search_dir, "final_report.json")))
    self.assertTrue(report["search_complete"])
    genotype = an.get_genotype(genotype_path)
    self.assertEqual(an.genotype_to_dict(genotype), report["genotype"])
    self.assertEqual(genotype.num_cells, search_cfg.nas.num_cells)
    for cell in genotype.cells:
      self.assertLen(cell, 4)
      for j, (op, idx) in enumerate(cell, start=1):
        self.assertIn(op, search_cfg.nas.primitives)
        self.assertLess(idx, j)
    for name in ("robust_eval.json", "robust_eval.md", "final_report.json", "metrics.jsonl"):
      self.assertTrue(os.path.exists(os.path.join(eval_dir, name)), name)
    table = json.load(open(os.path.join(eval_dir, "robust_eval.json")))["accuracy"]
    self.assertEqual(list(table), list(abandit_nas.ROBUST_TABLE))
    self.assertTrue(all(np.isfinite(v) and 0.0 <= v <= 1.0 for v in table.values()), table)
    self.assertAlmostEqual(table["clean"], out["eval"]["clean_accuracy"], places=6)
    final = json.load(open(os.path.join(eval_dir, "final_report.json")))
    self.assertEqual(an.get_genotype(final["genotype"]), genotype)   # the found network
    self.assertEqual(final["robust_eval"], table)
    md = open(os.path.join(eval_dir, "robust_eval.md")).read()
    self.assertIn("| clean | fgsm | mi_fgsm | pgd7 | pgd20 |", md)


if __name__ == "__main__":
  absltest.main()
