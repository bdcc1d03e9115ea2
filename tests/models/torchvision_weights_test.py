"""Tests for jaxcompress.models.torchvision_weights against PyTorch transcriptions of torchvision.

torchvision is not a dependency, so the architectures below are compact transcriptions of
torchvision's `models/resnet.py`, `models/mobilenetv2.py` and `models/densenet.py` with the same
module names (hence the same state_dict keys). Each test randomises the weights AND the
BatchNorm running statistics, saves the state_dict with torch.save, converts it and compares
eval-mode logits with PyTorch's on a random image.
"""
from __future__ import annotations

import collections
import re
import sys

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from jaxcompress import models  # noqa: E402
from jaxcompress.errors import ConfigError  # noqa: E402
from jaxcompress.models import torchvision_weights as tvw  # noqa: E402

# ---- torchvision transcriptions ---------------------------------------------------------------

def conv3x3(cin, cout, stride=1, groups=1):
  return nn.Conv2d(cin, cout, 3, stride, padding=1, groups=groups, bias=False)


def conv1x1(cin, cout, stride=1):
  return nn.Conv2d(cin, cout, 1, stride, bias=False)


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64):
    super().__init__()
    self.conv1 = conv3x3(inplanes, planes, stride)
    self.bn1 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU(inplace=True)
    self.conv2 = conv3x3(planes, planes)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu(out + identity)


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64):
    super().__init__()
    width = int(planes * (base_width / 64.0)) * groups
    self.conv1 = conv1x1(inplanes, width)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = conv3x3(width, width, stride, groups)  # v1.5: stride on the 3x3
    self.bn2 = nn.BatchNorm2d(width)
    self.conv3 = conv1x1(width, planes * self.expansion)
    self.bn3 = nn.BatchNorm2d(planes * self.expansion)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return self.relu(out + identity)


class ResNet(nn.Module):

  def __init__(self, block, layers, num_classes=1000, groups=1, width_per_group=64):
    super().__init__()
    self.inplanes, self.groups, self.base_width = 64, groups, width_per_group
    self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    self.layer1 = self._make_layer(block, 64, layers[0])
    self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
    self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
    self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
    self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    self.fc = nn.Linear(512 * block.expansion, num_classes)

  def _make_layer(self, block, planes, blocks, stride=1):
    downsample = None
    if stride != 1 or self.inplanes != planes * block.expansion:
      downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                 nn.BatchNorm2d(planes * block.expansion))
    layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width)]
    self.inplanes = planes * block.expansion
    layers += [block(self.inplanes, planes, groups=self.groups, base_width=self.base_width)
               for _ in range(1, blocks)]
    return nn.Sequential(*layers)

  def forward(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return self.fc(torch.flatten(self.avgpool(x), 1))


def conv_bn_act(cin, cout, kernel=3, stride=1, groups=1):
  """torchvision.ops.Conv2dNormActivation with BatchNorm2d and ReLU6."""
  return nn.Sequential(
      nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
      nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):

  def __init__(self, inp, oup, stride, expand_ratio):
    super().__init__()
    hidden = int(round(inp * expand_ratio))
    self.use_res_connect = stride == 1 and inp == oup
    layers = [conv_bn_act(inp, hidden, kernel=1)] if expand_ratio != 1 else []
    layers += [conv_bn_act(hidden, hidden, stride=stride, groups=hidden),
               nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
    self.conv = nn.Sequential(*layers)

  def forward(self, x):
    return x + self.conv(x) if self.use_res_connect else self.conv(x)


def _make_divisible(v, divisor=8):
  new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
  return new_v + divisor if new_v < 0.9 * v else new_v


class MobileNetV2(nn.Module):

  def __init__(self, num_classes=1000, width_mult=1.0):
    super().__init__()
    setting = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1],
               [6, 160, 3, 2], [6, 320, 1, 1]]
    cin = _make_divisible(32 * width_mult)
    self.last_channel = _make_divisible(1280 * max(1.0, width_mult))
    features = [conv_bn_act(3, cin, stride=2)]
    for t, c, n, s in setting:
      cout = _make_divisible(c * width_mult)
      for i in range(n):
        features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
        cin = cout
    features.append(conv_bn_act(cin, self.last_channel, kernel=1))
    self.features = nn.Sequential(*features)
    self.classifier = nn.Sequential(nn.Dropout(p=0.2), nn.Linear(self.last_channel, num_classes))

  def forward(self, x):
    x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
    return self.classifier(torch.flatten(x, 1))


class _DenseLayer(nn.Module):

  def __init__(self, cin, growth_rate, bn_size):
    super().__init__()
    self.norm1 = nn.BatchNorm2d(cin)
    self.relu1 = nn.ReLU(inplace=True)
    self.conv1 = nn.Conv2d(cin, bn_size * growth_rate, 1, 1, bias=False)
    self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
    self.relu2 = nn.ReLU(inplace=True)
    self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, 1, padding=1, bias=False)

  def forward(self, features):
    x = torch.cat(features, 1)
    return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class _DenseBlock(nn.ModuleDict):

  def __init__(self, num_layers, cin, bn_size, growth_rate):
    super().__init__()
    for i in range(num_layers):
      self.add_module(f"denselayer{i + 1}", _DenseLayer(cin + i * growth_rate, growth_rate,
                                                        bn_size))

  def forward(self, x):
    features = [x]
    for layer in self.values():
      features.append(layer(features))
    return torch.cat(features, 1)


class _Transition(nn.Sequential):

  def __init__(self, cin, cout):
    super().__init__()
    self.norm = nn.BatchNorm2d(cin)
    self.relu = nn.ReLU(inplace=True)
    self.conv = nn.Conv2d(cin, cout, 1, 1, bias=False)
    self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


class DenseNet(nn.Module):

  def __init__(self, growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64,
               bn_size=4, num_classes=1000):
    super().__init__()
    self.features = nn.Sequential(collections.OrderedDict([
        ("conv0", nn.Conv2d(3, num_init_features, 7, 2, 3, bias=False)),
        ("norm0", nn.BatchNorm2d(num_init_features)), ("relu0", nn.ReLU(inplace=True)),
        ("pool0", nn.MaxPool2d(3, 2, 1))]))
    n = num_init_features
    for i, num_layers in enumerate(block_config):
      self.features.add_module(f"denseblock{i + 1}", _DenseBlock(num_layers, n, bn_size,
                                                                 growth_rate))
      n += num_layers * growth_rate
      if i != len(block_config) - 1:
        self.features.add_module(f"transition{i + 1}", _Transition(n, n // 2))
        n //= 2
    self.features.add_module("norm5", nn.BatchNorm2d(n))
    self.classifier = nn.Linear(n, num_classes)

  def forward(self, x):
    x = nn.functional.relu(self.features(x))
    x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
    return self.classifier(torch.flatten(x, 1))


class BasicConv2d(nn.Module):

  def __init__(self, cin, cout, **kwargs):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
    self.bn = nn.BatchNorm2d(cout, eps=0.001)

  def forward(self, x):
    return nn.functional.relu(self.bn(self.conv(x)))


def _avg3(x):
  return nn.functional.avg_pool2d(x, kernel_size=3, stride=1, padding=1)


class InceptionA(nn.Module):

  def __init__(self, cin, pool_features):
    super().__init__()
    self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
    self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
    self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
    self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
    self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

  def forward(self, x):
    return torch.cat([
        self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
        self.branch_pool(_avg3(x))], 1)


class InceptionB(nn.Module):

  def __init__(self, cin):
    super().__init__()
    self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
    self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

  def forward(self, x):
    return torch.cat([
        self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
        nn.functional.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):

  def __init__(self, cin, c7):
    super().__init__()
    self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
    self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
    self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
    self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
    self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
    self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
    self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

  def forward(self, x):
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    bd = self.branch7x7dbl_1(x)
    for i in range(2, 6):
      bd = getattr(self, f"branch7x7dbl_{i}")(bd)
    return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_avg3(x))], 1)


class InceptionD(nn.Module):

  def __init__(self, cin):
    super().__init__()
    self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
    self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
    self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
    self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
    self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

  def forward(self, x):
    b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
    return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7,
                      nn.functional.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):

  def __init__(self, cin):
    super().__init__()
    self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
    self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
    self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
    self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
    self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
    self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
    self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
    self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
    self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

  def forward(self, x):
    b3 = self.branch3x3_1(x)
    b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
    bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
    return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(_avg3(x))], 1)


class InceptionAux(nn.Module):

  def __init__(self, cin, num_classes):
    super().__init__()
    self.conv0 = BasicConv2d(cin, 128, kernel_size=1)
    self.conv1 = BasicConv2d(128, 768, kernel_size=5)
    self.fc = nn.Linear(768, num_classes)

  def forward(self, x):
    x = self.conv1(self.conv0(nn.functional.avg_pool2d(x, kernel_size=5, stride=3)))
    return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, (1, 1)), 1))


class Inception3(nn.Module):

  def __init__(self, num_classes=1000, aux_logits=True, transform_input=False):
    super().__init__()
    self.transform_input = transform_input
    self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
    self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
    self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
    self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
    self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
    self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
    self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
    self.Mixed_5b = InceptionA(192, pool_features=32)
    self.Mixed_5c = InceptionA(256, pool_features=64)
    self.Mixed_5d = InceptionA(288, pool_features=64)
    self.Mixed_6a = InceptionB(288)
    self.Mixed_6b = InceptionC(768, c7=128)
    self.Mixed_6c = InceptionC(768, c7=160)
    self.Mixed_6d = InceptionC(768, c7=160)
    self.Mixed_6e = InceptionC(768, c7=192)
    self.AuxLogits = InceptionAux(768, num_classes) if aux_logits else None
    self.Mixed_7a = InceptionD(768)
    self.Mixed_7b = InceptionE(1280)
    self.Mixed_7c = InceptionE(2048)
    self.fc = nn.Linear(2048, num_classes)

  def forward(self, x):
    if self.transform_input:
      x = torch.cat([x[:, 0:1] * (0.229 / 0.5) + (0.485 - 0.5) / 0.5,
                     x[:, 1:2] * (0.224 / 0.5) + (0.456 - 0.5) / 0.5,
                     x[:, 2:3] * (0.225 / 0.5) + (0.406 - 0.5) / 0.5], 1)
    x = self.maxpool1(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))))
    x = self.maxpool2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
    for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e"):
      x = getattr(self, f"Mixed_{name}")(x)
    aux = self.AuxLogits(x) if self.AuxLogits is not None and self.training else None
    x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
    x = self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, (1, 1)), 1))
    return (x, aux) if self.training else x


# ---- helpers ----------------------------------------------------------------------------------

def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
  """Random weights and BatchNorm statistics (a fresh model's mean 0 / var 1 would hide a swap)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, t in model.state_dict().items():
      if name.endswith("num_batches_tracked"):
        t.fill_(7)
      elif name.endswith("running_var"):
        t.copy_(0.5 + torch.rand(t.shape, generator=g))
      elif name.endswith("running_mean"):
        t.copy_(0.2 * torch.randn(t.shape, generator=g))
      elif t.dim() == 1:  # BN weight/bias, linear bias
        t.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn(t.shape, generator=g))
      else:  # He-scaled so activations stay O(1) through deep nets
        fan_in = t[0].numel()
        t.copy_(torch.randn(t.shape, generator=g) * (1.0 / fan_in) ** 0.5)
  return model.eval()


def check_logits(arch: str, torch_model: nn.Module, tmp_path, size: int = 64, **kwargs) -> None:
  torch_model = randomise(torch_model)
  path = tmp_path / f"{arch}.pth"
  torch.save(torch_model.state_dict(), path)
  variables = tvw.convert_torchvision(arch, str(path), **kwargs)
  x = np.random.RandomState(1).standard_normal((2, 3, size, size)).astype(np.float32)
  with torch.no_grad():
    expected = torch_model(torch.from_numpy(x)).numpy()
  num_classes = expected.shape[1]
  model = tvw.torchvision_model(arch, num_classes=num_classes,
                                **{k: v for k, v in kwargs.items() if k != "num_classes"})
  # One compiled program: eager apply would compile every layer's kernels one by one.
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  got = np.asarray(apply(variables, x.transpose(0, 2, 3, 1)))
  assert got.shape == expected.shape
  n_params = sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(variables["params"]))
  assert n_params == sum(p.numel() for p in torch_model.parameters())
  assert np.abs(expected).max() > 1e-2  # a dead network would match trivially
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


# ---- logits ------------------------------------------------------------------------------------

def test_resnet18_logits_match_torch(tmp_path):
  check_logits("resnet18", ResNet(BasicBlock, [2, 2, 2, 2], num_classes=10), tmp_path)


def test_resnet50_blocks_logits_match_torch(tmp_path):
  # ResNet-50's bottleneck blocks, one or two per stage (the full depth is the slow test below).
  check_logits("resnet50", ResNet(Bottleneck, [2, 1, 1, 1], num_classes=10), tmp_path,
               stage_sizes=(2, 1, 1, 1))


@pytest.mark.slow
def test_resnet50_logits_match_torch(tmp_path):
  check_logits("resnet50", ResNet(Bottleneck, [3, 4, 6, 3], num_classes=10), tmp_path)


@pytest.mark.slow
def test_resnext50_32x4d_logits_match_torch(tmp_path):
  check_logits("resnext50_32x4d", ResNet(Bottleneck, [3, 4, 6, 3], num_classes=10, groups=32,
                                         width_per_group=4), tmp_path)


def test_mobilenet_v2_logits_match_torch(tmp_path):
  check_logits("mobilenet_v2", MobileNetV2(num_classes=10), tmp_path)


def test_densenet_logits_match_torch(tmp_path):
  # DenseNet-121's layers with fewer of them (the full depth is the slow test below).
  check_logits("densenet121", DenseNet(block_config=(2, 3, 2, 2), num_classes=10), tmp_path,
               block_config=(2, 3, 2, 2))


@pytest.mark.slow
def test_densenet121_logits_match_torch(tmp_path):
  check_logits("densenet121", DenseNet(num_classes=10), tmp_path)


def test_densenet_legacy_keys_and_data_parallel_prefix():
  # torchvision's DenseNet weight files name "denselayer1.norm.1.weight" for "norm1.weight";
  # DataParallel checkpoints prefix every key with "module.".
  state = {k: v.numpy() for k, v in randomise(DenseNet(block_config=(1, 1, 1, 1),
                                                       num_classes=3)).state_dict().items()}
  legacy = {"module." + re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v
            for k, v in state.items()}
  assert "module.features.denseblock1.denselayer1.norm.1.weight" in legacy
  variables = tvw.convert_torchvision("densenet121", legacy, block_config=(1, 1, 1, 1))
  layer = variables["params"]["denseblock2"]["denselayer1"]
  np.testing.assert_array_equal(layer["norm1"]["scale"],
                                state["features.denseblock2.denselayer1.norm1.weight"])
  np.testing.assert_array_equal(
      layer["conv2"]["kernel"],
      state["features.denseblock2.denselayer1.conv2.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(variables["params"]["classifier"]["kernel"],
                                state["classifier.weight"].T)


@pytest.mark.slow
def test_inception_v3_logits_match_torch(tmp_path):
  # transform_input as torchvision's pretrained inception_v3; 75x75 is the smallest input.
  check_logits("inception_v3", Inception3(num_classes=10, transform_input=True), tmp_path,
               size=75, transform_input=True)


# ---- errors ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def resnet18_state():
  model = randomise(ResNet(BasicBlock, [2, 2, 2, 2], num_classes=10))
  return {k: v.numpy() for k, v in model.state_dict().items()}


def test_missing_key_names_key_and_shape(resnet18_state):
  state = dict(resnet18_state)
  del state["layer2.0.downsample.1.running_var"]
  with pytest.raises(ConfigError, match=r"'layer2\.0\.downsample\.1\.running_var' "
                                        r"\(expected shape \(128,\)\)"):
    tvw.convert_torchvision("resnet18", state)


def test_wrong_shape_names_key_and_expected_shape(resnet18_state):
  state = dict(resnet18_state)
  state["layer1.0.conv1.weight"] = np.zeros((32, 64, 3, 3), np.float32)
  with pytest.raises(ConfigError, match=r"'layer1\.0\.conv1\.weight' has shape \(32, 64, 3, 3\), "
                                        r"the model expects \(64, 64, 3, 3\)"):
    tvw.convert_torchvision("resnet18", state)


def test_extra_key_and_wrong_arch_are_rejected(resnet18_state):
  state = dict(resnet18_state, **{"layer5.0.conv1.weight": np.zeros((1, 1, 3, 3), np.float32)})
  with pytest.raises(ConfigError, match=r"'layer5\.0\.conv1\.weight'"):
    tvw.convert_torchvision("resnet18", state)
  # A ResNet-18 checkpoint is not a ResNet-34 one: layer1.2 is missing.
  with pytest.raises(ConfigError, match=r"'layer1\.2\.bn1\.bias' \(expected shape \(64,\)\)"):
    tvw.convert_torchvision("resnet34", resnet18_state)
  with pytest.raises(ConfigError, match="Unknown torchvision architecture 'resnet19'"):
    tvw.convert_torchvision("resnet19", resnet18_state)


def test_num_classes_mismatch_names_classifier(resnet18_state):
  with pytest.raises(ConfigError, match=r"'fc\.weight' has shape \(10, 512\), the model expects "
                                        r"\(1000, 512\)"):
    tvw.convert_torchvision("resnet18", resnet18_state, num_classes=1000)


@pytest.mark.slow
def test_inception_v3_training_aux_logits_match_torch():
  # In training torchvision returns (logits, aux_logits) with batch-statistics BatchNorm; the
  # jaxcompress model sows the auxiliary logits.
  torch_model = randomise(Inception3(num_classes=5)).train()
  state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
  variables = tvw.convert_torchvision("inception_v3", state)
  x = np.random.RandomState(2).standard_normal((2, 3, 299, 299)).astype(np.float32)
  with torch.no_grad():
    logits, aux = (t.numpy() for t in torch_model(torch.from_numpy(x)))
  model = tvw.torchvision_model("inception_v3", num_classes=5)
  got, updates = jax.jit(lambda v, x: model.apply(
      v, x, train=True, mutable=["batch_stats", "intermediates"]))(variables,
                                                                   x.transpose(0, 2, 3, 1))
  np.testing.assert_allclose(np.asarray(got), logits, rtol=1e-4, atol=1e-4)
  (got_aux,) = updates["intermediates"]["aux_logits"]
  np.testing.assert_allclose(np.asarray(got_aux), aux, rtol=1e-4, atol=1e-4)


def test_inception_aux_logits_dropped_or_required():
  # aux_logits=False drops torchvision's AuxLogits.* entries; a checkpoint without them needs it.
  state = {k: v.numpy() for k, v in Inception3(num_classes=4).state_dict().items()}
  variables = tvw.convert_torchvision("inception_v3", state, aux_logits=False)
  assert "AuxLogits" not in variables["params"]
  no_aux = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
  with pytest.raises(ConfigError, match="pass aux_logits=False"):
    tvw.convert_torchvision("inception_v3", no_aux)


def test_path_without_torch_asks_for_torch(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
  with pytest.raises(ConfigError, match="pip install torch to read .pth files"):
    tvw.convert_torchvision("resnet18", str(tmp_path / "resnet18.pth"))


def test_missing_file_is_a_config_error(tmp_path):
  with pytest.raises(ConfigError, match="does not exist"):
    tvw.convert_torchvision("resnet18", str(tmp_path / "absent.pth"))


# torchvision's documented parameter counts (the `num_params` of each weights enum).
_slow = pytest.mark.slow


@pytest.mark.parametrize("arch, expected", [
    # resnet18/34 are also counted by resnet_imagenet_test, MobileNetV2's full model by its
    # logits test; the rest only once here.
    pytest.param("resnet18", 11_689_512, marks=_slow),
    pytest.param("resnet34", 21_797_672, marks=_slow), ("resnet50", 25_557_032),
    pytest.param("resnet101", 44_549_160, marks=_slow),
    pytest.param("resnet152", 60_192_808, marks=_slow),
    pytest.param("resnext50_32x4d", 25_028_904, marks=_slow),
    pytest.param("wide_resnet50_2", 68_883_240, marks=_slow),
    pytest.param("mobilenet_v2", 3_504_872, marks=_slow), ("densenet121", 7_978_856),
    pytest.param("densenet161", 28_681_000, marks=_slow),
    pytest.param("densenet169", 14_149_480, marks=_slow),
    pytest.param("densenet201", 20_013_928, marks=_slow),
    ("inception_v3", 27_161_264)])
def test_param_counts_match_torchvision(arch, expected):
  model = models.build(arch, num_classes=1000)  # through the registry configs use
  size = 299 if arch == "inception_v3" else 224
  x = jax.ShapeDtypeStruct((1, size, size, 3), np.float32)
  shapes = jax.eval_shape(lambda v: model.init(jax.random.key(0), v, train=False), x)
  assert sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(shapes["params"])) == expected
