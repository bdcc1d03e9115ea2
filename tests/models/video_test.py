"""Tests for the 3-D video backbones (jaxcompress.models.video_*).

References: PyTorch transcriptions of the official models (`video_torch_ref.py`, written from
FingerRec/DSM-decoupling-scene-motion `src/model/*.py` and torchvision's video ResNets), whose
parameter counts and weights are copied across (NCTHW <-> NTHWC, OIDHW <-> DHWIO);
`jax.lax.conv_general_dilated` and an explicit NumPy loop for the factory's 3-D convolution.
"""
from __future__ import annotations

import math
import os
import sys
import unittest

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest, parameterized

from jaxcompress import models
from jaxcompress.models import factory, video_i3d, video_resnet
from jaxcompress.models import video_layers as vl

sys.path.insert(0, os.path.dirname(__file__))
try:
  import torch
  import video_torch_ref as ref
except ImportError:  # the torch comparisons skip; the rest runs
  torch = ref = None

# unittest's skip (not a pytest mark) so that it reaches absl's parameterized copies.
needs_torch = unittest.skipIf(ref is None, "PyTorch is not installed")
CLIP = (2, 16, 112, 112, 3)

# name -> (torch transcription builder, official parameters at 400 classes, at 101, features).
# Counts of the official modules (DSM `src/model/*.py` without their pretraining heads and
# unused members; torchvision's published `num_params` for r3d_18 and r2plus1d_18).
OFFICIAL = {
    "c3d": (lambda nc: ref.C3D(nc), 27_866_640, 27_713_253, 512),
    "r3d_18": (lambda nc: ref.R3DHara(num_classes=nc), 33_408_704, 33_255_616, 512),
    "r3d_18_torchvision": (lambda nc: ref.TvVideoResNet(False, num_classes=nc), 33_371_472,
                           33_218_085, 512),
    "r2plus1d_18": (lambda nc: ref.TvVideoResNet(True, num_classes=nc), 31_505_325, 31_351_938,
                    512),
    "r2plus1d_dsm": (lambda nc: ref.R2Plus1DDsm(num_classes=nc), 14_570_503, 14_417_116, 512),
    "i3d": (lambda nc: ref.I3D(nc), 15_154_464, 13_011_232, 1024),
}
# The last feature map of a (2, 16, 112, 112, 3) clip (the official code's shape comments).
LAST_TAP = {
    "c3d": ("conv5", (2, 2, 7, 7, 512)),
    "r3d_18": ("stage4", (2, 1, 4, 4, 512)),
    "r3d_18_torchvision": ("stage4", (2, 2, 7, 7, 512)),
    "r2plus1d_18": ("stage4", (2, 2, 7, 7, 512)),
    "r2plus1d_dsm": ("stage4", (2, 2, 7, 7, 512)),
    "i3d": ("mixed_5c", (2, 2, 4, 4, 1024)),
}


def n_params(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def strip_gates(tree):
  return {k: strip_gates(v) if hasattr(v, "items") else v for k, v in tree.items()
          if "gate" not in k}


def abstract_init(model, shape, **kwargs):
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  return jax.eval_shape(lambda v: model.init(jax.random.key(0), v, **kwargs), x)


def shapes(tree) -> dict:
  return {jax.tree_util.keystr(p): tuple(v.shape)
          for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def torch_variables(tmodel, name: str | None = None, dtype=np.float32) -> dict:
  v = ref.to_flax(tmodel, dtype)
  if name == "r3d_18":  # the official `cp` is a (1, 1, 1) conv: our bias-free linear classifier
    k = v["params"]["classifier"]["kernel"]
    v["params"]["classifier"]["kernel"] = k.reshape(k.shape[-2:])
  return jax.tree_util.tree_map(jnp.asarray, v)


def to_torch(x) -> "torch.Tensor":
  return torch.from_numpy(np.asarray(x)).permute(0, 4, 1, 2, 3).contiguous()


def from_torch(y) -> np.ndarray:
  y = y.detach().numpy()
  return y.transpose(0, 2, 3, 4, 1) if y.ndim == 5 else y


def compare_with_torch(test, module, tmodule, x, *, rtol, atol, train_tol=None, name=None,
                       post=None, features=False):
  """Outputs in eval and train mode and the running means after a train step.

  `post` maps our output to the official one (`jax.nn.log_softmax`: DSM's forwards end with it);
  `train_tol` (default: rtol and atol) bounds the train-mode differences; `features` also
  compares the pooled features (`return_features=True`) with the transcription's in eval mode.
  """
  post = post or (lambda y: y)
  kwargs = {"return_features": True} if features else {}

  def split(out):  # (logits for `post`, features or None)
    return out if features else (out, None)
  ref.randomize(tmodule)
  variables = torch_variables(tmodule, name, np.asarray(x).dtype)
  if np.asarray(x).dtype == np.float64:
    tmodule.double()
  tx = to_torch(x)
  @jax.jit
  def fwd_eval(v, x):
    y, feats = split(module.apply(v, x, train=False, **kwargs))
    return post(y), feats

  @jax.jit
  def fwd_train(v, x):
    out, state = module.apply(v, x, train=True, mutable=["batch_stats"], **kwargs)
    return post(split(out)[0]), state
  tmodule.eval()
  y, feats = fwd_eval(variables, x)
  with torch.no_grad():
    np.testing.assert_allclose(y, from_torch(tmodule(tx)), rtol=rtol, atol=atol)
    if features:
      np.testing.assert_allclose(feats, tmodule.features(tx).numpy(), rtol=rtol, atol=atol)
  tmodule.train()
  with torch.no_grad():
    expected = from_torch(tmodule(tx))
  out, state = fwd_train(variables, x)
  if train_tol is not None:
    rtol = atol = train_tol
  np.testing.assert_allclose(out, expected, rtol=rtol, atol=atol)
  means = {k: v for k, v in jax.tree_util.tree_leaves_with_path(state["batch_stats"])
           if jax.tree_util.keystr(k).endswith("['mean']")}
  want = dict(jax.tree_util.tree_leaves_with_path(torch_variables(tmodule, name)["batch_stats"]))
  test.assertNotEmpty(means)
  for path, mean in means.items():
    np.testing.assert_allclose(mean, want[path], rtol=rtol, atol=atol,
                               err_msg=jax.tree_util.keystr(path))


class ArchitectureTest(parameterized.TestCase):

  @parameterized.parameters(*sorted(OFFICIAL))
  def test_counts_layout_shapes_and_features(self, name):
    build, n400, n101, dim = OFFICIAL[name]
    model = models.build(name, num_classes=400)
    full = dict(abstract_init(model, CLIP))
    full["params"] = dict(full["params"])
    self.assertEqual(n_params(full["params"]), n400)
    if ref is not None:
      tmodel = build(400)
      self.assertEqual(ref.n_params(tmodel), n400)
      # Every torch parameter and BN statistic has a JAX variable of the same shape, no more.
      self.assertEqual(shapes(full), shapes(torch_variables(tmodel, name)))
    clip = jax.ShapeDtypeStruct(CLIP, jnp.float32)
    (logits, feats), state = jax.eval_shape(
        lambda v, x: model.apply(v, x, return_features=True, mutable=[factory.TAPS]), full, clip)
    self.assertEqual((logits.shape, feats.shape), ((2, 400), (2, dim)))
    role, shape = LAST_TAP[name]
    self.assertEqual(factory.taps(state)[role].shape, shape)
    # The pretraining encoder: the same variables without `classifier`, pooled features out.
    bare_model = models.build(name, num_classes=400, include_top=False)
    bare = abstract_init(bare_model, CLIP)
    head = full["params"].pop("classifier")
    self.assertEqual(shapes(bare), shapes(full))
    # At 101 classes: the backbone and a head of 101 columns (kernel's last axis, bias).
    per_class = sum(int(np.prod(v.shape[:-1])) for v in head.values())
    self.assertEqual(n_params(bare["params"]) + 101 * per_class, n101)
    self.assertEqual(jax.eval_shape(bare_model.apply, bare, clip).shape, (2, dim))

  def test_i3d_at_224_pools_the_official_window(self):
    model = video_i3d.i3d(num_classes=7)
    x = jax.ShapeDtypeStruct((1, 16, 224, 224, 3), jnp.float32)
    _, state = jax.eval_shape(lambda v, x: model.apply(v, x, mutable=[factory.TAPS]),
                              abstract_init(model, x.shape), x)
    self.assertEqual(factory.taps(state)["mixed_5c"].shape, (1, 2, 7, 7, 1024))

  def test_bad_inputs_raise(self):
    model = video_resnet.r3d_18()
    with self.assertRaisesRegex(ValueError, r"\(N, T, H, W, C\)"):
      abstract_init(model, (16, 112, 112, 3))
    with self.assertRaisesRegex(ValueError, "weight_init"):
      abstract_init(video_resnet.r3d_18(weight_init="xavier"), CLIP)
    with self.assertRaisesRegex(ValueError, "variant"):
      abstract_init(video_resnet.r3d_18(variant="hara"), CLIP)

  def test_gate_slot_after_every_norm(self):
    layers = factory.FLOAT.replace(gate=factory.ChannelGate)
    for name in sorted(OFFICIAL):
      variables = abstract_init(models.build(name, layers=layers), (1, 8, 32, 32, 3))
      n_gates = sum(k.endswith("['mask']") for k in shapes(variables["params"]))
      n_norms = sum(k.endswith("['mean']") for k in shapes(variables["batch_stats"]))
      self.assertEqual(n_gates, n_norms, name)

  def test_gates_mask_the_normalised_channels(self):
    # Unit masks leave the block as it is; a zero mask on gate2 leaves act(shortcut) there.
    mid = video_resnet.mid_channels(4, 6)
    gated = video_resnet.BasicBlock(6, 2, factory.FLOAT.replace(gate=factory.ChannelGate),
                                    mids=(mid, mid))
    plain = gated.clone(layers=factory.FLOAT)
    x = jnp.asarray(_inputs((2, 3, 5, 5, 4)))
    variables = jax.jit(gated.init)(jax.random.key(0), x)
    params = strip_gates(variables["params"])
    # gate1, gate2, downsample_gate and the gates inside both (2+1)D convs.
    self.assertLen([k for k in shapes(variables["params"]) if "gate" in k], 5)
    fwd = jax.jit(lambda m, v, x: m.apply(v, x), static_argnums=0)
    y = fwd(gated, variables, x)
    np.testing.assert_allclose(y, fwd(plain, {**variables, "params": params}, x), rtol=1e-6)
    shut = {**variables["params"], "gate2": {"mask": jnp.zeros(6).at[0].set(1.0)}}
    y_shut = fwd(gated, {**variables, "params": shut}, x)
    np.testing.assert_allclose(y_shut[..., 0], y[..., 0], rtol=1e-6)
    # Closed channels carry relu(BN(1x1x1 stride-2 conv of x)) (eval BN: mean 0, var 1).
    down = jax.lax.conv_general_dilated(x, params["downsample"]["kernel"], (2, 2, 2), "VALID",
                                        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    bn = params["downsample_bn"]
    want = np.maximum(down / np.sqrt(1 + 1e-5) * bn["scale"] + bn["bias"], 0)
    np.testing.assert_allclose(y_shut[..., 1:], want[..., 1:], rtol=1e-5, atol=1e-6)


def _inputs(shape, seed=0, dtype=np.float32):
  return np.random.RandomState(seed).standard_normal(shape).astype(dtype)


@needs_torch
class TorchEqualityTest(parameterized.TestCase):
  """Weights copied from the transcriptions; outputs equal in eval and train mode."""

  def test_r3d_block(self):
    block = video_resnet.BasicBlock(16, 2, factory.FLOAT)
    compare_with_torch(self, block, ref.HaraBlock(8, 16, 2), _inputs((2, 5, 7, 7, 8)),
                       rtol=1e-4, atol=1e-4)

  def test_r2plus1d_torchvision_block(self):
    mid = video_resnet.mid_channels(8, 16)
    block = video_resnet.BasicBlock(16, 2, factory.FLOAT, mids=(mid, mid))
    compare_with_torch(self, block, ref.TvBlock(8, 16, 2, True), _inputs((2, 5, 7, 7, 8)),
                       rtol=1e-4, atol=1e-4)

  def test_r2plus1d_dsm_block(self):
    mc = video_resnet.mid_channels
    block = video_resnet.BasicBlock(16, 2, factory.FLOAT, mids=(mc(8, 16), mc(16, 16)),
                                    down_mid=mc(8, 16, 1, 1))
    compare_with_torch(self, block, ref.DsmR2p1Block(8, 16, 2), _inputs((2, 5, 7, 7, 8)),
                       rtol=1e-4, atol=1e-4)

  def test_i3d_mixed_block(self):
    widths = (4, 3, 5, 2, 3, 4)
    compare_with_torch(self, video_i3d.Mixed(widths, factory.FLOAT), ref.Mixed(8, widths),
                       _inputs((2, 3, 5, 6, 8)), rtol=1e-4, atol=1e-4)

  @parameterized.parameters(((5, 9, 9), (1, 3, 3), (1, 2, 2)), ((5, 7, 8), (3, 3, 3), (2, 2, 2)),
                            ((3, 7, 7), (2, 2, 2), (2, 2, 2)), ((4, 6, 6), (3, 3, 3), (1, 1, 1)))
  def test_tf_max_pool(self, size, window, strides):
    # Zero padding then ceil mode: odd sizes make the extra window reach past the padding.
    x = _inputs((2, *size, 3))
    want = ref.tf_max_pool(to_torch(x), window, strides)
    np.testing.assert_array_equal(video_i3d.tf_max_pool(x, window, strides), from_torch(want))

  def test_r3d_18_whole_network(self):
    # DSM's R3D-18 with its `cp` head built for 32x32 clips, in float64: eval mode agrees to
    # rounding. Train mode agrees to 1e-4 only because batch norm reduces its statistics in
    # float32 (flax's force_float32_reductions) and E[x^2] - E[x]^2 over layer4's four
    # positions per channel cancels.
    x = _inputs((4, 8, 32, 32, 3), dtype=np.float64)
    with jax.enable_x64(True):
      model = video_resnet.r3d_18(num_classes=5)
      tmodel = ref.R3DHara(num_classes=5, sample_size=32)
      compare_with_torch(self, model, tmodel, x, rtol=1e-9, atol=1e-9, train_tol=1e-4,
                         name="r3d_18", post=jax.nn.log_softmax, features=True)


class Conv3dTest(parameterized.TestCase):
  """`factory.FLOAT.conv` (jaxcompress.ops.conv) on 3-D clips against lax and a NumPy loop."""

  # Every kernel shape of the backbones, both dtypes, jitted; eager calls where they are cheap
  # (an eager 7x7x7 stride-2 gradient compiles its col2im op by op: about a minute).
  @parameterized.parameters(
      ((3, 3, 3), (1, 1, 1), ((1, 1),) * 3, "float32", True),
      ((3, 3, 3), (1, 1, 1), ((1, 1),) * 3, "float64", False),
      ((7, 7, 7), (2, 2, 2), ((2, 3),) * 3, "float32", True),
      ((7, 7, 7), (2, 2, 2), ((2, 3),) * 3, "float64", True),
      ((1, 3, 3), (1, 2, 2), ((0, 0), (1, 1), (1, 1)), "float32", True),
      ((3, 1, 1), (2, 1, 1), ((1, 1), (0, 0), (0, 0)), "float64", True),
      ((1, 1, 1), (2, 2, 2), ((0, 0),) * 3, "float32", False),
      ((3, 3, 3), (2, 2, 2), ((1, 1),) * 3, "float32", True))
  def test_values_and_gradients_equal_lax(self, kernel, strides, padding, dtype, jit):
    with jax.enable_x64(dtype == "float64"):
      rng = np.random.RandomState(0)
      x = jnp.asarray(rng.standard_normal((2, 9, 10, 11, 4)), dtype)
      w = jnp.asarray(rng.standard_normal((*kernel, 4, 6)) / math.sqrt(4 * math.prod(kernel)),
                      dtype)
      conv = factory.FLOAT.conv(6, kernel, strides=strides, padding=padding, use_bias=False)

      def ours(x, w):
        return conv.apply({"params": {"kernel": w}}, x)

      def lax_conv(x, w):
        return jax.lax.conv_general_dilated(x, w, strides, padding,
                                            dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
      y_ref = lax_conv(x, w)
      g = jnp.asarray(rng.standard_normal(y_ref.shape), dtype)

      def grads(f):
        return jax.grad(lambda x, w: jnp.sum(f(x, w) * g), argnums=(0, 1))
      f_ours, g_ours = (jax.jit(ours), jax.jit(grads(ours))) if jit else (ours, grads(ours))
      y = f_ours(x, w)
      self.assertEqual(y.dtype, jnp.dtype(dtype))
      tol = 1e-5 if dtype == "float32" else 1e-12
      np.testing.assert_allclose(y, y_ref, rtol=tol, atol=tol)
      for got, want in zip(g_ours(x, w), grads(lax_conv)(x, w)):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 10)

  def test_equals_numpy_loop(self):
    rng = np.random.RandomState(1)
    x, w = rng.standard_normal((1, 4, 5, 5, 2)), rng.standard_normal((3, 2, 3, 2, 3))
    strides, pads = (1, 2, 1), ((1, 1), (0, 1), (1, 1))
    xp = np.pad(x, ((0, 0), *pads, (0, 0)))
    out_sp = [(xp.shape[1 + i] - w.shape[i]) // strides[i] + 1 for i in range(3)]
    want = np.zeros((1, *out_sp, 3))
    for t in range(out_sp[0]):
      for h in range(out_sp[1]):
        for c in range(out_sp[2]):
          patch = xp[0, t * strides[0]:t * strides[0] + 3, h * strides[1]:h * strides[1] + 2,
                     c * strides[2]:c * strides[2] + 3]
          want[0, t, h, c] = np.einsum("thwi,thwio->o", patch, w)
    with jax.enable_x64(True):
      conv = factory.FLOAT.conv(3, (3, 2, 3), strides=strides, padding=pads, use_bias=False)
      got = conv.apply({"params": {"kernel": jnp.asarray(w)}}, jnp.asarray(x))
      np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


class InitTest(absltest.TestCase):

  def test_dsm_and_torchvision_initialisers(self):
    x = jnp.zeros((1, 3, 3, 3, 64))
    for init in ("dsm", "torchvision"):
      unit = vl.Unit3D(64, (3, 3, 3), factory.FLOAT, padding=1, weight_init=init)
      p = jax.jit(unit.init)(jax.random.key(0), x)["params"]
      k, scale = np.asarray(p["conv"]["kernel"]), np.asarray(p["bn"]["scale"])
      fan = 27 * 64
      if init == "dsm":  # Xavier-uniform gain sqrt(2): bound sqrt(2) * sqrt(6 / (2 fan))
        bound = math.sqrt(2) * math.sqrt(6 / (2 * fan))
        self.assertLessEqual(np.abs(k).max(), bound)
        self.assertAlmostEqual(k.std() / (bound / math.sqrt(3)), 1, delta=0.03)
        self.assertAlmostEqual(scale.mean(), 1, delta=0.01)
        self.assertAlmostEqual(scale.std(), 0.02, delta=0.006)
      else:  # Kaiming fan_out
        self.assertAlmostEqual(k.std() / math.sqrt(2 / fan), 1, delta=0.05)
        np.testing.assert_array_equal(scale, 1)


class RegistryTest(parameterized.TestCase):

  @parameterized.parameters(*sorted(OFFICIAL))
  def test_built_by_name(self, name):
    model = models.build(name, layers="float", num_classes=3)
    self.assertEqual(model.num_classes, 3)
    self.assertIn(name, models.names())


@pytest.mark.slow
class SlowTest(parameterized.TestCase):

  @parameterized.parameters(*sorted(OFFICIAL))
  def test_full_size_forward(self, name):
    model = models.build(name, num_classes=101)
    rng = np.random.RandomState(0)
    variables = jax.tree_util.tree_map(
        lambda s: jnp.asarray(0.05 * rng.standard_normal(s.shape) + (1 if len(s.shape) == 1
                                                                      else 0), s.dtype),
        abstract_init(model, CLIP))
    logits, state = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
        variables, jnp.asarray(_inputs(CLIP)))
    self.assertEqual(logits.shape, (2, 101))
    self.assertTrue(np.all(np.isfinite(logits)))

  @needs_torch
  def test_i3d_whole_network_at_112(self):
    compare_with_torch(self, video_i3d.i3d(num_classes=5), ref.I3D(5),
                       _inputs((2, 16, 112, 112, 3)), rtol=2e-3, atol=2e-3,
                       post=jax.nn.log_softmax, features=True)


if __name__ == "__main__":
  absltest.main()
