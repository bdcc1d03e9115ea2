"""Tests for the DMAD methods and stages (jaxcompress.methods.dmad_search, dmad_finetune,
dmad_stages; arXiv 2011.08382) on tiny CycleGANs.

The search adds `prune.dmad_mask_loss` with the official roles (SJLeo/DMAD
`models/MaskCycleGAN.py`, `get_mask_weight_loss`), updates bound, group coefficients and the
MACs early stop on the host; fine-tuning adds co-attention and discriminator distillation from a
frozen teacher whose D half of the target is not detached.
"""
from __future__ import annotations

import json
import os
import tempfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from absl.testing import absltest

from configs.dmad import quick_cyclegan
from jaxcompress import distill, prune
from jaxcompress.errors import ConfigError
from jaxcompress.methods import dmad_search
from jaxcompress.methods.dmad_finetune import CycleGANFinetune
from jaxcompress.methods.dmad_search import CycleGANSearch
from jaxcompress.train import loop

SIZE = 16


def _stage(name: str) -> ml_collections.ConfigDict:
  c = quick_cyclegan.get_config("quick").stages[name]
  c.model.generator.kwargs.update({"ngf": 4, "n_blocks": 2})
  c.model.discriminator.kwargs.update({"ndf": 4, "n_layers": 2})
  return c


def _batch(seed: int = 0, n: int = 2) -> dict[str, jax.Array]:
  rng = np.random.default_rng(seed)
  a = rng.uniform(-1, 1, (n, SIZE, SIZE, 3)).astype(np.float32)
  b = np.tanh(a[::-1] * 1.5).astype(np.float32)
  return {"A": jnp.asarray(a), "B": jnp.asarray(b), "mask": jnp.ones((n,), jnp.float32)}


class _Writer:
  def __init__(self):
    self.rows = []

  def write(self, step, split, metrics):
    self.rows.append((step, split, dict(metrics)))


class _Context:
  def __init__(self):
    self.writer = _Writer()


class SearchTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.method = CycleGANSearch(_stage("search"), steps_per_epoch=10, total_steps=100)
    self.state = self.method.init(jax.random.key(0), _batch())

  def test_mask_roles_are_the_official_ones(self):
    roles = self.method.roles["G_A"]
    self.assertEqual(set(roles["group"]), {"down2_gate", "block0/gate2", "block1/gate2"})
    self.assertEqual(set(roles["sampling"]), {"stem_gate", "down1_gate", "up1_gate", "up2_gate"})
    self.assertEqual(set(roles["ordinary"]), {"block0/gate1", "block1/gate1"})

  def test_generator_loss_adds_lambda_times_the_mask_loss_of_both_generators(self):
    params, state, batch = self.state.params, self.state, _batch()
    loss, aux = self.method.generator_loss(params, state, batch, jax.random.key(1))
    base = sum(aux["metrics"][k] for k in ("G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B"))
    want = 0.0
    for g in ("G_A", "G_B"):
      m = prune.mask_params(params[g])
      r = self.method.roles[g]
      want += prune.dmad_mask_loss([m[k] for k in r["ordinary"]], [m[k] for k in r["sampling"]],
                                   [m[k] for k in r["group"]], 1.0,
                                   state.extra["dmad"]["coeff"][g])
    lam = self.method.lambda_mask
    self.assertEqual(lam, _stage("search").dmad.lambda_mask)
    np.testing.assert_allclose(aux["metrics"]["mask_weight"], lam * want, rtol=1e-5)
    np.testing.assert_allclose(loss, base + lam * want, rtol=1e-5)
    self.assertGreater(float(want), 0.0)

  def test_bound_update_recomputes_coefficients_and_sets_the_schedule_bound(self):
    self.method.macs_targets = {"G_A": 0.0, "G_B": 0.0}  # no early stop
    state = self.state.replace(step=jnp.asarray(30))
    new = self.method.on_epoch_end(state, 0, _Context())
    want_bound = float(prune.dmad_bound(30, 100))
    for g in ("G_A", "G_B"):
      self.assertAlmostEqual(float(new.extra["dmad"]["bound"][g]), want_bound, places=6)
      self.assertAlmostEqual(float(new.model_state[g][prune.BOUND_COLLECTION]["stem_gate"]
                                   ["bound"]), want_bound, places=6)
      m = prune.mask_params(self.state.params[g])
      group = np.stack([np.asarray(m[k]) for k in self.method.roles[g]["group"]])
      np.testing.assert_allclose(new.extra["dmad"]["coeff"][g],
                                 prune.dmad_group_coefficients(group, 1.0), rtol=1e-6)
      self.assertFalse(bool(new.extra["dmad"]["stopped"][g]))

  def test_early_stop_binarises_masks_and_pins_the_bound_at_zero(self):
    masks = prune.mask_params(self.state.params["G_A"])
    macs = self.method.implied_macs("G_A", {k: np.asarray(v) for k, v in masks.items()}, 0.1)
    # Per-generator targets (the official --AtoB / --BtoA thresholds): G_B's is out of reach.
    self.method.macs_targets = self.method._targets({"G_A": float(macs), "G_B": 1.0})
    state = self.state.replace(extra={**self.state.extra, "dmad": {
        **self.state.extra["dmad"], "bound": {g: jnp.asarray(0.1) for g in ("G_A", "G_B")}}})
    new = self.method.on_epoch_end(state.replace(step=jnp.asarray(10)), 0, _Context())
    self.assertTrue(bool(new.extra["dmad"]["stopped"]["G_A"]))
    self.assertEqual(float(new.extra["dmad"]["bound"]["G_A"]), 0.0)
    self.assertFalse(bool(new.extra["dmad"]["stopped"]["G_B"]))
    self.assertGreater(float(new.extra["dmad"]["bound"]["G_B"]), 0.0)
    for k, m in prune.mask_params(new.params["G_A"]).items():
      old = np.asarray(masks[k])
      np.testing.assert_array_equal(np.asarray(m), np.where(old > -0.1, 1.0, -1.0), err_msg=k)

  def test_macs_target_is_one_number_or_one_per_generator(self):
    self.assertEqual(self.method._targets(3e9), {"G_A": 3e9, "G_B": 3e9})
    self.assertEqual(self.method._targets(ml_collections.ConfigDict({"G_A": 2.5e9})),
                     {"G_A": 2.5e9, "G_B": 0.0})
    with self.assertRaisesRegex(ConfigError, "generators are"):
      self.method._targets({"G": 1e9})

  def test_implied_macs_follow_the_channels_above_minus_bound(self):
    masks = {k: np.asarray(v) for k, v in prune.mask_params(self.state.params["G_A"]).items()}
    full = dmad_search.generator_macs(self.method.nets["G_A"].clone(
        layers=self.method.nets["G_A"].layers.replace(gate=None)), 256, 3)
    self.assertEqual(self.method.implied_macs("G_A", masks, 10.0), full)  # every m > -10
    self.assertLess(self.method.implied_macs("G_A", masks, 0.0), full)


class FinetuneAndStagesTest(absltest.TestCase):

  # Runs the whole :quick pipeline (about a minute on 2 cores); the colab test runs it too.
  @pytest.mark.slow
  def test_quick_pipeline_writes_an_honest_report_and_distills_through_the_teacher_d(self):
    workdir = tempfile.mkdtemp()
    config = quick_cyclegan.get_config("quick")
    loop.run(config, workdir)
    with open(os.path.join(workdir, "dmad_report.json"), encoding="utf-8") as f:
      report = json.load(f)
    for key in ("teacher_macs", "student_macs", "teacher_params", "student_params",
                "teacher/psnr_B_ref", "distilled/psnr_B_ref", "undistilled/psnr_B_ref"):
      self.assertIn(key, report)
    with open(os.path.join(workdir, "materialize", "student.json"), encoding="utf-8") as f:
      student = json.load(f)
    self.assertEqual(report["student_macs"], student["G_A/macs"])

    # The distillation terms of the fine-tuning stage, against the contract functions.
    cfg = config.stages.distilled
    cfg.dmad.student = os.path.join(workdir, "materialize", "student.json")
    cfg.dmad.teacher = os.path.join(workdir, "teacher")
    method = CycleGANFinetune(cfg, steps_per_epoch=2, total_steps=4)
    batch = _batch()
    state = method.load_initial(method.init(jax.random.key(0), batch))
    loss, aux = method.generator_loss(state.params, state, batch, jax.random.key(2))
    t = state.extra["teacher"]
    want = 0.0
    for g, key, d in method.DIRECTIONS:
      fake = aux["fakes"]["fake_B" if g == "G_A" else "fake_A"]
      _, tt = method._teacher(g, state, batch[key])  # pylint: disable=protected-access
      _, dd = method._teacher(d, state, fake)  # pylint: disable=protected-access
      for role in method.distill_taps:
        want += distill.co_attention_loss(aux["taps"][g][role], tt[role], dd["hidden1"])
    np.testing.assert_allclose(aux["metrics"]["attention_distill"], 100.0 * want, rtol=1e-5)
    del t, loss

    # The D half of the target is not detached: the student gets a gradient through the
    # frozen teacher D even from the attention term alone.
    def attention_only(g_params):
      p = {**state.params, **g_params}
      _, a = method.generator_loss(p, state, batch, jax.random.key(2))
      return a["metrics"]["attention_distill"]
    grads = jax.grad(attention_only)({"G_A": state.params["G_A"]})
    head = np.asarray(grads["G_A"]["head"]["kernel"])  # after every tap: only via D's input
    self.assertGreater(float(np.abs(head).max()), 0.0)


if __name__ == "__main__":
  absltest.main()
