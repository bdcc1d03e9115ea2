"""CIFAR ResNets (He et al. 2016, arXiv 1512.03385) built through the layer factory.

* `ResNet20` (and `ResNet32`, ...): 3 stages of 16-32-64 channels with the option-A shortcut
  (stride-2 subsampling + zero channel padding), as in the paper's CIFAR experiments and in every
  binary-network paper that reports ResNet-20 (RBNN, IR-Net, LNS). `bireal=True` puts a shortcut
  around each convolution (Bi-Real Net, arXiv 1808.00278).
* `ResNet18`: 64-128-256-512 basic blocks with 1x1 projection shortcuts and a 3x3 stem (the
  kuangliu/pytorch-cifar layout that RBNN and IR-Net use for CIFAR ResNet-18).

`bn_before_classifier=True` adds the BatchNorm1d that RBNN's official CIFAR models place between
the global pool and the classifier.

Every batch norm is followed by the layer factory's gate slot (`factory.gate`; nothing by default),
each stage's output is sown as the feature tap "stage1", "stage2", ... (`factory.taps`), and
`CifarResNetA` takes per-layer widths (a pruned ResNet-20, see its `widths`).
"""
from __future__ import annotations

import functools
from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress.errors import ConfigError
from jaxcompress.models import factory

_DEFAULT_WIDTHS = (16, 32, 64)


def option_a_shortcut(x: jax.Array, features: int, strides: int) -> jax.Array:
  """Parameter-free shortcut: subsample spatially, zero-pad channels symmetrically (option A)."""
  if strides != 1:
    x = x[:, ::strides, ::strides, :]
  missing = features - x.shape[-1]
  if missing > 0:
    x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (missing // 2, missing - missing // 2)))
  return x


class BasicBlockA(nn.Module):
  """Two 3x3 convs with an option-A shortcut; `bireal` adds a shortcut per conv.

  Attributes:
    features: output channels (the stage's width).
    strides: stride of the first conv.
    layers: layer factory.
    bireal: Bi-Real shortcut around each conv.
    inner: output channels of the first conv (None: `features`); a pruned block narrows it.
      0: the first conv kept no channel, so the second conv sees zeros and the residual
      branch is the constant its batch norm makes of them; the block keeps only that norm
      (under its full-block name) and the shortcut.
  """
  features: int
  strides: int
  layers: factory.Layers
  bireal: bool = False
  inner: int | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    ly = self.layers
    inner = self.features if self.inner is None else self.inner
    shortcut = option_a_shortcut(x, self.features, self.strides)
    if inner == 0 and not self.bireal:
      z = ly.batch_norm(train, name="BatchNorm_1")(jnp.zeros_like(shortcut))
      return ly.act(factory.gate(ly, self.features, "gate2")(z) + shortcut)
    y = ly.batch_norm(train)(factory.conv3x3(ly, inner, self.strides)(x))
    y = factory.gate(ly, inner, "gate1")(y)
    if self.bireal:
      if inner != self.features:
        raise ConfigError(f"A Bi-Real block adds a shortcut around each conv, so its inner width "
                          f"({inner}) must equal its output width ({self.features}); leave "
                          "the block's conv1 out of widths or set bireal=False.")
      y = ly.act(y + shortcut)
      z = ly.batch_norm(train)(factory.conv3x3(ly, self.features)(y))
      return ly.act(factory.gate(ly, self.features, "gate2")(z) + y)
    y = ly.act(y)
    y = ly.batch_norm(train)(factory.conv3x3(ly, self.features)(y))
    y = factory.gate(ly, self.features, "gate2")(y)
    return ly.act(y + shortcut)


class CifarResNetA(nn.Module):
  """CIFAR ResNet-(6n+2) with option-A shortcuts (ResNet-20: n = 3).

  Attributes:
    num_classes: classifier outputs.
    depth: 6n + 2 (20, 32, 44, 56, 110).
    widths: channels of the three stages, or a mapping of per-layer widths (a pruned network)
      by role: "stage1".."stage3" (a stage's output channels; the stem has stage1's) and
      "stage{s}_block{b}/conv1" (a block's inner channels, b counted from 0; default: its
      stage's width; 0: a pruned block reduced to its shortcut and residual bias, see
      `BasicBlockA.inner`). Other roles left out keep the architecture's widths (16, 32, 64).
    layers: layer factory (float, binary, quantized ...).
    bireal: Bi-Real shortcut around every conv.
    bn_before_classifier: BatchNorm1d after global pooling (RBNN official models).
  """
  num_classes: int = 10
  depth: int = 20
  widths: Sequence[int] | Mapping[str, int] = (16, 32, 64)
  layers: factory.Layers = factory.FLOAT
  bireal: bool = False
  bn_before_classifier: bool = False

  def layer_widths(self) -> dict[str, int]:
    """Every width role of this depth with its resolved width (see `widths`).

    Returns:
      role -> output channels, for "stage1".."stage3" and every block's "conv1".

    Raises:
      ConfigError: when the depth is not 6n + 2 or `widths` names an unknown role.
    """
    if (self.depth - 2) % 6:
      raise ConfigError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {self.depth}.")
    blocks = (self.depth - 2) // 6
    mapping = hasattr(self.widths, "items")
    stages = _DEFAULT_WIDTHS if mapping else tuple(self.widths)
    given = dict(self.widths.items()) if mapping else {}
    defaults = {f"stage{s + 1}": w for s, w in enumerate(stages)}
    for s, w in enumerate(stages):
      defaults.update({f"stage{s + 1}_block{b}/conv1": w for b in range(blocks)})
    blocks = [role for role in defaults if "/" in role]
    out = factory.resolve_widths(given, defaults, "CifarResNetA", removable=blocks)
    for role in blocks:  # a block's inner width follows its stage unless given
      if role not in given:
        out[role] = out[role.split("_block")[0]]
    return out

  def prune_spec(self) -> factory.PruneSpec:
    """The channel roles for `jaxcompress.prune.materialize`.

    Each stage's stream ("stage{s}") is written by the stem's gate (stage 1) and every block's
    "gate2", DMAD's residual group rule (arXiv 2011.08382 Sec. 3) applied per stage; a block's
    "conv1" role is removable. The option-A shortcut carries stage s's channels into the
    middle of stage s+1's, so `arrange` also keeps the stage s+1 channels that receive a kept
    stage-s channel (the masked model passes them on even when every stage s+1 gate is off)
    and orders the kept channels so that the pruned model's symmetric zero padding puts them
    back in place.

    Raises:
      ConfigError: for `bireal` or `bn_before_classifier` models (their extra shortcuts and
        gate are not described).
    """
    if self.bireal or self.bn_before_classifier:
      raise ConfigError("CifarResNetA.prune_spec describes plain option-A ResNets; set "
                        "bireal=False and bn_before_classifier=False to materialize a pruned one.")
    widths = self.layer_widths()
    stages = [k for k in widths if "/" not in k]
    blocks = (self.depth - 2) // 6
    roles: dict[str, factory.PruneRole] = {}
    inputs: dict[str, tuple[str, ...]] = {}
    for s, stage in enumerate(stages):
      stream = {"stem_gate": ("stem", "BatchNorm_0")} if s == 0 else {}
      for b in range(blocks):
        name = f"{stage}_block{b}"
        stream[f"{name}/gate2"] = (f"{name}/Conv_1", f"{name}/BatchNorm_1")
        if widths[f"{name}/conv1"]:
          roles[f"{name}/conv1"] = factory.PruneRole(
              {f"{name}/gate1": (f"{name}/Conv_0", f"{name}/BatchNorm_0")}, removable=True)
          inputs[f"{name}/Conv_0"] = (stages[s - 1] if s and b == 0 else stage,)
          inputs[f"{name}/Conv_1"] = (f"{name}/conv1",)
      roles[stage] = factory.PruneRole(stream, residual=True)
    inputs["classifier"] = (stages[-1],)
    return factory.PruneSpec(roles, inputs, input_layer="stem", input_size=(32, 32),
                             arrange=functools.partial(_arrange_option_a, widths=widths,
                                                       stages=tuple(stages)))

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    tap = factory.tapper(self)  # feature taps by role (factory.taps)
    widths = self.layer_widths()
    blocks = (self.depth - 2) // 6
    stages = [k for k in widths if "/" not in k]
    ly = self.layers
    x = ly.first_conv(widths["stage1"], (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                      name="stem")(x)
    x = ly.act(factory.gate(ly, widths["stage1"], "stem_gate")(ly.batch_norm(train)(x)))
    for stage, role in enumerate(stages):
      for b in range(blocks):
        strides = 2 if stage > 0 and b == 0 else 1
        name = f"{role}_block{b}"
        x = BasicBlockA(widths[role], strides, ly, self.bireal, inner=widths[f"{name}/conv1"],
                        name=name)(x, train)
      tap(role, x)
    x = jnp.mean(x, axis=(1, 2))
    if self.bn_before_classifier:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x)
      x = factory.gate(ly, x.shape[-1], "classifier_gate")(x)
    return ly.last_dense(self.num_classes, name="classifier")(x)


def _arrange_option_a(keep: dict[str, np.ndarray], widths: Mapping[str, int],
                      stages: Sequence[str]) -> dict[str, np.ndarray]:
  """Stage keep-sets that survive `option_a_shortcut` (see `CifarResNetA.prune_spec`).

  The shortcut into stage s+1 pads stage s's W_s channels with (W_{s+1} - W_s) // 2 zero
  channels in front; kept stage-s channel i therefore lands on stage s+1 channel i + offset,
  which must stay. In the pruned model the same shortcut pads the n_s kept channels with
  (n_{s+1} - n_s) // 2 in front, so stage s+1 lists that many of its other channels first,
  then the received ones in stage s's order, then the rest.
  """
  keep = dict(keep)
  for prev, stage in zip(stages, stages[1:]):
    offset = (widths[stage] - widths[prev]) // 2
    received = np.asarray(keep[prev], np.int64) + offset
    others = np.setdiff1d(keep[stage], received)  # sorted
    front = len(others) // 2  # (n_{s+1} - n_s) // 2
    keep[stage] = np.concatenate([others[:front], received, others[front:]]).astype(np.int64)
  return keep


def ResNet20(num_classes: int = 10, layers: factory.Layers = factory.FLOAT,  # pylint: disable=invalid-name
             **kwargs) -> CifarResNetA:
  """The CIFAR ResNet-20 (0.27 M parameters, 40.6 M MACs at 32x32)."""
  return CifarResNetA(num_classes=num_classes, depth=20, layers=layers, **kwargs)


class BasicBlockB(nn.Module):
  """Basic block with a 1x1 projection shortcut (option B) when the shape changes."""
  features: int
  strides: int
  layers: factory.Layers

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    ly = self.layers
    y = ly.batch_norm(train)(factory.conv3x3(ly, self.features, self.strides)(x))
    y = ly.act(factory.gate(ly, self.features, "gate1")(y))
    y = ly.batch_norm(train)(factory.conv3x3(ly, self.features)(y))
    y = factory.gate(ly, self.features, "gate2")(y)
    shortcut = x
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = ly.conv(self.features, (1, 1), strides=(self.strides, self.strides),
                         padding="VALID", use_bias=False, name="downsample")(x)
      shortcut = factory.gate(ly, self.features, "downsample_gate")(ly.batch_norm(train)(shortcut))
    return ly.act(y + shortcut)


class ResNet18(nn.Module):
  """CIFAR ResNet-18 (64-128-256-512, [2, 2, 2, 2]; 11.2 M parameters, 0.56 G MACs)."""
  num_classes: int = 10
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  layers: factory.Layers = factory.FLOAT
  stem_act: bool = True
  bn_before_classifier: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    tap = factory.tapper(self)  # feature taps by role (factory.taps)
    ly = self.layers
    x = ly.first_conv(64, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, name="stem")(x)
    x = factory.gate(ly, 64, "stem_gate")(ly.batch_norm(train)(x))
    if self.stem_act:
      x = ly.act(x)
    for stage, blocks in enumerate(self.stage_sizes):
      for b in range(blocks):
        strides = 2 if stage > 0 and b == 0 else 1
        x = BasicBlockB(64 * 2**stage, strides, ly, name=f"stage{stage + 1}_block{b}")(x, train)
      tap(f"stage{stage + 1}", x)
    x = jnp.mean(x, axis=(1, 2))
    if self.bn_before_classifier:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x)
      x = factory.gate(ly, x.shape[-1], "classifier_gate")(x)
    return ly.last_dense(self.num_classes, name="classifier")(x)
