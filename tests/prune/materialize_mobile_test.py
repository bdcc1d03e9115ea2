"""Tests for jaxcompress.prune.materialize on separable convs (the mobile ResNet generator).

DMAD (arXiv 2011.08382) Sec. 3 "Pruning" on GAN Compression's mobile generator, SJLeo/DMAD
`models/MaskMobileCycleGAN.py` (`prune`: `inhert_weight`, `get_cfg_residual_mask`). Reference
outputs come from the unpruned model gated by `factory.ChannelGate` with masks 1[m > 0] (or
the group rule's masks, built here by hand); the official weight copying of a separable conv is
transcribed here in NumPy; widths and parameter counts are counted here from the layer shapes.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from jaxcompress import prune
from jaxcompress.errors import ConfigError
from jaxcompress.models import factory, mobile_gan

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
STREAM = ("down2_gate", "block0/gate2", "block1/gate2", "block2/gate2")


def official_separable(old, last_mask, current_mask, zero_mask):
  """SJLeo/DMAD `MaskMobileCycleGANModel.prune.inhert_weight`, separable branch, in HWIO.

  For each kept input channel j (`last_mask`): the depthwise filter and bias of j; for each
  kept output channel k (`current_mask`): the pointwise weight [k, j] and bias k, times 0 where
  `zero_mask[k]` is off (a stream channel this block's mask switches off).
  """
  dw_k, dw_b = old["depthwise"]["kernel"], old["depthwise"]["bias"]
  pw_k, pw_b = old["pointwise"]["kernel"], old["pointwise"]["bias"]
  ins, outs = np.flatnonzero(last_mask), np.flatnonzero(current_mask)
  new_dw_k = np.zeros((*dw_k.shape[:2], 1, len(ins)), np.float32)
  new_dw_b = np.zeros(len(ins), np.float32)
  new_pw_k = np.zeros((1, 1, len(ins), len(outs)), np.float32)
  new_pw_b = np.zeros(len(outs), np.float32)
  for c, j in enumerate(ins):
    new_dw_k[..., 0, c] = dw_k[..., 0, j]
    new_dw_b[c] = dw_b[j]
    for f, k in enumerate(outs):
      new_pw_k[0, 0, c, f] = pw_k[0, 0, j, k] if zero_mask[k] else 0.0
      new_pw_b[f] = pw_b[k] if zero_mask[k] else 0.0
  return {"depthwise": {"kernel": new_dw_k, "bias": new_dw_b},
          "pointwise": {"kernel": new_pw_k, "bias": new_pw_b}}


class _DepthwiseUnderGate(mobile_gan.MobileResnetGenerator):
  """A spec that lists a whole separable conv (with its depthwise conv) as a gate's module."""

  def prune_spec(self) -> factory.PruneSpec:
    spec = super().prune_spec()
    roles = dict(spec.roles)
    roles["block0/conv1"] = factory.PruneRole({"block0/gate1": ("block0/conv1", "block0/norm1")},
                                              removable=True)
    return spec._replace(roles=roles)


class MobileGeneratorTest(absltest.TestCase):
  """MobileResnetGenerator, ngf 8, 3 blocks, 32x32 inputs: stream 32 channels."""

  def setUp(self):
    super().setUp()
    self.model = mobile_gan.MobileResnetGenerator(ngf=8, n_blocks=3)
    self.x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    self.variables = random_variables(gated(self.model), self.x, seed=5)
    masks = random_masks(np.random.default_rng(6), self.variables)
    masks["block1/gate1"][:] = -1.0           # block 1 keeps nothing: removed
    # Stream channel 3: kept (down2 and block 2 write it) but off in block 0.
    masks["down2_gate"][3] = 1.0
    masks["block0/gate2"][3] = -1.0
    masks["block2/gate2"][3] = 1.0
    # Stream channels 7 and 20: off everywhere (dropped; every depthwise conv of the stream
    # loses them).
    for g in STREAM:
      masks[g][[7, 20]] = -1.0
    self.masks = masks

  def on(self):
    return {g: np.asarray(m) > 0 for g, m in self.masks.items()}

  def stream_keep(self, threshold=0):
    return sum(self.on()[g].astype(int) for g in STREAM) > threshold

  def expected_widths(self, threshold=0):
    on = self.on()
    widths = {r: int(on[f"{r}_gate"].sum()) for r in ("stem", "down1", "up1", "up2")}
    widths["down2"] = int(self.stream_keep(threshold).sum())
    widths.update({f"block{b}/conv1": int(on[f"block{b}/gate1"].sum()) for b in range(3)})
    return widths

  @staticmethod
  def count_params(w):
    """Parameters of the mobile generator at widths `w` (every conv with a bias)."""
    def conv(k, cin, cout):
      return k * k * cin * cout + cout
    c = w["down2"]
    n = conv(7, 3, w["stem"]) + conv(3, w["stem"], w["down1"]) + conv(3, w["down1"], c)
    for b in range(3):
      inner = w[f"block{b}/conv1"]
      if inner:  # depthwise (one 3x3 filter per input channel) and pointwise, twice
        n += 10 * c + conv(1, c, inner) + 10 * inner + conv(1, inner, c)
    return n + conv(3, c, w["up1"]) + conv(3, w["up1"], w["up2"]) + conv(7, w["up2"], 3)

  def test_output_equals_binary_masked_model(self):
    small, small_vars = prune.materialize(self.model, self.variables, self.masks)
    ref = run(gated(self.model), with_masks(self.variables, binary(self.masks)), self.x)
    out = run(small, small_vars, self.x)
    self.assertGreater(float(jnp.abs(ref).max()), 0.1)
    np.testing.assert_allclose(out, ref, atol=ATOL)
    # The masked model is not trivially the plain one.
    plain = run(gated(self.model), with_masks(
        self.variables, {g: np.ones_like(m) for g, m in self.masks.items()}), self.x)
    self.assertGreater(float(jnp.abs(plain - ref).max()), 1e-2)

  def test_widths_and_parameter_count(self):
    small, small_vars = prune.materialize(self.model, self.variables, self.masks)
    want = self.expected_widths()
    self.assertEqual(want["block1/conv1"], 0)
    self.assertLess(want["down2"], 30)
    self.assertEqual(small.layer_widths(), want)
    self.assertEqual(prune.pruned_widths(self.model, self.masks), want)
    self.assertIsNone(small.layers.gate)
    p = small_vars["params"]
    self.assertNotIn("block1", p)                          # the removed block
    self.assertNotIn("stem_gate", p)                       # no gate parameters
    self.assertNotIn("gate1", p["block0"])
    c, inner = want["down2"], want["block0/conv1"]
    self.assertEqual(p["block0"]["conv1"]["depthwise"]["kernel"].shape, (3, 3, 1, c))
    self.assertEqual(p["block0"]["conv1"]["pointwise"]["kernel"].shape, (1, 1, c, inner))
    self.assertEqual(p["block0"]["conv2"]["depthwise"]["kernel"].shape, (3, 3, 1, inner))
    count = self.count_params(want)
    self.assertEqual(n_leaves(small_vars), count)
    self.assertEqual(summary_lib.summary(small, self.x).total_params, count)
    full = self.count_params(self.model.layer_widths())
    self.assertEqual(summary_lib.summary(self.model, self.x).total_params, full)
    self.assertLess(count, 0.7 * full)
    shapes = jax.eval_shape(small.init, jax.random.key(0), self.x)
    self.assertEqual(jax.tree.map(lambda a: a.shape, shapes),
                     jax.tree.map(lambda a: a.shape, small_vars))
    # The removed block still records its tap (its output is its input).
    _, state = jax.jit(lambda v, x: small.apply(v, x, mutable=[factory.TAPS]))(small_vars,
                                                                              self.x)
    taps = factory.taps(state)
    self.assertEqual(sorted(t for t in taps if t.startswith("res")), ["res1", "res2", "res3"])
    np.testing.assert_array_equal(taps["res2"], taps["res1"])

  def test_separable_convs_match_the_official_weight_copy(self):
    _, small_vars = prune.materialize(self.model, self.variables, self.masks)
    on, stream = self.on(), self.stream_keep()
    old = jax.tree.map(np.asarray, self.variables["params"])
    for b in (0, 2):
      gate1, gate2 = on[f"block{b}/gate1"], on[f"block{b}/gate2"]
      # conv1: reads the kept stream, keeps gate1's channels; conv2: reads those, writes the
      # kept stream, zero where gate2 is off.
      want = {"conv1": official_separable(old[f"block{b}"]["conv1"], stream, gate1,
                                          np.ones_like(gate1)),
              "conv2": official_separable(old[f"block{b}"]["conv2"], gate1, stream, gate2)}
      got = jax.tree.map(np.asarray, small_vars["params"][f"block{b}"])
      for conv in ("conv1", "conv2"):
        for layer in ("depthwise", "pointwise"):
          for leaf in ("kernel", "bias"):
            np.testing.assert_array_equal(got[conv][layer][leaf], want[conv][layer][leaf],
                                          err_msg=f"block{b}/{conv}/{layer}/{leaf}")
    pos = int(np.flatnonzero(np.flatnonzero(stream) == 3)[0])
    p = small_vars["params"]
    self.assertTrue(np.all(np.asarray(p["block0"]["conv2"]["pointwise"]["kernel"])[..., pos] == 0))
    self.assertTrue(np.any(np.asarray(p["block2"]["conv2"]["pointwise"]["kernel"])[..., pos] != 0))
    # The depthwise conv keeps stream channel 3 even in block 0 (its input carries it).
    np.testing.assert_array_equal(p["block0"]["conv1"]["depthwise"]["kernel"][..., pos],
                                  old["block0"]["conv1"]["depthwise"]["kernel"][..., 3])

  def test_threshold_drops_stream_channels_kept_by_too_few_gates(self):
    threshold = 1
    small, small_vars = prune.materialize(self.model, self.variables, self.masks,
                                          threshold=threshold)
    want = self.expected_widths(threshold)
    self.assertLess(want["down2"], self.expected_widths(0)["down2"])
    self.assertEqual(small.layer_widths(), want)
    self.assertEqual(prune.pruned_widths(self.model, self.masks, threshold), want)
    on, group = self.on(), self.stream_keep(threshold)
    ref_masks = binary(self.masks)
    for g in STREAM:
      ref_masks[g] = (on[g] & group).astype(np.float32)
    eff = prune.effective_masks(self.model, self.masks, threshold=threshold)
    self.assertEqual(set(eff), set(self.masks))
    for g, m in ref_masks.items():
      np.testing.assert_array_equal(eff[g], m, err_msg=g)
    ref = run(gated(self.model), with_masks(self.variables, ref_masks), self.x)
    np.testing.assert_allclose(run(small, small_vars, self.x), ref, atol=ATOL)

  def test_removable_blocks_and_spec_errors(self):
    model = mobile_gan.MobileResnetGenerator(ngf=8, n_blocks=3, widths={"block1/conv1": 0})
    variables = jax.eval_shape(model.init, jax.random.key(0), self.x)
    self.assertEqual(sorted(k for k in variables["params"] if k.startswith("block")),
                     ["block0", "block2"])
    self.assertEqual(sorted(r for r in model.prune_spec().roles if r.startswith("block")),
                     ["block0/conv1", "block2/conv1"])
    with self.assertRaisesRegex(ConfigError, "non-negative"):
      mobile_gan.MobileResnetGenerator(widths={"block1/conv1": -1}).layer_widths()
    with self.assertRaisesRegex(ConfigError, "positive int"):
      mobile_gan.MobileResnetGenerator(widths={"down2": 0}).layer_widths()
    bad = _DepthwiseUnderGate(ngf=8, n_blocks=3)
    with self.assertRaisesRegex(ConfigError, r"'block0/conv1/depthwise' is a depthwise conv"):
      prune.materialize(bad, self.variables, self.masks)


class _Separable(nn.Module):
  """Depthwise conv (bias) -> batch norm without offset -> pointwise conv."""
  features: int
  groups: int | None = None   # None: depthwise (one group per input channel)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    y = nn.Conv(c, (3, 3), padding="SAME", feature_group_count=self.groups or c,
                name="depthwise")(x)
    y = nn.BatchNorm(use_running_average=False, use_bias=False, momentum=0.5, name="norm")(y)
    return nn.Conv(self.features, (1, 1), name="pointwise")(y)


class _TinySeparableNet(nn.Module):
  """stem conv -> gate -> ReLU -> separable conv with batch norm -> gate -> ReLU -> head."""
  layers: factory.Layers = factory.FLOAT
  widths: Mapping[str, int] | None = None
  groups: int | None = None

  def layer_widths(self) -> dict[str, int]:
    return factory.resolve_widths(self.widths, {"stem": 6, "sep": 5}, "_TinySeparableNet")

  def prune_spec(self) -> factory.PruneSpec:
    roles = {"stem": factory.PruneRole({"stem_gate": ("stem",)}),
             "sep": factory.PruneRole({"sep_gate": ("sep/pointwise",)})}
    return factory.PruneSpec(roles, {"sep": ("stem",), "head": ("sep",)}, input_layer="stem",
                             input_size=(8, 8))

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    w, ly = self.layer_widths(), self.layers
    x = nn.relu(factory.gate(ly, w["stem"], "stem_gate")(nn.Conv(w["stem"], (3, 3),
                                                                 name="stem")(x)))
    x = _Separable(w["sep"], self.groups, name="sep")(x)
    return nn.Conv(2, (1, 1), name="head")(nn.relu(factory.gate(ly, w["sep"], "sep_gate")(x)))


class DepthwiseNormTest(absltest.TestCase):
  """A norm with parameters after a depthwise conv follows the depthwise conv's channels."""

  def setUp(self):
    super().setUp()
    self.model = _TinySeparableNet()
    self.x = jax.random.normal(jax.random.key(2), (4, 8, 8, 3))
    self.variables = random_variables(gated(self.model), self.x, seed=7)
    self.masks = {"stem_gate": np.array([1, -1, 1, 1, -1, 1], np.float32),
                  "sep_gate": np.array([-1, 1, 1, -1, 1], np.float32)}

  def test_norm_leaves_follow_the_input_channels(self):
    small, small_vars = prune.materialize(self.model, self.variables, self.masks)
    self.assertEqual(small.layer_widths(), {"stem": 4, "sep": 3})
    keep = np.flatnonzero(self.masks["stem_gate"] > 0)
    old = self.variables
    for col, leaf in (("params", "scale"), ("batch_stats", "mean"), ("batch_stats", "var")):
      np.testing.assert_array_equal(small_vars[col]["sep"]["norm"][leaf],
                                    np.asarray(old[col]["sep"]["norm"][leaf])[keep])
    # Batch statistics without offset send a dropped (constant) channel to 0: exact.
    ref, ref_state = gated(self.model).apply(with_masks(old, binary(self.masks)), self.x,
                                             mutable=["batch_stats"])
    out, state = small.apply(small_vars, self.x, mutable=["batch_stats"])
    self.assertGreater(float(jnp.abs(ref).max()), 0.1)
    np.testing.assert_allclose(out, ref, atol=ATOL)
    np.testing.assert_allclose(state["batch_stats"]["sep"]["norm"]["var"],
                               np.asarray(ref_state["batch_stats"]["sep"]["norm"]["var"])[keep],
                               rtol=1e-5, atol=ATOL)

  def test_grouped_conv_that_is_not_depthwise_raises(self):
    model = _TinySeparableNet(groups=2)
    variables = random_variables(gated(model), self.x, seed=8)
    with self.assertRaisesRegex(ConfigError, r"'sep/depthwise' is a grouped conv"):
      prune.materialize(model, variables, self.masks)


if __name__ == "__main__":
  absltest.main()
