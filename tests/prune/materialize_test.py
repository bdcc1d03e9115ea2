"""Tests for jaxcompress.prune.materialize: pruned models equal the binary-masked ones.

DMAD (arXiv 2011.08382) Sec. 3 "Pruning", SJLeo/DMAD `models/MaskCycleGAN.py` (`prune`,
`get_cfg_residual_mask`). Reference outputs come from the unpruned model gated by
`factory.ChannelGate` with masks 1[m > 0] (or the group rule's masks, built here by hand);
expected widths, parameter counts and MACs are counted here from the layer shapes.
"""
from __future__ import annotations

import importlib
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from jaxcompress import prune
from jaxcompress.errors import ConfigError
from jaxcompress.models import cyclegan, factory, pix2pix, resnet_cifar

# `jaxcompress.summary` is the function (contract); the module is reached by its dotted name.
summary_lib = importlib.import_module("jaxcompress.summary")

sys.path.insert(0, os.path.dirname(__file__))
from materialize_helpers import (  # noqa: E402  (a sibling module of the tests)
  binary,
  gated,
  n_leaves,
  random_masks,
  random_variables,
  run,
  with_masks,
)

ATOL = 1e-5


class _MisnamedSpec(cyclegan.ResnetGenerator):
  """A generator whose spec names a module it does not have ("hed" for "head")."""

  def prune_spec(self) -> factory.PruneSpec:
    spec = super().prune_spec()
    inputs = {("hed" if k == "head" else k): v for k, v in spec.inputs.items()}
    return spec._replace(inputs=inputs)


class CycleGanTest(absltest.TestCase):
  """ResnetGenerator, ngf 8, 3 blocks, 32x32 inputs: stream 32 channels."""

  def setUp(self):
    super().setUp()
    self.model = cyclegan.ResnetGenerator(ngf=8, n_blocks=3)
    self.x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    self.variables = random_variables(gated(self.model), self.x, seed=0)
    rng = np.random.default_rng(0)
    masks = random_masks(rng, self.variables)
    masks["block1/gate1"][:] = -1.0           # block 1 keeps nothing: removed
    masks["stem_gate"][:] = -1.0              # one kept channel in the stem
    masks["stem_gate"][5] = 1.0
    # Stream channel 3: written by down2 and block 2, off in block 0 and block 1.
    masks["down2_gate"][3] = 1.0
    masks["block0/gate2"][3] = -1.0
    masks["block1/gate2"][3] = -1.0
    masks["block2/gate2"][3] = 1.0
    # Stream channel 7: off everywhere (dropped).
    for g in ("down2_gate", "block0/gate2", "block1/gate2", "block2/gate2"):
      masks[g][7] = -1.0
    self.masks = masks
    self.stream = ("down2_gate", "block0/gate2", "block1/gate2", "block2/gate2")

  def expected_widths(self, threshold=0):
    on = {g: np.asarray(m) > 0 for g, m in self.masks.items()}
    count = sum(on[g].astype(int) for g in self.stream)
    widths = {"stem": int(on["stem_gate"].sum()), "down1": int(on["down1_gate"].sum()),
              "down2": int((count > threshold).sum()),
              "up1": int(on["up1_gate"].sum()), "up2": int(on["up2_gate"].sum())}
    widths.update({f"block{b}/conv1": int(on[f"block{b}/gate1"].sum()) for b in range(3)})
    return widths

  def count_params_and_macs(self, w):
    """Parameters and 'true'-convention MACs of the generator at widths `w` (32x32 input)."""
    def conv(k, cin, cout, hw):
      return k * k * cin * cout + cout, hw * k * k * cin * cout
    layers = [conv(7, 3, w["stem"], 32 * 32), conv(3, w["stem"], w["down1"], 16 * 16),
              conv(3, w["down1"], w["down2"], 8 * 8)]
    for b in range(3):
      inner = w[f"block{b}/conv1"]
      if inner:
        layers += [conv(3, w["down2"], inner, 8 * 8), conv(3, inner, w["down2"], 8 * 8)]
    # Transposed convs counted at input resolution ("true" MACs).
    layers += [conv(3, w["down2"], w["up1"], 8 * 8), conv(3, w["up1"], w["up2"], 16 * 16),
               conv(7, w["up2"], 3, 32 * 32)]
    return sum(p for p, _ in layers), sum(m for _, m in layers)

  def test_output_equals_binary_masked_model(self):
    small, small_vars = prune.materialize(self.model, self.variables, self.masks)
    ref = run(gated(self.model), with_masks(self.variables, binary(self.masks)), self.x)
    out = run(small, small_vars, self.x)
    np.testing.assert_allclose(out, ref, atol=ATOL)
    # The masked model is not trivially the plain one.
    plain = run(self.model, {"params": {k: v for k, v in self.variables["params"].items()
                                         if not k.endswith("gate")}}, self.x)
    self.assertGreater(float(jnp.abs(plain - ref).max()), 1e-2)

  def test_widths_params_and_macs_shrink_as_expected(self):
    small, small_vars = prune.materialize(self.model, self.variables, self.masks)
    want = self.expected_widths()
    self.assertEqual(want["stem"], 1)
    self.assertEqual(want["block1/conv1"], 0)
    self.assertEqual(small.layer_widths(), want)
    self.assertEqual(prune.pruned_widths(self.model, self.masks), want)
    self.assertIsNone(small.layers.gate)
    self.assertNotIn("block1", small_vars["params"])       # the removed block
    self.assertNotIn("stem_gate", small_vars["params"])    # no gate parameters
    params, macs = self.count_params_and_macs(want)
    s = summary_lib.summary(small, self.x)
    self.assertEqual(n_leaves(small_vars), params)
    self.assertEqual(s.total_params, n_leaves(small_vars["params"]))
    self.assertEqual(s.total_macs, macs)
    full_params, full_macs = self.count_params_and_macs(self.model.layer_widths())
    self.assertEqual(summary_lib.summary(self.model, self.x).total_params, full_params)
    self.assertLess(params, full_params / 2)
    self.assertLess(macs, full_macs / 2)
    # Parameter shapes are those of the pruned model's own init.
    shapes = jax.eval_shape(small.init, jax.random.key(0), self.x)
    self.assertEqual(jax.tree.map(lambda a: a.shape, shapes),
                     jax.tree.map(lambda a: a.shape, small_vars))

  def test_kept_stream_channel_is_zero_where_its_own_gate_is_off(self):
    _, small_vars = prune.materialize(self.model, self.variables, self.masks)
    on = {g: np.asarray(m) > 0 for g, m in self.masks.items()}
    kept = np.flatnonzero(sum(on[g].astype(int) for g in self.stream) > 0)
    pos = int(np.flatnonzero(kept == 3)[0])
    p = small_vars["params"]
    self.assertTrue(np.all(np.asarray(p["block0"]["conv2"]["kernel"])[..., pos] == 0))
    self.assertEqual(float(p["block0"]["conv2"]["bias"][pos]), 0.0)
    self.assertTrue(np.any(np.asarray(p["block2"]["conv2"]["kernel"])[..., pos] != 0))
    old = np.asarray(self.variables["params"]["down2"]["kernel"])
    np.testing.assert_array_equal(
        p["down2"]["kernel"][..., pos],
        old[:, :, on["down1_gate"], 3])  # sliced input axis, original values

  def test_threshold_drops_stream_channels_kept_by_too_few_gates(self):
    threshold = 1
    small, small_vars = prune.materialize(self.model, self.variables, self.masks,
                                          threshold=threshold)
    want = self.expected_widths(threshold)
    self.assertLess(want["down2"], self.expected_widths(0)["down2"])
    self.assertEqual(small.layer_widths(), want)
    # Reference: every stream gate off on the channels at most `threshold` gates keep.
    on = {g: np.asarray(m) > 0 for g, m in self.masks.items()}
    group = sum(on[g].astype(int) for g in self.stream) > threshold
    ref_masks = binary(self.masks)
    for g in self.stream:
      ref_masks[g] = (on[g] & group).astype(np.float32)
    eff = prune.effective_masks(self.model, self.masks, threshold=threshold)
    for g, m in ref_masks.items():
      np.testing.assert_array_equal(eff[g], m, err_msg=g)
    ref = run(gated(self.model), with_masks(self.variables, ref_masks), self.x)
    np.testing.assert_allclose(run(small, small_vars, self.x), ref, atol=ATOL)

  def test_plain_params_and_missing_gates_keep_channels(self):
    # Params of the ungated model and masks for only some gates: the others keep everything.
    plain = {k: v for k, v in self.variables["params"].items() if not k.endswith("gate")}
    plain["block0"] = {k: v for k, v in plain["block0"].items() if not k.startswith("gate")}
    masks = {"up1_gate": self.masks["up1_gate"]}
    small, small_params = prune.materialize(self.model, plain, masks)
    self.assertEqual(set(small_params), set(plain))
    widths = dict(self.model.layer_widths(), up1=int((self.masks["up1_gate"] > 0).sum()))
    self.assertEqual(small.layer_widths(), widths)
    ref_masks = {g: np.ones_like(m) for g, m in self.masks.items()}
    ref_masks["up1_gate"] = binary(self.masks)["up1_gate"]
    ref = run(gated(self.model), with_masks(self.variables, ref_masks), self.x)
    np.testing.assert_allclose(run(small, {"params": small_params}, self.x), ref, atol=ATOL)

  def test_mask_errors_name_the_problem(self):
    with self.assertRaisesRegex(ConfigError, r"unknown gates \['block9/gate1'\]"):
      prune.materialize(self.model, self.variables,
                        {**self.masks, "block9/gate1": np.ones(32)})
    with self.assertRaisesRegex(ConfigError, r"'up2_gate' has shape \(9,\).*\(8,\)"):
      prune.materialize(self.model, self.variables, {**self.masks, "up2_gate": np.ones(9)})
    with self.assertRaisesRegex(ConfigError, "threshold"):
      prune.materialize(self.model, self.variables, self.masks, threshold=-1)
    with self.assertRaisesRegex(ConfigError, "prune_spec"):
      prune.materialize(cyclegan.NLayerDiscriminator(ndf=8), {}, {})

  def test_spec_that_does_not_match_the_model_is_reported(self):
    model = _MisnamedSpec(ngf=8, n_blocks=3)
    with self.assertRaisesRegex(ConfigError, r"names modules the model does not have: \['hed'\]"):
      prune.materialize(model, self.variables, self.masks)

  def test_removed_block_width_zero(self):
    model = cyclegan.ResnetGenerator(ngf=8, n_blocks=3, widths={"block1/conv1": 0})
    variables = jax.eval_shape(model.init, jax.random.key(0), self.x)
    self.assertEqual(sorted(k for k in variables["params"] if k.startswith("block")),
                     ["block0", "block2"])
    with self.assertRaisesRegex(ConfigError, "non-negative"):
      cyclegan.ResnetGenerator(widths={"block1/conv1": -1}).layer_widths()
    with self.assertRaisesRegex(ConfigError, "positive int"):
      cyclegan.ResnetGenerator(widths={"up1": 0}).layer_widths()


class CifarResNetTest(absltest.TestCase):
  """ResNet-20 with option-A shortcuts, batch norm in eval mode with non-trivial statistics."""

  def setUp(self):
    super().setUp()
    self.model = resnet_cifar.ResNet20()
    self.x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    self.variables = random_variables(gated(self.model), self.x, seed=1)
    masks = random_masks(np.random.default_rng(2), self.variables)
    masks["stage2_block1/gate1"][:] = -1.0    # an all-off block inside a stage
    masks["stage3_block0/gate1"][:] = -1.0    # an all-off stride-2 block (shortcut remains)
    masks["stage1_block0/gate1"][:] = -1.0    # one kept channel
    masks["stage1_block0/gate1"][2] = 1.0
    # Stage-1 stream channel 4: kept by the stem only, off in every stage-1 block.
    masks["stem_gate"][4] = 1.0
    for b in range(3):
      masks[f"stage1_block{b}/gate2"][4] = -1.0
    # Stage-2 channel 4 + 8 receives it through the shortcut while every stage-2 gate is off.
    for b in range(3):
      masks[f"stage2_block{b}/gate2"][12] = -1.0
    self.masks = masks

  def stream_gates(self, stage):
    gates = [f"stage{stage}_block{b}/gate2" for b in range(3)]
    return (["stem_gate"] if stage == 1 else []) + gates

  def expected_widths(self):
    on = {g: np.asarray(m) > 0 for g, m in self.masks.items()}
    kept, widths = {}, {}
    for s, width in zip((1, 2, 3), (16, 32, 64)):
      group = sum(on[g].astype(int) for g in self.stream_gates(s)) > 0
      if s > 1:  # channels the option-A shortcut brings from the previous stage
        offset = (width - width // 2) // 2
        group[np.flatnonzero(kept[s - 1]) + offset] = True
      kept[s] = group
      widths[f"stage{s}"] = int(group.sum())
      for b in range(3):
        widths[f"stage{s}_block{b}/conv1"] = int(on[f"stage{s}_block{b}/gate1"].sum())
    return widths

  def count_params_and_macs(self, w):
    params, macs = 27 * w["stage1"] + 2 * w["stage1"], 32 * 32 * 27 * w["stage1"]
    prev = w["stage1"]
    for s, hw in zip((1, 2, 3), (32, 16, 8)):
      n = w[f"stage{s}"]
      for b in range(3):
        k = w[f"stage{s}_block{b}/conv1"]
        params += 2 * n                         # the second batch norm stays
        if k:
          params += 9 * prev * k + 2 * k + 9 * k * n
          macs += hw * hw * 9 * (prev * k + k * n)
        prev = n
    return params + 10 * prev + 10, macs + 10 * prev

  def test_output_equals_binary_masked_model(self):
    small, small_vars = prune.materialize(self.model, self.variables, self.masks)
    self.assertEqual(set(small_vars), {"params", "batch_stats"})
    ref = run(gated(self.model), with_masks(self.variables, binary(self.masks)), self.x)
    out = run(small, small_vars, self.x)
    self.assertGreater(float(jnp.abs(ref).max()), 0.1)
    np.testing.assert_allclose(out, ref, atol=ATOL)

  def test_widths_params_and_macs(self):
    small, small_vars = prune.materialize(self.model, self.variables, self.masks)
    want = self.expected_widths()
    self.assertEqual(want["stage2_block1/conv1"], 0)
    self.assertEqual(want["stage1_block0/conv1"], 1)
    self.assertEqual(small.layer_widths(), want)
    on = {g: np.asarray(m) > 0 for g, m in self.masks.items()}
    stage2_gates_only = sum(on[g].astype(int) for g in self.stream_gates(2)) > 0
    self.assertFalse(stage2_gates_only[12])
    self.assertGreater(want["stage2"], int(stage2_gates_only.sum()))  # shortcut-fed channels
    # The reduced blocks keep only their second batch norm.
    self.assertEqual(set(small_vars["params"]["stage3_block0"]), {"BatchNorm_1"})
    params, macs = self.count_params_and_macs(want)
    s = summary_lib.summary(small, self.x)
    self.assertEqual(s.total_params, n_leaves(small_vars["params"]))
    self.assertEqual(s.total_params, params)
    self.assertEqual(s.total_macs, macs)
    full_params, full_macs = self.count_params_and_macs(self.model.layer_widths())
    self.assertEqual(full_params, summary_lib.summary(self.model, self.x).total_params)
    self.assertLess(macs, full_macs * 0.6)

  def test_threshold_with_shortcut_channels(self):
    threshold = 2
    small, small_vars = prune.materialize(self.model, self.variables, self.masks,
                                          threshold=threshold)
    on = {g: np.asarray(m) > 0 for g, m in self.masks.items()}
    ref_masks = binary(self.masks)
    kept = {}
    for s, width in zip((1, 2, 3), (16, 32, 64)):
      gates = self.stream_gates(s)
      group = sum(on[g].astype(int) for g in gates) > threshold
      if s > 1:
        group[np.flatnonzero(kept[s - 1]) + (width - width // 2) // 2] = True
      kept[s] = group
      for g in gates:
        ref_masks[g] = (on[g] & group).astype(np.float32)
      self.assertEqual(small.layer_widths()[f"stage{s}"], int(group.sum()))
    self.assertEqual(prune.pruned_widths(self.model, self.masks, threshold), small.layer_widths())
    self.assertLess(int(kept[1].sum()), self.expected_widths()["stage1"])
    ref = run(gated(self.model), with_masks(self.variables, ref_masks), self.x)
    np.testing.assert_allclose(run(small, small_vars, self.x), ref, atol=ATOL)

  def test_unsupported_variants_raise(self):
    with self.assertRaisesRegex(ConfigError, "bireal=False"):
      prune.materialize(resnet_cifar.ResNet20(bireal=True), self.variables, {})


class UnetTest(absltest.TestCase):
  """pix2pix U-Net, 5 downsamplings, ngf 4, batch norm in eval mode, 32x32 inputs."""

  def setUp(self):
    super().setUp()
    self.model = pix2pix.UnetGenerator(num_downs=5, ngf=4)
    self.x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    self.variables = random_variables(gated(self.model), self.x, seed=3)
    masks = random_masks(np.random.default_rng(4), self.variables)
    masks["down2_gate"][:] = -1.0     # one kept channel (a skip and the next conv's input)
    masks["down2_gate"][6] = 1.0
    masks["up3_gate"][:] = -1.0       # nothing kept: one zero channel stays
    self.masks = masks

  def test_output_equals_binary_masked_model(self):
    small, small_vars = prune.materialize(self.model, self.variables, self.masks)
    widths = {role[:-len("_gate")]: max(int((m > 0).sum()), 1) for role, m in self.masks.items()}
    self.assertEqual(small.layer_widths(), widths)
    self.assertEqual(prune.pruned_widths(self.model, self.masks), widths)
    self.assertEqual(widths["down2"], 1)
    self.assertEqual(widths["up3"], 1)
    p = small_vars["params"]
    self.assertTrue(np.all(np.asarray(p["up3"]["kernel"]) == 0))
    self.assertTrue(np.all(np.asarray(p["up3_norm"]["scale"]) == 0))
    ref = run(gated(self.model), with_masks(self.variables, binary(self.masks)), self.x)
    out = run(small, small_vars, self.x)
    self.assertGreater(float(jnp.abs(ref).max()), 0.1)
    np.testing.assert_allclose(out, ref, atol=ATOL)
    # Parameters: down convs (no bias) and transposed convs reading [skip, previous].
    w, n = widths, 5
    params = 16 * 3 * w["down1"]
    params += sum(16 * w[f"down{k}"] * w[f"down{k + 1}"] for k in range(1, n))
    params += sum(2 * w[f"down{k}"] for k in range(2, n))            # batch norms
    params += 16 * w[f"down{n}"] * w["up1"] + 2 * w["up1"]
    params += sum(16 * (w[f"down{n - k + 1}"] + w[f"up{k - 1}"]) * w[f"up{k}"] + 2 * w[f"up{k}"]
                  for k in range(2, n))
    params += 16 * (w["down1"] + w[f"up{n - 1}"]) * 3 + 3
    self.assertEqual(n_leaves(small_vars["params"]), params)
    self.assertEqual(summary_lib.summary(small, self.x).total_params, params)


if __name__ == "__main__":
  absltest.main()
