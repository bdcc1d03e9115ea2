"""Tests for jaxcompress.models.cyclegan: shapes, parameter counts, PyTorch layer semantics."""
from __future__ import annotations

import dataclasses
import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

# `jaxcompress.summary` is the function (contract); the module is reached by its dotted name.
summary_lib = importlib.import_module("jaxcompress.summary")
from jaxcompress.models import cyclegan, factory


def n_params(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def abstract(model: nn.Module, shape):
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  return variables, jax.eval_shape(model.apply, variables, x)


class CycleGanTest(parameterized.TestCase):

  def test_generator_shape_and_params(self):
    variables, out = abstract(cyclegan.ResnetGenerator(), (1, 256, 256, 3))
    self.assertEqual(out.shape, (1, 256, 256, 3))
    # pytorch-CycleGAN-and-pix2pix resnet_9blocks, ngf 64, instance norm: 11,378,179.
    self.assertEqual(n_params(variables["params"]), 11_378_179)
    self.assertEqual(set(variables), {"params"})  # instance norm keeps no running statistics

  def test_discriminator_shape_and_params(self):
    variables, out = abstract(cyclegan.NLayerDiscriminator(), (2, 256, 256, 3))
    self.assertEqual(out.shape, (2, 30, 30, 1))   # 70x70 PatchGAN logits
    self.assertEqual(n_params(variables["params"]), 2_764_737)

  def test_discriminator_defaults_to_instance_norm(self):
    model = cyclegan.NLayerDiscriminator(ndf=4)
    self.assertEqual(model.norm, "instance")
    self.assertEqual(model.layer_widths(), {"conv0": 4, "conv1": 8, "conv2": 16, "conv3": 32})
    variables, _ = abstract(model, (1, 32, 32, 3))
    self.assertEqual(set(variables), {"params"})   # no running statistics
    params = variables["params"]
    self.assertEqual({k for k, p in params.items() if "bias" in p},
                     {"conv0", "conv1", "conv2", "conv3", "head"})   # instance norm: every bias

  @parameterized.parameters((5,), (8,))
  def test_upsample_is_pytorch_conv_transpose(self, size):
    # PyTorch's ConvTranspose2d(k3, s2, p1, output_padding=1) is the input-gradient of
    # Conv2d(k3, s2, p1) applied to a (2 * size)-pixel image, with the same weight.
    rng = np.random.RandomState(0)
    x = jnp.asarray(rng.randn(1, size, size, 3), jnp.float32)
    up = cyclegan.upsample_conv(factory.FLOAT, 2)
    params = up.init(jax.random.key(0), x)["params"]
    kernel = params["kernel"]                                # (3, 3, out=2, in=3)
    self.assertEqual(kernel.shape, (3, 3, 2, 3))
    def conv(z):
      return jax.lax.conv_general_dilated(z, kernel, (2, 2), ((1, 1), (1, 1)),
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"))
    z = jnp.zeros((1, 2 * size, 2 * size, 2), jnp.float32)
    _, vjp = jax.vjp(conv, z)
    expected = vjp(x)[0] + params["bias"]
    got = up.apply({"params": params}, x)
    self.assertEqual(got.shape, (1, 2 * size, 2 * size, 2))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

  def test_reflect_pad_matches_pytorch(self):
    x = jnp.arange(3.0).reshape(1, 1, 3, 1)
    np.testing.assert_array_equal(cyclegan.reflect_pad(x, 1)[0, 1, :, 0], [1, 0, 1, 2, 1])

  def test_small_generator_forward(self):
    model = cyclegan.ResnetGenerator(ngf=4, n_blocks=1)
    x = jnp.asarray(np.random.RandomState(1).randn(1, 16, 16, 3), jnp.float32)
    # Parameters from NumPy: eager `init` compiles one RNG kernel per shape (slow on a busy CPU).
    variables, _ = abstract(model, x.shape)
    rng = np.random.RandomState(0)
    variables = jax.tree_util.tree_map(
        lambda l: jnp.asarray(0.2 * rng.standard_normal(l.shape), l.dtype), variables)
    out = model.apply(variables, x)
    self.assertEqual(out.shape, (1, 16, 16, 3))
    self.assertTrue(np.all(np.abs(out) <= 1.0))
    self.assertGreater(float(jnp.std(out)), 0.0)

  def test_factory_fields_are_used_when_present(self):

    class MyTranspose(nn.ConvTranspose):
      weight_bits = 8
      input_bits = 8

    class MyLast(nn.Conv):
      weight_bits = 8
      input_bits = 8

    @dataclasses.dataclass(frozen=True)
    class ExtendedLayers(factory.Layers):
      conv_transpose: factory.ModuleFactory = MyTranspose
      last_conv: factory.ModuleFactory = MyLast

    model = cyclegan.ResnetGenerator(ngf=4, n_blocks=1, layers=ExtendedLayers())
    s = summary_lib.summary(model, jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
    rows = {l.path: l.type for l in s.layers}
    self.assertEqual((rows["up1"], rows["up2"], rows["head"]),
                     ("MyTranspose", "MyTranspose", "MyLast"))
    self.assertGreater(s.lowbit_macs, 0)


if __name__ == "__main__":
  absltest.main()
