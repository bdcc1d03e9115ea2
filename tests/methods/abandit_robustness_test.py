"""Adversarial training makes the ABanditNAS evaluation network measurably more robust (slow).

Trains configs/abandit_nas/digits_eval.py twice for 3 epochs on scikit-learn's digits: with Madry
PGD-7 training (default) and on clean images (`:clean`), then compares the robust-evaluation
tables (clean, FGSM, MI-FGSM, PGD-7, PGD-20 at eps 0.1 on the 360 test digits). Measured on a
shared 2-core CPU: about 1.5 minutes; PGD-7 accuracy 0.81 (adversarial) vs 0.37 (clean).

  python -m pytest -q -m slow tests/methods/abandit_robustness_test.py
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import pytest
from absl.testing import absltest

from configs.abandit_nas import digits_eval
from jaxcompress.methods import abandit_nas
from jaxcompress.train import loop


def _train(arg: str) -> dict[str, float]:
  config = digits_eval.get_config(arg)
  config.num_devices = 1
  config.progress = "none"
  config.async_checkpoint = False
  workdir = tempfile.mkdtemp(prefix="abandit_robustness_")
  loop.run(config, workdir)
  with open(os.path.join(workdir, "robust_eval.json"), encoding="utf-8") as f:
    table = json.load(f)
  assert table["epsilon"] == 0.1 and table["step_size"] == 0.025, table
  return table["accuracy"]


@pytest.mark.slow
class AdversarialVsCleanTrainingTest(absltest.TestCase):

  def test_pgd_training_is_more_robust_than_clean_training(self):
    adv = _train("epochs=3")
    clean = _train("clean,epochs=3")
    print("adversarial:", adv, "\nclean:", clean)
    for table in (adv, clean):
      self.assertEqual(list(table), list(abandit_nas.ROBUST_TABLE))
      self.assertTrue(all(np.isfinite(v) and 0.0 <= v <= 1.0 for v in table.values()), table)
      self.assertGreater(table["clean"], 0.85)    # both learnt the task (chance 0.1)
      for name in ("fgsm", "mi_fgsm", "pgd7", "pgd20"):
        self.assertLessEqual(table[name], table["clean"] + 1e-9, name)
    # The clean-trained network is broken by PGD; the PGD-trained one is not.
    self.assertLess(clean["pgd20"], 0.6)
    for name in ("mi_fgsm", "pgd7", "pgd20"):
      self.assertGreater(adv[name] - clean[name], 0.2, name)
    self.assertGreater(adv["fgsm"], clean["fgsm"] + 0.1)
    # The usual price: no clean-accuracy gain from adversarial training.
    self.assertLess(adv["clean"], clean["clean"] + 0.05)


if __name__ == "__main__":
  absltest.main()
