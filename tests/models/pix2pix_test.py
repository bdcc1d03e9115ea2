"""Tests for jaxcompress.models.pix2pix (U-Net generator) and the batch-norm PatchGAN.

The PyTorch models below are compact transcriptions of pytorch-CycleGAN-and-pix2pix
`models/networks.py` (`UnetSkipConnectionBlock` with its in-place LeakyReLU, and
`NLayerDiscriminator` with batch norm); the JAX models get random weights and running
statistics, the same values go into the PyTorch models, and the outputs must agree.
"""
from __future__ import annotations

import functools
import importlib

import flax
import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F
from absl.testing import absltest
from torch import nn

from jaxcompress import models
from jaxcompress.errors import ConfigError
from jaxcompress.models import cyclegan, factory, pix2pix

# `jaxcompress.summary` is the function (contract); the module is reached by its dotted name.
summary_lib = importlib.import_module("jaxcompress.summary")

GATED = factory.FLOAT.replace(gate=factory.ChannelGate)


# ---- PyTorch transcriptions of the official networks ------------------------------------------

class TorchUnetBlock(nn.Module):
  """One level of the official U-Net: [LeakyReLU] down conv [BN] (inner) ReLU up conv BN|tanh."""

  def __init__(self, outer, inner, input_nc=None, submodule=None, outermost=False,
               innermost=False, use_dropout=False):
    super().__init__()
    self.outermost = outermost
    bn_down = not (outermost or innermost)
    self.down = nn.Conv2d(outer if input_nc is None else input_nc, inner, 4, 2, 1, bias=False)
    self.down_norm = nn.BatchNorm2d(inner) if bn_down else None
    self.submodule = submodule
    self.up = nn.ConvTranspose2d(inner if innermost else 2 * inner, outer, 4, 2, 1,
                                 bias=outermost)
    self.up_norm = None if outermost else nn.BatchNorm2d(outer)
    self.dropout = nn.Dropout(0.5) if use_dropout else None

  def forward(self, x):
    # As the official block: the in-place LeakyReLU also rewrites the x concatenated below.
    h = x if self.outermost else F.leaky_relu(x, 0.2, inplace=True)
    h = self.down(h)
    if self.down_norm is not None:
      h = self.down_norm(h)
    if self.submodule is not None:
      h = self.submodule(h)
    h = self.up(F.relu(h))
    if self.outermost:
      return torch.tanh(h)
    h = self.up_norm(h)
    if self.dropout is not None:
      h = self.dropout(h)
    return torch.cat([x, h], 1)


def torch_unet(ngf, num_downs=8, use_dropout=False):
  block = TorchUnetBlock(ngf * 8, ngf * 8, innermost=True)
  for _ in range(num_downs - 5):
    block = TorchUnetBlock(ngf * 8, ngf * 8, submodule=block, use_dropout=use_dropout)
  for mult in (4, 2, 1):
    block = TorchUnetBlock(ngf * mult, ngf * mult * 2, submodule=block)
  return TorchUnetBlock(3, ngf, input_nc=3, submodule=block, outermost=True)


def torch_patchgan(input_nc, ndf, n_layers=3):
  """The official NLayerDiscriminator with norm_layer = BatchNorm2d (so no bias before it)."""
  layers = [nn.Conv2d(input_nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
  mult = 1
  for n in range(1, n_layers + 1):
    prev, mult = mult, min(2**n, 8)
    layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 2 if n < n_layers else 1, 1, bias=False),
               nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
  layers += [nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
  return nn.Sequential(*layers)


def torch_params(module) -> int:
  return sum(p.numel() for p in module.parameters())


# ---- helpers ----------------------------------------------------------------------------------

def n_params(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def random_variables(model, x, seed=0):
  """`model`'s variables from NumPy (compiled random init is the slow part on CPU).

  Kernels ~ N(0, 1/fan_in) (a U-Net's transposed convs "up*"/"head": 4 input pixels per
  output), norm scales ~ 1 + N(0, 0.1^2), gate masks 1, variances in [0.5, 1.5], the rest
  (biases, running means) ~ N(0, 0.1^2).
  """
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  rng = np.random.RandomState(seed)
  unet = isinstance(model, pix2pix.UnetGenerator)

  def fill(path, leaf):
    module, name = path[-2].key, path[-1].key
    if name == "kernel":
      transposed = unet and (module.startswith("up") or module == "head")
      fan_in = 4 * leaf.shape[-1] if transposed else int(np.prod(leaf.shape[:-1]))
      value = rng.randn(*leaf.shape) / np.sqrt(fan_in)
    elif name == "var":
      value = rng.uniform(0.5, 1.5, leaf.shape)
    elif name == "scale":
      value = 1.0 + 0.1 * rng.randn(*leaf.shape)
    elif name == "mask":
      value = np.ones(leaf.shape)
    else:
      value = 0.1 * rng.randn(*leaf.shape)
    return jnp.asarray(value, leaf.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def strip_gates(params):
  if not isinstance(params, dict):
    return params
  return {k: strip_gates(v) for k, v in params.items()
          if not (isinstance(v, dict) and set(v) == {"mask"})}


def to_torch_kernel(kernel) -> torch.Tensor:
  # Conv HWIO -> OIHW; transposed-conv (kh, kw, out, in) -> PyTorch's (in, out, kh, kw).
  return torch.from_numpy(np.ascontiguousarray(np.asarray(kernel).transpose(3, 2, 0, 1)))


def load_conv(module, params):
  module.weight.data.copy_(to_torch_kernel(params["kernel"]))
  if "bias" in params:
    module.bias.data.copy_(torch.from_numpy(np.array(params["bias"])))
  else:
    assert module.bias is None


def load_bn(module, params, stats):
  module.weight.data.copy_(torch.from_numpy(np.array(params["scale"])))
  module.bias.data.copy_(torch.from_numpy(np.array(params["bias"])))
  module.running_mean.copy_(torch.from_numpy(np.array(stats["mean"])))
  module.running_var.copy_(torch.from_numpy(np.array(stats["var"])))


def load_unet(net, variables, num_downs):
  """Copies the JAX U-Net's variables into `torch_unet`: level L holds down{L}, up{n-L+1}."""
  p, s = variables["params"], variables["batch_stats"]
  block, level = net, 1
  while block is not None:
    down, up = f"down{level}", ("head" if level == 1 else f"up{num_downs - level + 1}")
    load_conv(block.down, p[down])
    load_conv(block.up, p[up])
    if block.down_norm is not None:
      load_bn(block.down_norm, p[f"{down}_norm"], s[f"{down}_norm"])
    if block.up_norm is not None:
      load_bn(block.up_norm, p[f"{up}_norm"], s[f"{up}_norm"])
    block, level = block.submodule, level + 1
  assert level == num_downs + 1


def nchw(x) -> torch.Tensor:
  return torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())


def nhwc(t: torch.Tensor) -> np.ndarray:
  return t.detach().numpy().transpose(0, 2, 3, 1)


def images(shape, seed=0):
  return jnp.asarray(np.random.RandomState(seed).uniform(-1, 1, shape), jnp.float32)


def unet_macs(widths, n, size, out=3, inp=3):
  """MACs of a U-Net at output resolution (thop's count), from the architecture alone."""
  w = [inp] + [widths[f"down{k}"] for k in range(1, n + 1)]
  u = [None] + [widths[f"up{k}"] for k in range(1, n)] + [out]
  macs = sum((size // 2**k) ** 2 * w[k] * w[k - 1] * 16 for k in range(1, n + 1))
  for k in range(1, n + 1):   # decoder layer k (k = n: the head) reads [skip, previous]
    c_in = w[n] if k == 1 else w[n - k + 1] + u[k - 1]
    macs += (size // 2 ** (n - k)) ** 2 * u[k] * c_in * 16
  return macs


# One U-Net (ngf 4, unet_256) and one compiled function per use, shared by the tests below:
# compiling the 256x256 U-Net is most of their time on CPU.
@functools.lru_cache(maxsize=None)
def unet_model(kind: str) -> pix2pix.UnetGenerator:
  return {"plain": pix2pix.UnetGenerator(ngf=4),
          "no_dropout": pix2pix.UnetGenerator(ngf=4, use_dropout=False),
          "gated": pix2pix.UnetGenerator(ngf=4, layers=GATED)}[kind]


@functools.lru_cache(maxsize=None)
def unet_inputs(gated: bool = False):
  """Images and variables; the plain variables are the gated ones without their masks."""
  x = images((2, 256, 256, 3))
  v = random_variables(unet_model("gated"), x)
  return x, (v if gated else {**v, "params": strip_gates(v["params"])})


@functools.lru_cache(maxsize=None)
def unet_fn(kind: str):
  plain, gated = unet_model("plain"), unet_model("gated")
  return jax.jit({
      "eval": plain.apply,
      "train_no_dropout": lambda v, x: unet_model("no_dropout").apply(
          v, x, train=True, mutable=["batch_stats"]),
      "train": lambda v, x, key: plain.apply(v, x, train=True, rngs={"dropout": key},
                                             mutable=["batch_stats", factory.TAPS]),
      "gated_taps": lambda v, x: gated.apply(v, x, mutable=[factory.TAPS]),
  }[kind])


# ---- tests ------------------------------------------------------------------------------------

class UnetGeneratorTest(absltest.TestCase):

  def test_official_sizes(self):
    x = jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32)
    for ngf in (64, 48):
      model = pix2pix.UnetGenerator(ngf=ngf)
      v = jax.eval_shape(model.init, jax.random.key(0), x)
      # pytorch-CycleGAN-and-pix2pix unet_256 with batch norm; ngf 64: 54,413,955 ("54.4 M").
      self.assertEqual(n_params(v["params"]), torch_params(torch_unet(ngf)))
      s = summary_lib.summary(model, x, mac_convention="gan")
      self.assertEqual(s.total_params, n_params(v["params"]))
      self.assertEqual(s.total_macs, unet_macs(model.layer_widths(), 8, 256))
    self.assertEqual(s.total_params, 30_611_427)
    # ngf 64: DMAD quotes 54.4 M and 18.6 G. thop (0.0.31, 0.1.1) and torchprofile count
    # 18.14-18.15 G on the official PyTorch module, as here: the quoted MACs are 2.4% higher.
    model = pix2pix.UnetGenerator()
    s = summary_lib.summary(model, x, mac_convention="gan")
    self.assertEqual(s.total_params, 54_413_955)
    self.assertAlmostEqual(s.total_macs / 1e9, 18.6, delta=0.5)
    out = jax.eval_shape(model.apply, jax.eval_shape(model.init, jax.random.key(0), x), x)
    self.assertEqual(out.shape, (1, 256, 256, 3))

  def test_matches_pytorch_eval_and_train(self):
    x, v = unet_inputs()
    # Evaluation with dropout configured (inactive) and training without it, against PyTorch.
    y_eval = unet_fn("eval")(v, x)
    y_train, state = unet_fn("train_no_dropout")(v, x)
    net = torch_unet(4, 8, use_dropout=False)
    load_unet(net, v, 8)
    with torch.no_grad():
      ref_eval = nhwc(net.eval()(nchw(x)))
      ref_train = nhwc(net.train()(nchw(x)))
    self.assertEqual(y_eval.shape, (2, 256, 256, 3))
    self.assertGreater(float(np.std(ref_eval)), 0.05)   # not saturated: a real comparison
    np.testing.assert_allclose(y_eval, ref_eval, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y_train, ref_train, rtol=1e-5, atol=1e-5)
    # Training mode moved the running means toward the batch means (PyTorch's momentum 0.1).
    np.testing.assert_allclose(state["batch_stats"]["down3_norm"]["mean"],
                               net.submodule.submodule.down_norm.running_mean.numpy(),
                               rtol=1e-4, atol=1e-5)

  def test_dropout_follows_the_official_middle_blocks(self):
    self.assertEqual(unet_model("plain").dropout_roles(), ("up2", "up3", "up4"))
    self.assertEqual(pix2pix.UnetGenerator(num_downs=7).dropout_roles(), ("up2", "up3"))
    self.assertEqual(pix2pix.UnetGenerator(use_dropout=False).dropout_roles(), ())
    x, v = unet_inputs()
    # "rbg" keys: XLA's RngBitGenerator compiles in a fraction of threefry's time on CPU.
    run = unet_fn("train")
    (y1, s1), (y2, _) = (run(v, x, jax.random.key(1, impl="rbg")),
                         run(v, x, jax.random.key(2, impl="rbg")))
    taps = factory.taps(s1)
    for k in range(1, 8):
      pre, post = np.asarray(taps[f"up{k}_norm"]), np.asarray(taps[f"up{k}"])
      if k in (2, 3, 4):
        kept = post > 0
        np.testing.assert_allclose(post[kept], 2.0 * pre[kept], rtol=1e-6)   # 1 / (1 - 0.5)
        np.testing.assert_array_equal(post[pre <= 0], 0.0)
        dropped = np.mean(~kept[pre > 0])
        self.assertBetween(dropped, 0.3, 0.7)
      else:
        np.testing.assert_allclose(post, np.maximum(pre, 0.0), rtol=1e-6)
    self.assertGreater(float(jnp.abs(y1 - y2).max()), 1e-4)   # a new key, new masks

  def test_gates_and_taps(self):
    x, v_plain = unet_inputs()
    plain = unet_model("plain")
    v = unet_inputs(gated=True)[1]
    masks = {k[:-1]: m.shape for k, m in flax.traverse_util.flatten_dict(v["params"]).items()
             if k[-1] == "mask"}
    widths = plain.layer_widths()
    # DMAD's 15 masks: after every down conv (norm or not) and every decoder norm.
    self.assertEqual(masks, {(f"{r}_gate",): (w,) for r, w in widths.items()})
    # Apart from the masks, the gated model has the plain model's variables.
    self.assertEqual(jax.tree_util.tree_map(lambda a: a.shape, v_plain),
                     jax.tree_util.tree_map(lambda a: a.shape, jax.eval_shape(
                         plain.init, jax.random.key(0), x)))
    zero = jax.tree_util.tree_map_with_path(
        lambda p, a: a * 0 if p[-1].key == "mask" else a, v["params"])
    run_gated = unet_fn("gated_taps")
    (y_gated, state), (y_zero, zstate) = run_gated(v, x), run_gated({**v, "params": zero}, x)
    y_plain = unet_fn("eval")(v_plain, x)
    np.testing.assert_allclose(y_gated, y_plain, rtol=1e-5, atol=1e-5)
    self.assertGreater(float(jnp.abs(y_zero - y_plain).max()), 1e-3)
    taps = factory.taps(state)
    expected = {f"down{k}": (2, 256 >> k, 256 >> k, widths[f"down{k}"]) for k in range(1, 9)}
    for k in range(1, 8):
      expected[f"up{k}"] = expected[f"up{k}_norm"] = (2, 1 << k, 1 << k, widths[f"up{k}"])
    self.assertEqual({r: t.shape for r, t in taps.items()}, expected)
    # Encoder taps are activations: LeakyReLU keeps 0.2 of negatives; the innermost is ReLU'd.
    self.assertLess(float(taps["down3"].min()), 0.0)
    self.assertGreaterEqual(float(taps["down8"].min()), 0.0)
    # Every tap comes after a gate: with zero masks all are zero.
    for role, t in factory.taps(zstate).items():
      np.testing.assert_array_equal(t, 0.0, err_msg=role)
    # The gate sits between the batch norm and the LeakyReLU: a mask of -1 on down2 gives
    # leaky_relu(-bn(conv(down1))), not -leaky_relu(bn(...)).
    flip = {**v["params"], "down2_gate": {"mask": -jnp.ones(8)}}
    _, fstate = run_gated({**v, "params": flip}, x)
    ftaps = factory.taps(fstate)
    p, st = v["params"], v["batch_stats"]["down2_norm"]
    z = jax.lax.conv_general_dilated(ftaps["down1"], p["down2"]["kernel"], (2, 2), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    bn = (z - st["mean"]) / jnp.sqrt(st["var"] + 1e-5) * p["down2_norm"]["scale"] + \
        p["down2_norm"]["bias"]
    np.testing.assert_allclose(ftaps["down2"], jax.nn.leaky_relu(-bn, 0.2), rtol=1e-4, atol=1e-5)

  def test_widths_narrow_the_convs(self):
    widths = {"down1": 3, "down3": 5, "down8": 7, "up1": 6, "up5": 2, "up7": 9}
    model = pix2pix.UnetGenerator(ngf=4, widths=widths)
    x = jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32)
    v = jax.eval_shape(model.init, jax.random.key(0), x)
    p = v["params"]
    resolved = model.layer_widths()
    self.assertEqual(set(resolved), {f"down{k}" for k in range(1, 9)}
                     | {f"up{k}" for k in range(1, 8)})
    for role, width in resolved.items():
      # Roles are the conv module names; down kernels are HWIO, transposed ones (kh, kw, out, in).
      axis = -1 if role.startswith("down") else -2
      self.assertEqual(p[role]["kernel"].shape[axis], width, role)
      if f"{role}_norm" in p:
        self.assertEqual(p[f"{role}_norm"]["scale"].shape, (width,))
    self.assertEqual(p["down2"]["kernel"].shape, (4, 4, 3, 8))
    self.assertEqual(p["down4"]["kernel"].shape, (4, 4, 5, 32))
    self.assertEqual(p["up1"]["kernel"].shape, (4, 4, 6, 7))
    self.assertEqual(p["up2"]["kernel"].shape, (4, 4, 32, 32 + 6))   # [skip down7, up1]
    self.assertEqual(p["up6"]["kernel"].shape, (4, 4, 8, 5 + 2))     # [skip down3, up5]
    self.assertEqual(p["head"]["kernel"].shape, (4, 4, 3, 3 + 9))    # [skip down1, up7]
    self.assertEqual(jax.eval_shape(model.apply, v, x).shape, (1, 256, 256, 3))
    s = summary_lib.summary(model, x, mac_convention="gan")
    self.assertEqual(s.total_macs, unet_macs(resolved, 8, 256))
    with self.assertRaisesRegex(ConfigError, "unknown layer role 'up8'"):
      pix2pix.UnetGenerator(widths={"up8": 3}).layer_widths()

  def test_bad_configs(self):
    with self.assertRaisesRegex(ValueError, "multiples of 256"):
      jax.eval_shape(pix2pix.UnetGenerator(ngf=2).init, jax.random.key(0),
                     jax.ShapeDtypeStruct((1, 128, 128, 3), jnp.float32))
    with self.assertRaisesRegex(ConfigError, "num_downs must be >= 5"):
      pix2pix.UnetGenerator(num_downs=4).layer_widths()
    small = pix2pix.UnetGenerator(ngf=2, num_downs=5)   # unet at 32x32: no dropout blocks
    out = jax.eval_shape(small.init_with_output, jax.random.key(0),
                         jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))[0]
    self.assertEqual(out.shape, (1, 32, 32, 3))

  def test_registry(self):
    self.assertIsInstance(models.build("pix2pix_unet_generator", ngf=48), pix2pix.UnetGenerator)


class BatchNormPatchGanTest(absltest.TestCase):

  def test_pix2pix_discriminator_size(self):
    # DMAD's Pix2Pix discriminator: ndf 128, batch norm, input and output images concatenated.
    model = cyclegan.NLayerDiscriminator(ndf=128, norm="batch")
    x = jax.ShapeDtypeStruct((1, 256, 256, 6), jnp.float32)
    v = jax.eval_shape(model.init, jax.random.key(0), x)
    self.assertEqual(n_params(v["params"]), torch_params(torch_patchgan(6, 128)))
    self.assertEqual(n_params(v["params"]), 11_042_433)
    self.assertEqual(set(v["batch_stats"]), {"norm1", "norm2", "norm3"})
    convs_with_bias = {k for k, p in v["params"].items() if "kernel" in p and "bias" in p}
    self.assertEqual(convs_with_bias, {"conv0", "head"})
    self.assertEqual(jax.eval_shape(model.apply, v, x).shape, (1, 30, 30, 1))

  def test_matches_pytorch(self):
    model = cyclegan.NLayerDiscriminator(ndf=4, norm="batch")
    x = images((2, 32, 32, 6))
    v = random_variables(model, x)
    y_eval, (y_train, _) = jax.jit(lambda v, x: (
        model.apply(v, x), model.apply(v, x, train=True, mutable=["batch_stats"])))(v, x)
    net = torch_patchgan(6, 4)
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    bns = [m for m in net if isinstance(m, nn.BatchNorm2d)]
    for i, conv in enumerate(convs):
      load_conv(conv, v["params"]["head" if i == 4 else f"conv{i}"])
    for i, bn in enumerate(bns, start=1):
      load_bn(bn, v["params"][f"norm{i}"], v["batch_stats"][f"norm{i}"])
    with torch.no_grad():
      ref_eval, ref_train = nhwc(net.eval()(nchw(x))), nhwc(net.train()(nchw(x)))
    np.testing.assert_allclose(y_eval, ref_eval, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y_train, ref_train, rtol=1e-5, atol=1e-5)
    self.assertGreater(float(np.abs(ref_eval - ref_train).max()), 1e-3)  # train matters

  def test_gates_and_unknown_norm(self):
    model = cyclegan.NLayerDiscriminator(ndf=4, norm="batch", layers=GATED)
    v = jax.eval_shape(model.init, jax.random.key(0),
                       jax.ShapeDtypeStruct((1, 32, 32, 6), jnp.float32))
    self.assertEqual({k: p["mask"].shape for k, p in v["params"].items() if "mask" in p},
                     {"gate1": (8,), "gate2": (16,), "gate3": (32,)})
    self.assertEqual(model.layer_widths(), {"conv0": 4, "conv1": 8, "conv2": 16, "conv3": 32})
    with self.assertRaisesRegex(ConfigError, "unknown norm 'group'"):
      jax.eval_shape(cyclegan.NLayerDiscriminator(norm="group").init, jax.random.key(0),
                     jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))


if __name__ == "__main__":
  absltest.main()
