"""The GAN methods through the engine: the `:quick` variants of configs/gan/{cyclegan,pix2pix}_quick
train a few steps with `jaxcompress.train.loop.run` (8 CPU devices in tests) on the offline
image-translation sets and write metrics.jsonl."""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np
from absl.testing import absltest

from configs.gan import cyclegan_quick, pix2pix_quick
from jaxcompress.train import loop


def _run(config):
  with tempfile.TemporaryDirectory() as workdir:
    out = loop.run(config, workdir)
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
      rows = [json.loads(line) for line in f]
  return out, [r for r in rows if r["split"] == "train"], [r for r in rows if r["split"] == "eval"]


class EngineTest(absltest.TestCase):

  def test_cyclegan_quick(self):
    out, train, evals = _run(cyclegan_quick.get_config("quick"))
    self.assertEqual(out["steps"], 4)
    self.assertEqual([r["step"] for r in train], [1, 2, 3, 4])
    self.assertTrue({"loss", "G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B", "D_A",
                     "D_B"} <= set(train[-1]))
    self.assertTrue(all(np.isfinite(r["loss"]) and r["cycle_A"] > 0 for r in train))
    self.assertEqual(evals[-1]["step"], 4)
    self.assertTrue({"cycle_error_A", "cycle_error_B", "D_A_real", "D_B_fake"} <= set(evals[-1]))
    # The two image pools filled with the 4 steps' 8-image batches (capacity 50).
    for pool in ("fake_A_pool", "fake_B_pool"):
      self.assertEqual(int(out["state"].extra[pool]["count"]), 32)

  def test_pix2pix_quick(self):
    out, train, evals = _run(pix2pix_quick.get_config("quick"))
    self.assertEqual(out["steps"], 4)
    self.assertEqual([r["step"] for r in train], [1, 2, 3, 4])
    self.assertTrue({"loss", "G_GAN", "G_L1", "D_real", "D_fake"} <= set(train[-1]))
    self.assertTrue(all(np.isfinite(r["loss"]) for r in train))
    self.assertTrue(np.isfinite(evals[-1]["psnr"]) and evals[-1]["l1"] > 0)
    self.assertIn("batch_stats", out["state"].model_state["G"])


if __name__ == "__main__":
  absltest.main()
