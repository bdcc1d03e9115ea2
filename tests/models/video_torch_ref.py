"""PyTorch transcriptions of the official 3-D video backbones, for `video_test.py`.

Written from FingerRec/DSM-decoupling-scene-motion (`src/model/c3d.py`, `r3d.py`, `r2p1d.py`,
`i3d.py`) and torchvision (`torchvision/models/video/resnet.py`): the same layers, strides,
paddings and heads, without the pretraining heads and unused members. Submodules carry the
names of the JAX modules (a dotted torch name is the JAX parameter path), so `to_flax` copies
weights by name. The DSM models return `log_softmax` like the official forwards; `features`
returns the globally pooled backbone output (the official `id_head`'s pool and flatten).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class ConvBN(nn.Module):
  """Conv3d, optional BatchNorm3d, optional ReLU (`Unit3Dpy`, C3D's and the stems' triples)."""

  def __init__(self, cin, cout, k, stride=1, padding=0, bias=False, bn=True, relu=True):
    super().__init__()
    self.conv = nn.Conv3d(cin, cout, k, stride=stride, padding=padding, bias=bias)
    self.bn = nn.BatchNorm3d(cout) if bn else None
    self.relu = relu

  def forward(self, x):
    x = self.conv(x)
    if self.bn is not None:
      x = self.bn(x)
    return F.relu(x) if self.relu else x


# ---------------------------------------------------------------- C3D (DSM src/model/c3d.py)
class C3D(nn.Module):
  def __init__(self, num_classes=101):
    super().__init__()
    for name, cin, cout in (("conv1", 3, 64), ("conv2", 64, 128), ("conv3a", 128, 256),
                            ("conv3b", 256, 256), ("conv4a", 256, 512), ("conv4b", 512, 512),
                            ("conv5a", 512, 512), ("conv5b", 512, 512)):
      self.add_module(name, ConvBN(cin, cout, 3, padding=1, bias=True))
    self.pool1 = nn.MaxPool3d((1, 2, 2), (1, 2, 2))
    self.pool = nn.MaxPool3d((2, 2, 2), (2, 2, 2))
    self.classifier = nn.Linear(512, num_classes)

  def features(self, x):
    x = self.pool1(self.conv1(x))
    x = self.pool(self.conv2(x))
    x = self.pool(self.conv3b(self.conv3a(x)))
    x = self.pool(self.conv4b(self.conv4a(x)))
    x = self.conv5b(self.conv5a(x))
    return F.adaptive_avg_pool3d(x, 1).flatten(1)

  def forward(self, x):
    return F.log_softmax(self.classifier(self.features(x)), dim=1)


# ------------------------------------------------------- R3D, Hara's layout (DSM src/model/r3d.py)
class HaraBlock(nn.Module):
  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = nn.Conv3d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm3d(cout)
    self.conv2 = nn.Conv3d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm3d(cout)
    self.downsample = None
    if stride != 1 or cin != cout:  # shortcut_type "B"
      self.downsample = nn.Conv3d(cin, cout, 1, stride, bias=False)
      self.downsample_bn = nn.BatchNorm3d(cout)

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    res = x if self.downsample is None else self.downsample_bn(self.downsample(x))
    return F.relu(out + res)


class R3DHara(nn.Module):
  def __init__(self, layers=(2, 2, 2, 2), num_classes=400, sample_size=112, sample_duration=16):
    super().__init__()
    self.stem = ConvBN(3, 64, 7, (1, 2, 2), 3)
    self.maxpool = nn.MaxPool3d(3, 2, 1)
    _make_stages(self, layers, HaraBlock)
    last_duration = int(math.ceil(sample_duration / 16))
    self.last_size = int(math.ceil(sample_size / 32))
    self.classifier = nn.Conv3d(512, num_classes, (last_duration, 1, 1), bias=False)  # `cp`

  def backbone(self, x):
    return _run_stages(self, self.maxpool(self.stem(x)))

  def features(self, x):
    return F.adaptive_avg_pool3d(self.backbone(x), 1).flatten(1)

  def forward(self, x):
    x = F.avg_pool3d(self.backbone(x), (1, self.last_size, self.last_size), stride=1)
    x = self.classifier(x).squeeze(3).squeeze(3).mean(2)
    return F.log_softmax(x, dim=1)


def _make_stages(net, layers, block, **kw):
  cin = 64
  for s, blocks in enumerate(layers):
    cout = 64 * 2**s
    for b in range(blocks):
      net.add_module(f"stage{s + 1}_block{b}",
                     block(cin, cout, 2 if s > 0 and b == 0 else 1, **kw))
      cin = cout
  net.stage_names = [n for n, _ in net.named_children() if n.startswith("stage")]


def _run_stages(net, x):
  for name in net.stage_names:
    x = getattr(net, name)(x)
  return x


# --------------------------------------------------- R(2+1)D of DSM (DSM src/model/r2p1d.py)
class SpatioTemporalConv(nn.Module):
  def __init__(self, cin, cout, k, stride=1, padding=0):
    super().__init__()
    k, stride, padding = ((v,) * 3 if isinstance(v, int) else v for v in (k, stride, padding))
    mid = int(math.floor(k[0] * k[1] * k[2] * cin * cout / (k[1] * k[2] * cin + k[0] * cout)))
    self.spatial = nn.Conv3d(cin, mid, (1, k[1], k[2]), (1, stride[1], stride[2]),
                             (0, padding[1], padding[2]), bias=False)
    self.spatial_bn = nn.BatchNorm3d(mid)
    self.temporal = nn.Conv3d(mid, cout, (k[0], 1, 1), (stride[0], 1, 1), (padding[0], 0, 0),
                              bias=False)

  def forward(self, x):
    return self.temporal(F.relu(self.spatial_bn(self.spatial(x))))


class DsmR2p1Block(nn.Module):
  def __init__(self, cin, cout, stride):
    super().__init__()
    self.downsample = None
    if stride != 1:  # the official `downsample` flag: stages 2-4, first block
      self.downsample = SpatioTemporalConv(cin, cout, 1, stride=2)
      self.downsample_bn = nn.BatchNorm3d(cout)
    self.conv1 = SpatioTemporalConv(cin, cout, 3, stride=stride, padding=1)
    self.bn1 = nn.BatchNorm3d(cout)
    self.conv2 = SpatioTemporalConv(cout, cout, 3, padding=1)
    self.bn2 = nn.BatchNorm3d(cout)

  def forward(self, x):
    res = F.relu(self.bn1(self.conv1(x)))
    res = self.bn2(self.conv2(res))
    if self.downsample is not None:
      x = self.downsample_bn(self.downsample(x))
    return F.relu(x + res)


class R2Plus1DDsm(nn.Module):
  def __init__(self, layers=(1, 1, 1, 1), num_classes=101):
    super().__init__()
    self.stem = SpatioTemporalConv(3, 64, (3, 7, 7), (1, 2, 2), (1, 3, 3))
    self.stem_bn = nn.BatchNorm3d(64)
    _make_stages(self, layers, DsmR2p1Block)
    self.classifier = nn.Linear(512, num_classes)

  def features(self, x):
    x = _run_stages(self, F.relu(self.stem_bn(self.stem(x))))
    return F.adaptive_avg_pool3d(x, 1).flatten(1)

  def forward(self, x):
    return F.log_softmax(self.classifier(self.features(x)), dim=1)


# ----------------------------------------- torchvision video ResNets (r3d_18, r2plus1d_18)
class Conv2Plus1D(nn.Module):
  def __init__(self, cin, cout, mid, stride=1):
    super().__init__()
    self.spatial = nn.Conv3d(cin, mid, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False)
    self.spatial_bn = nn.BatchNorm3d(mid)
    self.temporal = nn.Conv3d(mid, cout, (3, 1, 1), (stride, 1, 1), (1, 0, 0), bias=False)

  def forward(self, x):
    return self.temporal(F.relu(self.spatial_bn(self.spatial(x))))


class TvBlock(nn.Module):
  def __init__(self, cin, cout, stride, factorized):
    super().__init__()
    mid = (cin * cout * 3 * 3 * 3) // (cin * 3 * 3 + 3 * cout)
    if factorized:  # both convs take the middle width of (cin, cout)
      self.conv1 = Conv2Plus1D(cin, cout, mid, stride)
    else:
      self.conv1 = nn.Conv3d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm3d(cout)
    self.conv2 = Conv2Plus1D(cout, cout, mid) if factorized else nn.Conv3d(cout, cout, 3, 1, 1,
                                                                           bias=False)
    self.bn2 = nn.BatchNorm3d(cout)
    self.downsample = None
    if stride != 1 or cin != cout:
      self.downsample = nn.Conv3d(cin, cout, 1, stride, bias=False)
      self.downsample_bn = nn.BatchNorm3d(cout)

  def forward(self, x):
    out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
    res = x if self.downsample is None else self.downsample_bn(self.downsample(x))
    return F.relu(out + res)


class TvVideoResNet(nn.Module):
  def __init__(self, factorized, layers=(2, 2, 2, 2), num_classes=400):
    super().__init__()
    if factorized:  # R2Plus1dStem: (1, 7, 7) to 45 channels, BN, ReLU, (3, 1, 1) to 64, BN, ReLU
      self.stem = Conv2Plus1D(3, 64, 45)
      self.stem.spatial = nn.Conv3d(3, 45, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False)
      self.stem_bn = nn.BatchNorm3d(64)
    else:  # BasicStem
      self.stem = ConvBN(3, 64, (3, 7, 7), (1, 2, 2), (1, 3, 3))
      self.stem_bn = None
    _make_stages(self, layers, TvBlock, factorized=factorized)
    self.classifier = nn.Linear(512, num_classes)

  def features(self, x):
    x = self.stem(x)
    if self.stem_bn is not None:
      x = F.relu(self.stem_bn(x))
    return F.adaptive_avg_pool3d(_run_stages(self, x), 1).flatten(1)

  def forward(self, x):
    return self.classifier(self.features(x))


# ----------------------------------------------------------------- I3D (DSM src/model/i3d.py)
def get_padding_shape(filter_shape, stride):
  """As the official function: TF-SAME (low, high) per axis, depth last (ConstantPad3d order)."""
  shape = []
  for k, s in zip(filter_shape, stride):
    along = max(k - s, 0)
    shape += [along // 2, along - along // 2]
  return tuple(shape[2:] + shape[:2])


class Unit3Dpy(nn.Module):
  def __init__(self, cin, cout, k=(1, 1, 1), stride=(1, 1, 1)):
    super().__init__()
    shape = get_padding_shape(k, stride)
    # Symmetric: the conv's own padding; otherwise ConstantPad3d first (the stem's (2, 3)).
    self.pad = None if len(set(shape)) == 1 else shape
    self.conv = nn.Conv3d(cin, cout, k, stride, padding=shape[0] if self.pad is None else 0,
                          bias=False)
    self.bn = nn.BatchNorm3d(cout)

  def forward(self, x):
    if self.pad is not None:
      x = F.pad(x, self.pad)
    return F.relu(self.bn(self.conv(x)))


def tf_max_pool(x, k, s):
  return F.max_pool3d(F.pad(x, get_padding_shape(k, s)), k, s, ceil_mode=True)


class Mixed(nn.Module):
  def __init__(self, cin, w):
    super().__init__()
    self.branch_0 = Unit3Dpy(cin, w[0])
    self.branch_1_0 = Unit3Dpy(cin, w[1])
    self.branch_1_1 = Unit3Dpy(w[1], w[2], (3, 3, 3))
    self.branch_2_0 = Unit3Dpy(cin, w[3])
    self.branch_2_1 = Unit3Dpy(w[3], w[4], (3, 3, 3))
    self.branch_3 = Unit3Dpy(cin, w[5])

  def forward(self, x):
    return torch.cat([self.branch_0(x), self.branch_1_1(self.branch_1_0(x)),
                      self.branch_2_1(self.branch_2_0(x)),
                      self.branch_3(tf_max_pool(x, (3, 3, 3), (1, 1, 1)))], 1)


I3D_MIXED = (("mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
             ("mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
             ("mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
             ("mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
             ("mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
             ("mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
             ("mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
             ("mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
             ("mixed_5c", 832, (384, 192, 384, 48, 128, 128)))


class I3D(nn.Module):
  def __init__(self, num_classes=400):
    super().__init__()
    self.conv3d_1a_7x7 = Unit3Dpy(3, 64, (7, 7, 7), (2, 2, 2))
    self.conv3d_2b_1x1 = Unit3Dpy(64, 64)
    self.conv3d_2c_3x3 = Unit3Dpy(64, 192, (3, 3, 3))
    for name, cin, widths in I3D_MIXED:
      self.add_module(name, Mixed(cin, widths))
    # conv3d_0c_1x1_custom: Unit3Dpy(1024, classes, (7, 1, 1), no bias, BN or activation).
    self.classifier = nn.Conv3d(1024, num_classes, (7, 1, 1), bias=False)

  def backbone(self, x):
    x = tf_max_pool(self.conv3d_1a_7x7(x), (1, 3, 3), (1, 2, 2))
    x = self.conv3d_2c_3x3(self.conv3d_2b_1x1(x))
    x = tf_max_pool(x, (1, 3, 3), (1, 2, 2))
    for name, _, _ in I3D_MIXED:
      if name == "mixed_4b":
        x = tf_max_pool(x, (3, 3, 3), (2, 2, 2))
      elif name == "mixed_5b":
        x = tf_max_pool(x, (2, 2, 2), (2, 2, 2))
      x = getattr(self, name)(x)
    return x

  def features(self, x):
    return F.adaptive_avg_pool3d(self.backbone(x), 1).flatten(1)

  def forward(self, x):
    x = self.backbone(x)
    # The official AvgPool3d((2, 7, 7), 1); clipped to the map below 224x224 as in the JAX model.
    x = F.avg_pool3d(x, tuple(min(k, d) for k, d in zip((2, 7, 7), x.shape[2:])), stride=1)
    x = self.classifier(F.pad(x, get_padding_shape((7, 1, 1), (1, 1, 1))))
    x = x.mean(dim=(2, 3, 4))  # squeeze(3).squeeze(3).mean(2) at 224x224
    return F.log_softmax(x, dim=1)


# --------------------------------------------------------------------------- weight copying
def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
  """Random weights and BN statistics (default init has unit BN, which hides layout bugs)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in module.modules():
      if isinstance(m, (nn.Conv3d, nn.Linear)):
        fan_in = m.weight[0].numel()
        m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in))
        if m.bias is not None:
          m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
      elif isinstance(m, nn.BatchNorm3d):
        m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=gen))
        m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
        m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=gen))
        m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
  return module


def to_flax(module: nn.Module, dtype=np.float32) -> dict:
  """{"params", "batch_stats"} of `module`: OIDHW -> DHWIO kernels, (out, in) -> (in, out)."""
  params, stats = {}, {}

  def put(tree, name, key, value):
    node = tree
    for part in name.split("."):
      node = node.setdefault(part, {})
    node[key] = np.asarray(value.detach().numpy(), dtype)

  for name, m in module.named_modules():
    if isinstance(m, nn.Conv3d):
      put(params, name, "kernel", m.weight.permute(2, 3, 4, 1, 0))
    elif isinstance(m, nn.Linear):
      put(params, name, "kernel", m.weight.t())
    elif isinstance(m, nn.BatchNorm3d):
      put(params, name, "scale", m.weight)
      put(stats, name, "mean", m.running_mean)
      put(stats, name, "var", m.running_var)
    if isinstance(m, (nn.Conv3d, nn.Linear, nn.BatchNorm3d)) and m.bias is not None:
      put(params, name, "bias", m.bias)
  return {"params": params, "batch_stats": stats}


def n_params(module: nn.Module) -> int:
  return sum(p.numel() for p in module.parameters())
