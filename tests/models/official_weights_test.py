"""Tests for jaxcompress.models.official_weights against PyTorch transcriptions of the official code.

The networks below transcribe, with the same module names (hence the same state_dict keys):
  * EDSR-PyTorch `src/model/common.py` (MeanShift, ResBlock, Upsampler), `src/model/edsr.py` and
    `src/model/rdn.py` (github.com/sanghyun-son/EDSR-PyTorch);
  * ABanditNAS `models/darts_ops_1.py`, `models/filter.py`, `models/darts_cell_all.py` and
    `models/darts_cnn_bandit_all.py` (github.com/bczhangbczhang/ABanditNAS), CPU instead of CUDA.
Each test randomises every weight (BatchNorm running statistics and the zero-initialised
denoising BNs included), saves a checkpoint with torch.save, converts it and compares the
eval-mode outputs with PyTorch's on random inputs.
"""
from __future__ import annotations

import itertools
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from jaxcompress.errors import ConfigError  # noqa: E402
from jaxcompress.models import edsr  # noqa: E402
from jaxcompress.models import official_weights as ow  # noqa: E402
from jaxcompress.nas import abandit_network as an  # noqa: E402

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


def _randomize(module: nn.Module, seed: int, bn_stats: bool = True) -> None:
  """Random weights (N(0, 0.25 / fan_in)), 1-d parameters N(0 or 1, 0.3^2), random BN stats."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in module.named_parameters():
      if p.requires_grad is False:   # MeanShift stays as built
        continue
      fan_in = int(np.prod(p.shape[1:])) if p.ndim > 1 else 1
      p.copy_(torch.randn(p.shape, generator=g) * (0.5 / math.sqrt(fan_in)) if p.ndim > 1
              else torch.randn(p.shape, generator=g) * 0.3 + (1.0 if name.endswith(
                  "weight") else 0.0))
    if bn_stats:
      for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
          m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
          m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


# ---- EDSR-PyTorch transcription ----------------------------------------------------------------

def default_conv(cin, cout, k, bias=True):
  return nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias)


class MeanShift(nn.Conv2d):

  def __init__(self, rgb_range, rgb_mean=DIV2K_MEAN, rgb_std=(1.0, 1.0, 1.0), sign=-1):
    super().__init__(3, 3, kernel_size=1)
    std = torch.Tensor(rgb_std)
    self.weight.data = torch.eye(3).view(3, 3, 1, 1) / std.view(3, 1, 1, 1)
    self.bias.data = sign * rgb_range * torch.Tensor(rgb_mean) / std
    for p in self.parameters():
      p.requires_grad = False


class ResBlock(nn.Module):

  def __init__(self, conv, n_feats, k, res_scale=1.0):
    super().__init__()
    self.body = nn.Sequential(conv(n_feats, n_feats, k), nn.ReLU(True), conv(n_feats, n_feats, k))
    self.res_scale = res_scale

  def forward(self, x):
    return self.body(x).mul(self.res_scale) + x


class Upsampler(nn.Sequential):

  def __init__(self, conv, scale, n_feats):
    m = []
    if scale & (scale - 1) == 0:
      for _ in range(int(math.log(scale, 2))):
        m += [conv(n_feats, 4 * n_feats, 3), nn.PixelShuffle(2)]
    else:
      m += [conv(n_feats, 9 * n_feats, 3), nn.PixelShuffle(3)]
    super().__init__(*m)


class TorchEDSR(nn.Module):

  def __init__(self, scale, n_resblocks, n_feats, res_scale=1.0, rgb_range=255,
               rgb_mean=DIV2K_MEAN, rgb_std=(1.0, 1.0, 1.0)):
    super().__init__()
    conv = default_conv
    self.sub_mean = MeanShift(rgb_range, rgb_mean, rgb_std)
    self.add_mean = MeanShift(rgb_range, rgb_mean, rgb_std, sign=1)
    self.head = nn.Sequential(conv(3, n_feats, 3))
    body = [ResBlock(conv, n_feats, 3, res_scale) for _ in range(n_resblocks)]
    self.body = nn.Sequential(*body, conv(n_feats, n_feats, 3))
    self.tail = nn.Sequential(Upsampler(conv, scale, n_feats), conv(n_feats, 3, 3))

  def forward(self, x):
    x = self.head(self.sub_mean(x))
    res = self.body(x) + x
    return self.add_mean(self.tail(res))


# ---- EDSR-PyTorch RDN transcription ------------------------------------------------------------

class RDB_Conv(nn.Module):  # noqa: N801  (official name)

  def __init__(self, cin, g):
    super().__init__()
    self.conv = nn.Sequential(nn.Conv2d(cin, g, 3, padding=1, stride=1), nn.ReLU())

  def forward(self, x):
    return torch.cat((x, self.conv(x)), 1)


class RDB(nn.Module):

  def __init__(self, g0, g, c):
    super().__init__()
    self.convs = nn.Sequential(*[RDB_Conv(g0 + i * g, g) for i in range(c)])
    self.LFF = nn.Conv2d(g0 + c * g, g0, 1, padding=0, stride=1)

  def forward(self, x):
    return self.LFF(self.convs(x)) + x


class TorchRDN(nn.Module):

  def __init__(self, r, g0, d, c, g):
    super().__init__()
    self.D = d
    self.SFENet1 = nn.Conv2d(3, g0, 3, padding=1)
    self.SFENet2 = nn.Conv2d(g0, g0, 3, padding=1)
    self.RDBs = nn.ModuleList([RDB(g0, g, c) for _ in range(d)])
    self.GFF = nn.Sequential(nn.Conv2d(d * g0, g0, 1), nn.Conv2d(g0, g0, 3, padding=1))
    if r in (2, 3):
      self.UPNet = nn.Sequential(nn.Conv2d(g0, g * r * r, 3, padding=1), nn.PixelShuffle(r),
                                 nn.Conv2d(g, 3, 3, padding=1))
    else:
      self.UPNet = nn.Sequential(nn.Conv2d(g0, g * 4, 3, padding=1), nn.PixelShuffle(2),
                                 nn.Conv2d(g, g * 4, 3, padding=1), nn.PixelShuffle(2),
                                 nn.Conv2d(g, 3, 3, padding=1))

  def forward(self, x):
    f1 = self.SFENet1(x)
    x = self.SFENet2(f1)
    outs = []
    for i in range(self.D):
      x = self.RDBs[i](x)
      outs.append(x)
    return self.UPNet(self.GFF(torch.cat(outs, 1)) + f1)


def _sr_case(tmp_path, net, name):
  path = tmp_path / name
  torch.save(net.state_dict(), path)
  rng = np.random.default_rng(0)
  lr = rng.uniform(0, 255, (2, 3, 6, 7)).astype(np.float32)   # non-square catches H/W swaps
  with torch.no_grad():
    ref = net.eval()(torch.from_numpy(lr)).numpy().transpose(0, 2, 3, 1)
  return path, lr.transpose(0, 2, 3, 1), ref


# ---- EDSR / RDN tests --------------------------------------------------------------------------

@pytest.mark.parametrize("scale,res_scale", [(2, 1.0), (4, 0.1), (3, 1.0)])
def test_edsr_outputs_match_pytorch(tmp_path, scale, res_scale):
  net = TorchEDSR(scale, n_resblocks=2, n_feats=8, res_scale=res_scale)
  _randomize(net, seed=scale)
  path, lr, ref = _sr_case(tmp_path, net, f"edsr_x{scale}.pt")
  model, variables = ow.edsr_from_torch(path, res_scale=res_scale)
  assert (model.scale, model.n_resblocks, model.n_feats) == (scale, 2, 8)
  np.testing.assert_allclose(model.rgb_mean, DIV2K_MEAN, rtol=1e-6)
  out = np.asarray(model.apply(variables, jnp.asarray(lr)))
  assert out.shape == ref.shape == (2, 6 * scale, 7 * scale, 3)
  np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)
  # The residual path matters: a wrong res_scale gives another image.
  wrong = edsr.EDSR(scale=scale, n_resblocks=2, n_feats=8, res_scale=0.5)
  assert np.abs(np.asarray(wrong.apply(variables, jnp.asarray(lr))) - ref).max() > 1e-2


def test_edsr_default_model_and_convert_into_given_model(tmp_path):
  net = TorchEDSR(2, n_resblocks=1, n_feats=4)
  _randomize(net, seed=7)
  path, lr, ref = _sr_case(tmp_path, net, "teacher.pth")
  model = edsr.EDSR(scale=2, n_resblocks=1, n_feats=4)     # DIV2K mean, range 255
  out = np.asarray(model.apply(ow.convert_edsr(path, model), jnp.asarray(lr)))
  np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)
  from jaxcompress.methods import pams  # pylint: disable=g-import-not-at-top
  params = pams.load_params(str(path))                     # what teacher_path=*.pth loads
  np.testing.assert_allclose(np.asarray(model.apply({"params": params}, jnp.asarray(lr))), ref,
                             atol=1e-4, rtol=0)


def test_edsr_mean_shift_must_match_the_model(tmp_path):
  net = TorchEDSR(2, n_resblocks=1, n_feats=4, rgb_range=1)   # trained on [0, 1]
  path = tmp_path / "r1.pt"
  torch.save(net.state_dict(), path)
  with pytest.raises(ConfigError, match="rgb_range"):
    ow.convert_edsr(path, edsr.EDSR(scale=2, n_resblocks=1, n_feats=4))
  model, _ = ow.edsr_from_torch(path, rgb_range=1.0)
  np.testing.assert_allclose(model.rgb_mean, DIV2K_MEAN, rtol=1e-6)
  std_net = TorchEDSR(2, n_resblocks=1, n_feats=4, rgb_std=(0.5, 0.5, 0.5))
  with pytest.raises(ConfigError, match="sub_mean.weight is not the identity"):
    ow.convert_edsr(std_net.state_dict())


def test_edsr_missing_extra_and_wrong_shape_keys_name_the_key():
  net = TorchEDSR(2, n_resblocks=2, n_feats=4)
  sd = {k: v.clone() for k, v in net.state_dict().items()}
  model = edsr.EDSR(scale=2, n_resblocks=2, n_feats=4)
  missing = dict(sd)
  del missing["body.1.body.2.bias"]
  with pytest.raises(ConfigError, match=r"'body\.1\.body\.2\.bias' \(expected shape \(4,\)\)"):
    ow.convert_edsr(missing, model)
  extra = dict(sd, **{"body.0.body.3.weight": torch.zeros(4, 4, 3, 3)})
  with pytest.raises(ConfigError, match=r"does not use: 'body\.0\.body\.3\.weight'"):
    ow.convert_edsr(extra, model)
  bad = dict(sd, **{"tail.1.weight": torch.zeros(3, 4, 5, 5)})
  with pytest.raises(ConfigError, match=r"'tail\.1\.weight' has shape \(3, 4, 5, 5\), the model "
                     r"expects \(3, 4, 3, 3\)"):
    ow.convert_edsr(bad, model)
  with pytest.raises(ConfigError, match=r"lacks .*'body\.2\.body\.0\.weight'"):
    ow.convert_edsr(sd, edsr.EDSR(scale=2, n_resblocks=3, n_feats=4))   # deeper model
  with pytest.raises(ConfigError, match="neither an EDSR-PyTorch EDSR"):
    ow.convert_sr_teacher({"fc.weight": np.zeros((2, 2))})


@pytest.mark.slow
def test_pams_teacher_path_loads_an_edsr_pytorch_teacher(tmp_path):
  """config.pams.teacher_path=teacher.pt: the PAMS teacher is the converted network and the
  student starts from its weights."""
  import ml_collections  # pylint: disable=g-import-not-at-top

  from configs.pams import offline_edsr_x2  # pylint: disable=g-import-not-at-top
  from jaxcompress.methods import pams  # pylint: disable=g-import-not-at-top
  net = TorchEDSR(2, n_resblocks=1, n_feats=8)
  _randomize(net, seed=21)
  path, lr, ref = _sr_case(tmp_path, net, "edsr_baseline_x2.pt")
  c = offline_edsr_x2.get_config("quick")
  c.method = "pams"
  c.model.kwargs = ml_collections.ConfigDict({"scale": 2, "n_resblocks": 1, "n_feats": 8})
  c.pams.teacher_path = str(path)
  method = pams.PAMS(c, steps_per_epoch=1, total_steps=1)
  state = method.init(jax.random.key(0), {"lr": jnp.asarray(lr), "hr": jnp.zeros((2, 12, 14, 3))})
  teacher = state.extra["teacher"]
  out = np.asarray(method.teacher.apply({"params": teacher}, jnp.asarray(lr)))
  np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)
  np.testing.assert_array_equal(np.asarray(state.params["body_0"]["conv1"]["kernel"]),
                                np.asarray(teacher["body_0"]["conv1"]["kernel"]))
  c.model.kwargs.n_feats = 16   # a config that does not match the checkpoint
  wrong = pams.PAMS(c, steps_per_epoch=1, total_steps=1)
  with pytest.raises(ConfigError, match="head/kernel has shape"):
    wrong.init(jax.random.key(0), {"lr": jnp.asarray(lr), "hr": jnp.zeros((2, 12, 14, 3))})


@pytest.mark.parametrize("scale", [2, 4])
def test_rdn_outputs_match_pytorch(tmp_path, scale):
  net = TorchRDN(scale, g0=6, d=2, c=3, g=4)
  _randomize(net, seed=10 + scale)
  path, lr, ref = _sr_case(tmp_path, net, f"rdn_x{scale}.pt")
  model, variables = ow.rdn_from_torch(path)
  assert (model.scale, model.g0, model.d, model.c, model.g) == (scale, 6, 2, 3, 4)
  out = np.asarray(model.apply(variables, jnp.asarray(lr)))
  np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)
  params = ow.convert_sr_teacher(path)
  np.testing.assert_allclose(np.asarray(model.apply({"params": params}, jnp.asarray(lr))), ref,
                             atol=1e-4, rtol=0)


def test_missing_torch_is_a_config_error(tmp_path, monkeypatch):
  path = tmp_path / "x.pt"
  path.write_bytes(b"")
  monkeypatch.setitem(sys.modules, "torch", None)   # `import torch` raises ImportError
  with pytest.raises(ConfigError, match="pip install torch"):
    ow.load_torch_checkpoint(path)


def test_unreadable_and_missing_files(tmp_path):
  with pytest.raises(ConfigError, match="does not exist"):
    ow.load_torch_checkpoint(tmp_path / "nope.pt")
  junk = tmp_path / "junk.pt"
  junk.write_bytes(b"not a checkpoint")
  with pytest.raises(ConfigError, match="Cannot read"):
    ow.load_torch_checkpoint(junk)


# ---- ABanditNAS transcription (models/darts_ops_1.py, models/filter.py) ------------------------

BN_EPS = 1e-3   # defense_all.py --bn_eps 1e-3 (set on every BN)


def bn(c, affine=True):
  return nn.BatchNorm2d(c, eps=BN_EPS, affine=affine)


class ReLUConvBN(nn.Module):

  def __init__(self, cin, cout, k, stride, padding, affine=True):
    super().__init__()
    self.op = nn.Sequential(nn.ReLU(inplace=False),
                            nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=False),
                            bn(cout, affine))

  def forward(self, x):
    return self.op(x)


class PoolBN(nn.Module):

  def __init__(self, pool_type, c, k, stride, padding, affine=True):
    super().__init__()
    self.pool = (nn.MaxPool2d(k, stride, padding) if pool_type == "max"
                 else nn.AvgPool2d(k, stride, padding, count_include_pad=False))
    self.bn = bn(c, affine)

  def forward(self, x):
    return self.bn(self.pool(x))


class DilConv(nn.Module):

  def __init__(self, cin, cout, k, stride, padding, dilation, affine=True):
    super().__init__()
    self.net = nn.Sequential(
        nn.ReLU(), nn.Conv2d(cin, cin, k, stride, padding, dilation=dilation, groups=cin,
                             bias=False),
        nn.Conv2d(cin, cout, 1, stride=1, padding=0, bias=False), bn(cout, affine))

  def forward(self, x):
    return self.net(x)


class Conv(nn.Module):

  def __init__(self, cin, cout, k, stride, padding, dilation, groups=1, affine=True):
    super().__init__()
    self.net = nn.Sequential(
        nn.ReLU(), nn.Conv2d(cin, cout, k, stride, padding, dilation=dilation, groups=groups,
                             bias=False), bn(cout, affine))

  def forward(self, x):
    return self.net(x)


class SepConv(nn.Module):

  def __init__(self, cin, cout, k, stride, padding, affine=True):
    super().__init__()
    self.net = nn.Sequential(Conv(cin, cin, k, stride, padding, 1, groups=cin, affine=affine),
                             Conv(cin, cout, k, 1, padding, 1, affine=affine))

  def forward(self, x):
    return self.net(x)


class SepConv_M(nn.Module):  # noqa: N801  (official name)

  def __init__(self, cin, cout, k, stride, padding, affine=True):
    super().__init__()
    self.net = nn.Sequential(DilConv(cin, cin, k, stride, padding, 1, affine=affine),
                             DilConv(cin, cout, k, 1, padding, 1, affine=affine))

  def forward(self, x):
    return self.net(x)


class Identity(nn.Module):

  def forward(self, x):
    return x


class FactorizedReduce(nn.Module):

  def __init__(self, cin, cout, affine=True):
    super().__init__()
    self.relu = nn.ReLU()
    self.conv1 = nn.Conv2d(cin, cout // 2, 1, stride=2, padding=0, bias=False)
    self.conv2 = nn.Conv2d(cin, cout // 2, 1, stride=2, padding=0, bias=False)
    self.bn = bn(cout, affine)

  def forward(self, x):
    x = self.relu(x)
    return self.bn(torch.cat([self.conv1(x), self.conv2(x[:, :, 1:, 1:])], dim=1))


def gabor_fn(kernel_size, channel_in, channel_out, sigma, theta, lambd, psi, gamma):
  sigma_x, sigma_y = sigma, sigma.float() / gamma
  xmax = ymax = kernel_size // 2
  ksize = 2 * xmax + 1
  y = torch.arange(-ymax, ymax + 1).view(1, -1).repeat(channel_out, channel_in, ksize, 1).float()
  x = torch.arange(-xmax, xmax + 1).view(-1, 1).repeat(channel_out, channel_in, 1, ksize).float()
  x_theta = x * torch.cos(theta.view(-1, 1, 1, 1)) + y * torch.sin(theta.view(-1, 1, 1, 1))
  y_theta = -x * torch.sin(theta.view(-1, 1, 1, 1)) + y * torch.cos(theta.view(-1, 1, 1, 1))
  return torch.exp(-.5 * (x_theta ** 2 / sigma_x.view(-1, 1, 1, 1) ** 2
                          + y_theta ** 2 / sigma_y.view(-1, 1, 1, 1) ** 2)) * torch.cos(
                              2 * math.pi / lambd.view(-1, 1, 1, 1) * x_theta
                              + psi.view(-1, 1, 1, 1))


class GaborFilter(nn.Module):

  def __init__(self, c, kernel_size, stride=1, padding=1):
    super().__init__()
    self.kernel_size, self.c, self.stride, self.padding = kernel_size, c, stride, padding
    self.Lambda = nn.Parameter(torch.rand(c))
    self.theta = nn.Parameter(torch.randn(c))
    self.psi = nn.Parameter(torch.randn(c) * 0.02)
    self.sigma = nn.Parameter(torch.randn(c))
    self.gamma = nn.Parameter(torch.randn(c) * 0.0)

  def forward(self, x):
    theta = torch.sigmoid(self.theta) * math.pi * 2.0
    gamma = 1.0 + self.gamma * 0.5
    sigma = 0.1 + torch.sigmoid(self.sigma) * 0.4
    lambd = 0.001 + torch.sigmoid(self.Lambda) * 0.999
    kernel = gabor_fn(self.kernel_size, self.c, self.c, sigma, theta, lambd, self.psi, gamma)
    return F.conv2d(x, kernel.float(), stride=self.stride, padding=self.padding)


class NonLocalFilter(nn.Module):
  """The `dotp` filter: embed=False, softmax=False."""

  def forward(self, x):
    b, c, h, w = x.size()
    theta_x = x.view(b, -1, h * w).permute(0, 2, 1)
    phi_x = x.view(b, -1, h * w)
    g_x = x.view(b, c, -1).permute(0, 2, 1)
    if c > h * w:
      y = torch.matmul(torch.matmul(theta_x, phi_x), g_x)
    else:
      y = torch.matmul(theta_x, torch.matmul(phi_x, g_x))
    y = y.permute(0, 2, 1).contiguous().view(b, c, h, w)
    return y / (c * h * w)


class DenoisingBlock(nn.Module):

  def __init__(self, c, stride, filter_type="dotp", affine=True):
    super().__init__()
    self.stride = stride
    self.filter = GaborFilter(c, 3, 1, 1) if filter_type == "gabor" else NonLocalFilter()
    self.filterblock = nn.Sequential(self.filter, bn(c, affine))
    nn.init.constant_(self.filterblock[1].weight, 0)
    nn.init.constant_(self.filterblock[1].bias, 0)

  def forward(self, x):
    out = self.filterblock(x) + x
    return out if self.stride == 1 else F.interpolate(out, scale_factor=1 / self.stride,
                                                      mode="bilinear", align_corners=True)


OPS = {
    "avg_pool_3x3": lambda C, s, a: PoolBN("avg", C, 3, s, 1, affine=a),
    "max_pool_3x3": lambda C, s, a: PoolBN("max", C, 3, s, 1, affine=a),
    "skip_connect": lambda C, s, a: Identity() if s == 1 else FactorizedReduce(C, C, affine=a),
    "sep_conv_3x3": lambda C, s, a: SepConv(C, C, 3, s, 1, affine=a),
    "sep_conv_5x5": lambda C, s, a: SepConv(C, C, 5, s, 2, affine=a),
    "sep_conv_m_3x3": lambda C, s, a: SepConv_M(C, C, 3, s, 1, affine=a),
    "sep_conv_m_5x5": lambda C, s, a: SepConv_M(C, C, 5, s, 2, affine=a),
    "conv_3x3": lambda C, s, a: Conv(C, C, 3, s, 2, 2, affine=a),
    "conv_5x5": lambda C, s, a: Conv(C, C, 5, s, 4, 2, affine=a),
    "dil_conv_3x3": lambda C, s, a: DilConv(C, C, 3, s, 2, 2, affine=a),
    "dil_conv_5x5": lambda C, s, a: DilConv(C, C, 5, s, 4, 2, affine=a),
    "gab_filt_3x3": lambda C, s, a: DenoisingBlock(C, s, "gabor", affine=a),
    "dtp_blok_3x3": lambda C, s, a: DenoisingBlock(C, s, "dotp", affine=a),
}


# ---- ABanditNAS transcription (models/darts_cell_all.py, models/darts_cnn_bandit_all.py) -------

class Training_Cell(nn.Module):  # noqa: N801  (official name)

  def __init__(self, genotype, concat, c_prev, c, reduction, denosing=False):
    super().__init__()
    self.denosing = denosing
    self.preprocess1 = ReLUConvBN(c_prev, c, 1, 1, 0)
    op_names, indices = zip(*genotype)
    self._concat = concat
    self.multiplier = len(concat)
    self._ops = nn.ModuleList([OPS[n](c, 2 if reduction and i < 1 else 1, True)
                               for n, i in zip(op_names, indices)])
    self._indices = indices
    if denosing:
      self.denoseblock = DenoisingBlock(c * len(op_names), 1, filter_type="dotp")

  def forward(self, x):
    states = [self.preprocess1(x)]
    for i, op in enumerate(self._ops):
      states.append(op(states[self._indices[i]]))
    out = torch.cat([states[i] for i in self._concat], dim=1)
    return self.denoseblock(out) if self.denosing else out


class AuxiliaryHeadCIFAR(nn.Module):

  def __init__(self, c, num_classes):
    super().__init__()
    self.features = nn.Sequential(
        nn.ReLU(inplace=True), nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
        nn.Conv2d(c, 128, 1, bias=False), bn(128), nn.ReLU(inplace=True),
        nn.Conv2d(128, 768, 2, bias=False), bn(768), nn.ReLU(inplace=True))
    self.classifier = nn.Linear(768, num_classes)

  def forward(self, x):
    x = self.features(x)
    return self.classifier(x.view(x.size(0), -1))


class NetworkCIFAR(nn.Module):
  """`NetworkCIFAR` in eval mode; `genotype` is the official Genotype_6 as a flat list."""

  def __init__(self, C, num_classes, layers, auxiliary, genotype, mannul=True):
    super().__init__()
    self._layers = layers
    self.mean = torch.tensor(an.CIFAR_MEAN).view(3, 1, 1)   # plain tensors: not in state_dict
    self.std = torch.tensor(an.CIFAR_STD).view(3, 1, 1)
    c_curr = 3 * C
    self.stem = nn.Sequential(nn.Conv2d(3, c_curr, 3, padding=1, bias=False), bn(c_curr))
    c_prev, c_curr = c_curr, C
    self.cells = nn.ModuleList()
    proxy_len = len(genotype) // 2
    denosing = False
    for i in range(layers):
      reduction = i in [layers // 3, 2 * layers // 3]
      if reduction:
        c_curr *= 2
      if mannul:
        denosing = i in [layers // 4, 2 * layers // 4, 3 * layers // 4]
      if proxy_len == layers:
        k = i
      else:
        n_repeat = (layers - 2) // (proxy_len - 2)
        if i <= layers // 3 + 1:
          k = i // n_repeat
        elif i <= 2 * layers // 3 + 1:
          k = (i + 1) // n_repeat
        else:
          k = (i + 2) // n_repeat
      cell = Training_Cell(list(itertools.chain.from_iterable(genotype[2 * k])),
                           genotype[2 * k + 1], c_prev, c_curr, reduction, denosing)
      self.cells.append(cell)
      c_prev = cell.multiplier * c_curr
      if i == 2 * layers // 3:
        c_aux = c_prev
    if auxiliary:
      self.auxiliary_head = AuxiliaryHeadCIFAR(c_aux, num_classes)
    self.global_pooling = nn.AdaptiveAvgPool2d(1)
    self.classifier = nn.Linear(c_prev, num_classes)

  def forward(self, x):
    s = self.stem((x - self.mean) / self.std)
    for cell in self.cells:
      s = cell(s)
    return self.classifier(self.global_pooling(s).view(s.size(0), -1))


def _official_genotype(genotype: an.AbanditGenotype) -> list:
  """`Genotype_6(a=[[(op, idx)], ...], a_concat=[1, 2, 3, 4], ...)` as a flat list."""
  out = []
  for cell, concat in zip(genotype.cells, genotype.concats):
    out += [[[edge] for edge in cell], list(concat)]
  return out


# Every op kind at stride 1 and stride 2 (cells c and e sit on the reductions of a 6-layer net):
# FactorizedReduce, strided Gabor / non-local blocks (bilinear resize), pools, dilated convs and
# the MNIST cells' sep_conv_m / dil_conv.
ALL_OPS_GENOTYPE = an.make_genotype([
    [("conv_3x3", 0), ("gab_filt_3x3", 1), ("sep_conv_3x3", 2), ("dtp_blok_3x3", 1)],
    [("avg_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("conv_5x5", 0)],
    [("skip_connect", 0), ("gab_filt_3x3", 0), ("dtp_blok_3x3", 0), ("sep_conv_5x5", 0)],
    [("sep_conv_5x5", 0), ("dtp_blok_3x3", 1), ("conv_3x3", 2), ("skip_connect", 3)],
    [("max_pool_3x3", 0), ("avg_pool_3x3", 0), ("conv_5x5", 0), ("sep_conv_3x3", 1)],
    [("sep_conv_m_3x3", 0), ("dil_conv_3x3", 1), ("sep_conv_m_5x5", 2), ("dil_conv_5x5", 0)],
])


def _abandit_case(genotype, C, layers, mannul, seed, batch=2):
  net = NetworkCIFAR(C, 10, layers, True, _official_genotype(genotype), mannul)
  _randomize(net, seed)
  x = np.random.default_rng(seed).uniform(0, 1, (batch, 3, 32, 32)).astype(np.float32)
  with torch.no_grad():
    # Deep random networks give logits in the hundreds; rescaling the classifier keeps them
    # O(1), so an absolute 1e-4 is a float32-tight test of everything before it.
    s = float(net.eval()(torch.from_numpy(x)).abs().max())
    net.classifier.weight.div_(s)
    net.classifier.bias.div_(s)
    ref = net(torch.from_numpy(x)).numpy()
  return net, x.transpose(0, 2, 3, 1), ref


def test_abandit_all_op_kinds_match_pytorch(tmp_path):
  net, x, ref = _abandit_case(ALL_OPS_GENOTYPE, C=4, layers=6, mannul=True, seed=3)
  # As the release: a DataParallel model's state_dict inside {"model": ...} of a .pth.tar.
  path = tmp_path / "ABANDIT_TEST.pth.tar"
  torch.save({"model": {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": 599},
             path)
  model, variables = ow.abandit_network_from_torch(path, ALL_OPS_GENOTYPE)
  assert (model.C, model.layers, model.num_classes) == (4, 6, 10)
  assert model.auxiliary and model.manual_denoising
  logits, aux = jax.jit(model.apply)(variables, jnp.asarray(x))   # jit: faster than eager here
  assert aux is None
  assert np.abs(ref).max() > 0.1   # not a degenerate comparison
  np.testing.assert_allclose(np.asarray(logits), ref, atol=1e-4, rtol=0)
  # The auxiliary head (training only in both codes) is converted too.
  head_ref = net.auxiliary_head.classifier.weight.detach().numpy().T
  np.testing.assert_array_equal(np.asarray(variables["params"]["auxiliary_head"]["Dense_0"][
      "kernel"]), head_ref)


def test_abandit_wrong_genotype_or_settings_name_the_key():
  net = NetworkCIFAR(4, 10, 6, True, _official_genotype(ALL_OPS_GENOTYPE), True)
  sd = net.state_dict()
  other = an.make_genotype([list(c) for c in ALL_OPS_GENOTYPE.cells[:5]]
                           + [[("conv_3x3", 0)] * 4])
  with pytest.raises(ConfigError, match=r"cells\.5\._ops\.0\.net\.1\.weight' \(expected shape "
                     r"\(16, 16, 3, 3\)\)"):
    ow.abandit_network_from_torch(sd, other)
  with pytest.raises(ConfigError, match=r"does not use: .*denoseblock"):
    ow.abandit_network_from_torch(sd, ALL_OPS_GENOTYPE, manual_denoising=False)
  bad = dict(sd)
  bad["classifier.weight"] = torch.zeros(10, 7)
  with pytest.raises(ConfigError, match=r"'classifier\.weight' has shape \(10, 7\), the model "
                     r"expects \(10, 64\)"):
    ow.convert_abandit_network(bad, an.AbanditNetwork(ALL_OPS_GENOTYPE, C=4, layers=6))
  with pytest.raises(ConfigError, match="Unknown genotype"):
    ow.abandit_network_from_torch(sd, "ABANDIT_CIFAR_9")


@pytest.mark.slow
@pytest.mark.parametrize("name,mannul", [("ABANDIT_CIFAR_1", True), ("ABANDIT_CIFAR_2", False)])
def test_abandit_released_layouts_match_pytorch(tmp_path, name, mannul):
  """The released networks' layout (10 layers, a,a,b,b,c,d,d,e,f,f), at a small C."""
  genotype = an.GENOTYPES[name]
  net, x, ref = _abandit_case(genotype, C=8, layers=10, mannul=mannul, seed=5)
  path = tmp_path / f"{name}.pth.tar"
  torch.save({"model": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
  model, variables = ow.abandit_network_from_torch(path, name)
  assert model.manual_denoising == mannul and model.layers == 10
  logits, _ = jax.jit(model.apply)(variables, jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(logits), ref, atol=1e-4, rtol=0)
