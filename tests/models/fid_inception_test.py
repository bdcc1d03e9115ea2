"""Tests for jaxcompress.models.fid_inception against a PyTorch build of pytorch-fid's network.

torchvision is not a dependency, so the network is built from the torchvision Inception3
transcription of torchvision_weights_test with the blocks patched as pytorch-fid's
`src/pytorch_fid/inception.py` patches them (FIDInceptionA/C/E_1: average pools without the
padding; FIDInceptionE_2: a max pool), 1008 classes and no auxiliary classifier, and run as
pytorch-fid's `InceptionV3([3])` (bilinear resize to 299, 2x - 1, blocks, global pool).
"""
from __future__ import annotations

import os
import sys

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

sys.path.insert(0, os.path.dirname(__file__))
import torchvision_weights_test as tv  # noqa: E402  (the torchvision Inception3 transcription)

from jaxcompress.errors import ConfigError  # noqa: E402
from jaxcompress.models import fid_inception, inception_v3  # noqa: E402


def _avg_no_pad(x):
  return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(tv.InceptionA):

  def forward(self, x):
    return torch.cat([
        self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
        self.branch_pool(_avg_no_pad(x))], 1)


class FIDInceptionC(tv.InceptionC):

  def forward(self, x):
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    bd = self.branch7x7dbl_1(x)
    for i in range(2, 6):
      bd = getattr(self, f"branch7x7dbl_{i}")(bd)
    return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_avg_no_pad(x))], 1)


class FIDInceptionE(tv.InceptionE):
  """FIDInceptionE_1 (pool=_avg_no_pad) and FIDInceptionE_2 (a 3x3/1 max pool)."""

  def __init__(self, cin, pool):
    super().__init__(cin)
    self.pool = pool

  def forward(self, x):
    b3 = self.branch3x3_1(x)
    b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
    bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
    return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(self.pool(x))], 1)


def _max_pool(x):
  return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


def torch_fid_inception(seed=0):
  """pytorch-fid's `fid_inception_v3()` with random weights and calibrated BatchNorm statistics.

  Random statistics leave a deep random network nearly blind to its input (two different images
  give pool3 features within 3e-3); running statistics of a calibration batch keep every layer
  normalised, so the features depend on the images and a wrong pool or resize shows.
  """
  net = tv.Inception3(num_classes=1008, aux_logits=False)
  net.Mixed_5b = FIDInceptionA(192, pool_features=32)
  net.Mixed_5c = FIDInceptionA(256, pool_features=64)
  net.Mixed_5d = FIDInceptionA(288, pool_features=64)
  for name, c7 in (("6b", 128), ("6c", 160), ("6d", 160), ("6e", 192)):
    setattr(net, f"Mixed_{name}", FIDInceptionC(768, c7))
  net.Mixed_7b = FIDInceptionE(1280, _avg_no_pad)
  net.Mixed_7c = FIDInceptionE(2048, _max_pool)
  net = tv.randomise(net, seed)
  for m in net.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      m.reset_running_stats()
      m.momentum = None  # the running statistics become the calibration batch's
  # Images like the tests' and as large as theirs after the resize to 299, so that the
  # statistics fit them (features O(1)).
  calibration = ramp_images(np.random.RandomState(seed + 100), 2, 83, 107)
  net.train()
  with torch.no_grad():
    torch_pool3(net, torch.from_numpy(calibration))
  return net.eval()


def ramp_images(rng, n, h, w):
  """(n, 3, h, w) images in [0, 1]: colour ramps of random orientation plus noise."""
  yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
  out = []
  for _ in range(n):
    a = rng.uniform(-1, 1, size=(3, 3))
    ramp = a[:, :1, None] * yy + a[:, 1:2, None] * xx + a[:, 2:, None]
    out.append(np.clip(0.5 + 0.4 * ramp + 0.2 * rng.standard_normal((3, h, w)), 0, 1))
  return np.stack(out).astype(np.float32)


def torch_blocks(net, x):
  """pytorch-fid's InceptionV3 blocks 0-3: the network up to the global average pool."""
  x = net.maxpool1(net.Conv2d_2b_3x3(net.Conv2d_2a_3x3(net.Conv2d_1a_3x3(x))))
  x = net.maxpool2(net.Conv2d_4a_3x3(net.Conv2d_3b_1x1(x)))
  for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
    x = getattr(net, f"Mixed_{name}")(x)
  return F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)


def torch_pool3(net, x):
  """pytorch-fid `InceptionV3(resize_input=True, normalize_input=True)`, block 3 output."""
  x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
  return torch_blocks(net, 2 * x - 1)


@pytest.fixture(scope="module")
def torch_net():
  return torch_fid_inception()


def test_pool3_features_match_pytorch_fid(torch_net, tmp_path):
  path = tmp_path / fid_inception.FID_WEIGHTS_FILE
  torch.save(torch_net.state_dict(), path)
  variables = fid_inception.load_pytorch_fid(str(path))
  # Two non-square images in [0, 1]: both axes are resized (upsampled) to 299.
  x = ramp_images(np.random.RandomState(0), 2, 83, 107)
  with torch.no_grad():
    want = torch_pool3(torch_net, torch.from_numpy(x)).numpy()
  got = np.asarray(jax.jit(fid_inception.pool3_features)(variables, x.transpose(0, 2, 3, 1)))
  assert got.shape == want.shape == (2, fid_inception.FEATURE_DIM)
  scale = np.abs(want).max()
  assert scale > 0.1 and np.abs(want[0] - want[1]).max() > 0.1 * scale
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)
  # Every parameter except the 1008-way classifier is used.
  n_params = sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(variables["params"]))
  assert n_params == sum(p.numel() for n, p in torch_net.named_parameters()
                         if not n.startswith("fc."))


@pytest.mark.parametrize("shape", [(37, 53), (341, 300), (299, 299)])
def test_resize_matches_torch_interpolate(shape):
  # Upsampling, downsampling (no antialiasing in F.interpolate) and the identity.
  x = np.random.RandomState(1).uniform(size=(1, 2) + shape).astype(np.float32)
  want = F.interpolate(torch.from_numpy(x), size=(299, 299), mode="bilinear",
                       align_corners=False).numpy()
  got = fid_inception.preprocess(x.transpose(0, 2, 3, 1), normalize_input=False)
  np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), want, rtol=0, atol=1e-5)
  normalised = fid_inception.preprocess(x.transpose(0, 2, 3, 1))
  np.testing.assert_allclose(np.asarray(normalised), 2 * np.asarray(got) - 1, atol=1e-6)


def block_variables(state_dict):
  """flax variables of one block from its PyTorch state_dict (OIHW -> HWIO, BN names)."""
  leaf_names = {"running_mean": "mean", "running_var": "var", "bias": "bias"}
  variables = {"params": {}, "batch_stats": {}}
  for key, value in state_dict.items():
    *module, leaf = key.split(".")
    if leaf == "num_batches_tracked":
      continue
    value = value.numpy()
    col = "batch_stats" if leaf.startswith("running_") else "params"
    if leaf == "weight":
      name = "kernel" if value.ndim == 4 else "scale"
      value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value
    else:
      name = leaf_names[leaf]
    node = variables[col]
    for m in module:
      node = node.setdefault(m, {})
    node[name] = value
  return variables


@pytest.mark.parametrize("pool,torch_pool", [("avg_no_pad", _avg_no_pad), ("max", _max_pool)])
def test_patched_pool_branch_matches_torch(pool, torch_pool):
  # One InceptionE block on a small grid: the patched pool branch matches pytorch-fid's, and the
  # torchvision pool branch does not (so the full-network test can tell them apart).
  block = tv.randomise(FIDInceptionE(16, torch_pool), seed=3)
  x = np.random.RandomState(2).standard_normal((2, 16, 5, 6)).astype(np.float32)
  with torch.no_grad():
    want = block(torch.from_numpy(x)).numpy()
  variables = block_variables(block.state_dict())
  xj = x.transpose(0, 2, 3, 1)

  @jax.jit
  def apply(variables, x):
    block = inception_v3.InceptionE(inception_v3.factory.FLOAT, pool)
    plain = inception_v3.InceptionE(inception_v3.factory.FLOAT)  # torchvision's pool branch
    return block.apply(variables, x, False), plain.apply(variables, x, False)

  got, plain = apply(variables, xj)
  np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), want, rtol=1e-4, atol=1e-4)
  assert np.abs(np.asarray(plain) - np.asarray(got)).max() > 1e-3


def test_wrapper_block_keys_convert_the_same(torch_net):
  state = {k: v.numpy() for k, v in torch_net.state_dict().items()}
  names = {"Conv2d_1a_3x3": "0.0", "Conv2d_2a_3x3": "0.1", "Conv2d_2b_3x3": "0.2",
           "Conv2d_3b_1x1": "1.0", "Conv2d_4a_3x3": "1.1", "Mixed_7a": "3.0", "Mixed_7b": "3.1",
           "Mixed_7c": "3.2"}
  names.update({f"Mixed_{n}": f"2.{i}"
                for i, n in enumerate(["5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e"])})
  # pytorch-fid's InceptionV3 wrapper has no classifier.
  wrapped = {f"blocks.{names[k.split('.')[0]]}.{k.split('.', 1)[1]}": v
             for k, v in state.items() if not k.startswith("fc.")}
  assert "blocks.2.7.branch7x7dbl_5.bn.running_var" in wrapped
  a = fid_inception.convert_pytorch_fid(state)
  b = fid_inception.convert_pytorch_fid(wrapped)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  np.testing.assert_array_equal(a["params"]["Mixed_6e"]["branch_pool"]["conv"]["kernel"],
                                state["Mixed_6e.branch_pool.conv.weight"].transpose(2, 3, 1, 0))


def test_missing_weight_file_says_how_to_get_it(tmp_path):
  with pytest.raises(ConfigError, match=r"do not exist.*pytorch-fid/releases/download/fid_weights/"
                                        r"pt_inception-2015-12-05-6726825d\.pth"):
    fid_inception.load_pytorch_fid(str(tmp_path / "nowhere.pth"))
  # A directory is searched for the official file name.
  with pytest.raises(ConfigError, match="pt_inception-2015-12-05-6726825d.pth' do not exist"):
    fid_inception.load_pytorch_fid(str(tmp_path))


def test_other_checkpoints_are_rejected(torch_net):
  state = {k: v.numpy() for k, v in torch_net.state_dict().items()}
  del state["Mixed_7c.branch_pool.bn.running_mean"]
  with pytest.raises(ConfigError, match=r"Not the pytorch-fid FID Inception weights.*"
                                        r"'Mixed_7c\.branch_pool\.bn\.running_mean'"):
    fid_inception.convert_pytorch_fid(state)
  # A torchvision Inception-v3 checkpoint (with AuxLogits) is not the FID network.
  aux = {k: v.numpy() for k, v in tv.Inception3(num_classes=10).state_dict().items()}
  with pytest.raises(ConfigError, match="AuxLogits"):
    fid_inception.convert_pytorch_fid(aux)
