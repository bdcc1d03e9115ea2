"""Tests for jaxcompress.models.resnet_imagenet: shapes, parameter counts, Bi-Real options."""
from __future__ import annotations

import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

# `jaxcompress.summary` is the function (contract); the module is reached by its dotted name.
summary_lib = importlib.import_module("jaxcompress.summary")
from jaxcompress.models import factory, resnet_imagenet


class OneBitConv(nn.Conv):
  weight_bits = 1
  input_bits = 1


def n_params(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def abstract_init(model: nn.Module, shape, **kwargs):
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  return jax.eval_shape(lambda v: model.init(jax.random.key(0), v, **kwargs), x)


def random_variables(model: nn.Module, shape, **kwargs):
  """Concrete variables from NumPy in the shapes of `model.init`.

  Eager `model.init` compiles one random-number kernel per parameter shape (~20 s on a loaded
  CPU); tests of shapes and data flow do not need the library's initialisers.
  """
  rng = np.random.RandomState(0)
  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if "var" in name:
      return jnp.ones(leaf.shape, leaf.dtype)
    if "mean" in name:
      return jnp.zeros(leaf.shape, leaf.dtype)
    return jnp.asarray(0.1 * rng.standard_normal(leaf.shape), leaf.dtype)
  return jax.tree_util.tree_map_with_path(fill, abstract_init(model, shape, **kwargs))


class ResNetImageNetTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("resnet18", resnet_imagenet.ResNet18, 11_689_512),   # torchvision counts
      ("resnet34", resnet_imagenet.ResNet34, 21_797_672))
  def test_param_count_and_logits(self, ctor, expected):
    model = ctor(num_classes=1000)
    variables = abstract_init(model, (2, 224, 224, 3), train=False)
    self.assertEqual(n_params(variables["params"]), expected)
    out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables,
                         jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32))
    self.assertEqual(out.shape, (2, 1000))

  def test_rbnn_variant_params(self):
    # Bi-Real blocks have the same layers; the BatchNorm1d before the classifier adds 2 * 512.
    model = resnet_imagenet.ResNet18(bireal=True, bn_before_classifier=True)
    variables = abstract_init(model, (1, 224, 224, 3), train=False)
    self.assertEqual(n_params(variables["params"]), 11_689_512 + 1024)

  def test_bireal_downsample_stays_float(self):
    layers = factory.FLOAT.replace(conv=OneBitConv, act=nn.hard_tanh)
    x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    bireal = summary_lib.summary(resnet_imagenet.ResNet18(layers=layers, bireal=True), x)
    plain = summary_lib.summary(resnet_imagenet.ResNet18(layers=layers), x)
    rows = {l.path: l for l in bireal.layers}
    self.assertEqual(rows["stage2_block0/downsample/conv"].weight_bits, 32)
    self.assertEqual(rows["stage2_block0/conv1"].weight_bits, 1)
    self.assertEqual(rows["stem"].weight_bits, 32)
    # Plain ResNet binarises the downsample too: 3 x 6.42 M more binary MACs.
    self.assertEqual(plain.binary_macs - bireal.binary_macs, 3 * 28 * 28 * 128 * 64)
    self.assertEqual(bireal.float_macs, 112 * 112 * 64 * 147 + 3 * 28 * 28 * 128 * 64 + 512_000)

  @parameterized.parameters(False, True)
  def test_small_forward(self, bireal):
    # One block per stage keeps the compile short; every code path (downsample, both shortcuts)
    # is still exercised.
    model = resnet_imagenet.ResNet(num_classes=5, stage_sizes=(1, 1, 1, 1), bireal=bireal,
                                   avg_down=bireal)
    x = jnp.asarray(np.random.RandomState(0).randn(2, 32, 32, 3), jnp.float32)
    variables = random_variables(model, x.shape, train=False)
    out, state = model.apply(variables, x, train=True, mutable=["batch_stats"])
    self.assertEqual(out.shape, (2, 5))
    self.assertTrue(np.all(np.isfinite(out)))
    self.assertIn("batch_stats", state)

  def test_avg_down_odd_sizes_match_strided_conv(self):
    # 200 -> stem 100 -> pool 50 -> 25 -> 13: only a ceil-mode pool matches the 3x3 stride-2 conv.
    model = resnet_imagenet.ResNet18(bireal=True, avg_down=True)
    variables = abstract_init(model, (1, 200, 200, 3), train=False)
    self.assertEqual(variables["params"]["stage4_block0"]["downsample"]["conv"]["kernel"].shape,
                     (1, 1, 256, 512))

  def test_avg_down_ignores_padding(self):
    ds = resnet_imagenet.Downsample(1, 2, factory.FLOAT, avg_down=True)
    x = jnp.arange(9.0).reshape(1, 3, 3, 1)
    variables = ds.init(jax.random.key(0), x, train=False)
    params = jax.tree_util.tree_map(jnp.ones_like, variables["params"])
    params["bn"]["bias"] = jnp.zeros_like(params["bn"]["bias"])
    out = ds.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, train=False)
    # ceil mode: 2x2 output; the corner window holds only x[2, 2] = 8 (count_include_pad=False).
    expected = np.array([[(0 + 1 + 3 + 4) / 4, (2 + 5) / 2], [(6 + 7) / 2, 8.0]])
    expected /= np.sqrt(1 + 1e-5)  # batch norm with mean 0, variance 1
    np.testing.assert_allclose(out[0, :, :, 0], expected, rtol=1e-5)


if __name__ == "__main__":
  absltest.main()
