"""Tests for jaxcompress.models.mobile_gan against a PyTorch transcription of the official model.

`TorchMobileResnetGenerator` transcribes mit-han-lab/gan-compression
`models/modules/resnet_architecture/mobile_resnet_generator.py` (with `SeparableConv2d` from
`models/modules/mobile_modules.py`) at its defaults: instance norm without affine parameters,
so every conv has a bias, reflection padding, dropout rate 0.
"""
from __future__ import annotations

import importlib

import flax
import jax
import jax.numpy as jnp
import numpy as np
import torch
from absl.testing import absltest
from torch import nn

from jaxcompress import models
from jaxcompress.errors import ConfigError
from jaxcompress.models import cyclegan, factory, mobile_gan

# `jaxcompress.summary` is the function (contract); the module is reached by its dotted name.
summary_lib = importlib.import_module("jaxcompress.summary")

GATED = factory.FLOAT.replace(gate=factory.ChannelGate)


class TorchSeparableConv(nn.Module):

  def __init__(self, c_in, c_out):
    super().__init__()
    self.conv = nn.Sequential(nn.Conv2d(c_in, c_in, 3, groups=c_in), nn.InstanceNorm2d(c_in),
                              nn.Conv2d(c_in, c_out, 1))

  def forward(self, x):
    return self.conv(x)


class TorchMobileBlock(nn.Module):

  def __init__(self, dim):
    super().__init__()
    self.conv_block = nn.Sequential(
        nn.ReflectionPad2d(1), TorchSeparableConv(dim, dim), nn.InstanceNorm2d(dim), nn.ReLU(True),
        nn.Dropout(0.0),
        nn.ReflectionPad2d(1), TorchSeparableConv(dim, dim), nn.InstanceNorm2d(dim))

  def forward(self, x):
    return x + self.conv_block(x)


def torch_mobile_generator(ngf, n_blocks=9):
  layers = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7), nn.InstanceNorm2d(ngf), nn.ReLU(True)]
  for mult in (1, 2):
    layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, 2, 1), nn.InstanceNorm2d(ngf * mult * 2),
               nn.ReLU(True)]
  layers += [TorchMobileBlock(4 * ngf) for _ in range(n_blocks)]
  for mult in (4, 2):
    layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, 2, 1, output_padding=1),
               nn.InstanceNorm2d(ngf * mult // 2), nn.ReLU(True)]
  layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
  return nn.Sequential(*layers)


def jax_conv_paths(n_blocks):
  """The JAX model's convs in the order PyTorch's `modules()` visits the official ones."""
  paths = [("stem",), ("down1",), ("down2",)]
  for b in range(n_blocks):
    for conv in ("conv1", "conv2"):
      paths += [(f"block{b}", conv, "depthwise"), (f"block{b}", conv, "pointwise")]
  return paths + [("up1",), ("up2",), ("head",)]


def n_params(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def random_params(model, x, seed=0):
  """Kernels ~ N(0, 1/fan_in), biases ~ N(0, 0.1^2), gate masks 1 (NumPy: no compiled init)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  rng = np.random.RandomState(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      value = rng.randn(*leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))
    elif name == "mask":
      value = np.ones(leaf.shape)
    else:
      value = 0.1 * rng.randn(*leaf.shape)
    return jnp.asarray(value, leaf.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def mobile_macs(ngf, n_blocks, size):
  """MACs at output resolution (thop's count) from the architecture alone."""
  c, r = 4 * ngf, size // 4
  return (size**2 * ngf * 3 * 49 + (size // 2) ** 2 * 2 * ngf * ngf * 9
          + r**2 * c * 2 * ngf * 9 + n_blocks * 2 * (r**2 * c * 9 + r**2 * c * c)
          + (size // 2) ** 2 * 2 * ngf * c * 9 + size**2 * ngf * 2 * ngf * 9
          + size**2 * 3 * ngf * 49)


def images(shape, seed=0):
  return jnp.asarray(np.random.RandomState(seed).uniform(-1, 1, shape), jnp.float32)


class MobileResnetGeneratorTest(absltest.TestCase):

  def test_sizes_match_the_official_model(self):
    x = jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32)
    for ngf in (32, 48):   # DMAD's CycleGAN* and Pix2Pix*
      model = mobile_gan.MobileResnetGenerator(ngf=ngf)
      s = summary_lib.summary(model, x, mac_convention="gan")
      self.assertEqual(s.total_params,
                       sum(p.numel() for p in torch_mobile_generator(ngf).parameters()))
      self.assertEqual(s.total_macs, mobile_macs(ngf, 9, 256))
    self.assertEqual(s.total_params, 1_130_883)
    small = mobile_gan.MobileResnetGenerator(ngf=32)
    s = summary_lib.summary(small, x, mac_convention="gan")
    # 0.51 M parameters and 4.93 G MACs before pruning; DMAD's pruned CycleGAN*: 0.28 M, 2.41 G.
    self.assertEqual(s.total_params, 514_307)
    self.assertAlmostEqual(s.total_macs / 1e9, 4.93, places=2)

  def test_matches_pytorch(self):
    n_blocks = 3
    model = mobile_gan.MobileResnetGenerator(ngf=4, n_blocks=n_blocks, layers=GATED)
    plain = mobile_gan.MobileResnetGenerator(ngf=4, n_blocks=n_blocks)
    x = images((2, 32, 32, 3))
    v = random_params(model, x)
    params = v["params"]
    strip = {k: p for k, p in params.items() if not k.endswith("_gate")}
    strip = {k: ({n: q for n, q in p.items() if not n.startswith("gate")}
                 if k.startswith("block") else p) for k, p in strip.items()}
    y_gated, y_plain = jax.jit(lambda v, vp, x: (model.apply(v, x), plain.apply(vp, x)))(
        v, {"params": strip}, x)
    net = torch_mobile_generator(4, n_blocks)
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    paths = jax_conv_paths(n_blocks)
    self.assertLen(convs, len(paths))
    for conv, path in zip(convs, paths):
      p = params
      for key in path:
        p = p[key]
      # Conv HWIO -> OIHW; transposed (kh, kw, out, in) -> PyTorch's (in, out, kh, kw).
      kernel = np.asarray(p["kernel"]).transpose(3, 2, 0, 1)
      self.assertEqual(tuple(conv.weight.shape), kernel.shape, path)
      conv.weight.data.copy_(torch.from_numpy(kernel.copy()))
      conv.bias.data.copy_(torch.from_numpy(np.asarray(p["bias"]).copy()))
    with torch.no_grad():
      ref = net(torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy()))
    ref = ref.numpy().transpose(0, 2, 3, 1)
    self.assertEqual(y_gated.shape, (2, 32, 32, 3))
    self.assertGreater(float(np.std(ref)), 0.05)
    np.testing.assert_allclose(y_plain, ref, rtol=1e-5, atol=1e-5)
    # Gates of ones keep the function.
    np.testing.assert_allclose(y_gated, ref, rtol=1e-5, atol=1e-5)

  def test_gates_widths_and_taps(self):
    model = mobile_gan.MobileResnetGenerator(ngf=4, n_blocks=2, layers=GATED)
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    v = jax.eval_shape(model.init, jax.random.key(0), x)
    masks = {"/".join(k[:-1]): m.shape
             for k, m in flax.traverse_util.flatten_dict(v["params"]).items() if k[-1] == "mask"}
    # DMAD's mask places; none inside a separable conv.
    self.assertEqual(masks, {"stem_gate": (4,), "down1_gate": (8,), "down2_gate": (16,),
                             "block0/gate1": (16,), "block0/gate2": (16,),
                             "block1/gate1": (16,), "block1/gate2": (16,),
                             "up1_gate": (8,), "up2_gate": (4,)})
    widths = {"stem": 3, "down2": 6, "block1/conv1": 2, "up1": 5}
    narrow = mobile_gan.MobileResnetGenerator(ngf=4, n_blocks=2, widths=widths)
    p = jax.eval_shape(narrow.init, jax.random.key(0), x)["params"]
    shapes = {"/".join(k): s.shape for k, s in flax.traverse_util.flatten_dict(p).items()}
    # The width roles of cyclegan.ResnetGenerator.
    self.assertEqual(set(narrow.layer_widths()),
                     set(cyclegan.ResnetGenerator(n_blocks=2).layer_widths()))
    self.assertEqual(narrow.layer_widths(), {"stem": 3, "down1": 8, "down2": 6, "block0/conv1": 6,
                                             "block1/conv1": 2, "up1": 5, "up2": 4})
    self.assertEqual(shapes["stem/kernel"], (7, 7, 3, 3))
    self.assertEqual(shapes["down2/kernel"], (3, 3, 8, 6))
    self.assertEqual(shapes["block0/conv1/depthwise/kernel"], (3, 3, 1, 6))
    self.assertEqual(shapes["block1/conv1/pointwise/kernel"], (1, 1, 6, 2))
    self.assertEqual(shapes["block1/conv2/depthwise/kernel"], (3, 3, 1, 2))
    self.assertEqual(shapes["block1/conv2/pointwise/kernel"], (1, 1, 2, 6))
    self.assertEqual(shapes["up1/kernel"], (3, 3, 5, 6))     # transposed: (kh, kw, out, in)
    self.assertEqual(shapes["up2/kernel"], (3, 3, 4, 5))
    with self.assertRaisesRegex(ConfigError, "unknown layer role 'block2/conv1'"):
      narrow.clone(widths={"block2/conv1": 3}).layer_widths()
    # Taps: the roles of cyclegan.ResnetGenerator, at the same places.
    xs = images((1, 32, 32, 3))
    vs = random_params(narrow, xs)
    _, state = jax.jit(lambda v, x: narrow.apply(v, x, mutable=[factory.TAPS]))(vs, xs)
    taps = factory.taps(state)
    self.assertEqual({r: t.shape for r, t in taps.items()},
                     {"down1": (1, 16, 16, 8), "down2": (1, 8, 8, 6), "res1": (1, 8, 8, 6),
                      "res2": (1, 8, 8, 6), "up1": (1, 16, 16, 5), "up2": (1, 32, 32, 4)})
    self.assertGreaterEqual(float(taps["down2"].min()), 0.0)   # after the ReLU
    block = mobile_gan.MobileResnetBlock(6, factory.FLOAT, inner=2)
    res2 = jax.jit(block.apply)({"params": vs["params"]["block1"]}, taps["res1"])
    np.testing.assert_allclose(taps["res2"], res2, rtol=1e-5, atol=1e-5)

  def test_registry(self):
    g = models.build("mobile_resnet_generator", ngf=32)
    self.assertIsInstance(g, mobile_gan.MobileResnetGenerator)
    self.assertEqual(g.ngf, 32)


if __name__ == "__main__":
  absltest.main()
