"""Layer factories: one model definition serves float, binary, quantized and masked variants.

Every architecture in `jaxcompress.models` builds its convolutions, dense layers, norms and
activations through a `Layers` value instead of naming `nn.Conv` directly. A paper swaps in its
layer classes (RBNN binary convs, PAMS quantized convs, DMAD masked convs) without copying the
model. The first convolution and the classifier have their own slots because binary and quantized
papers keep them in float (RBNN, PAMS, XNOR-Net all do).

Example:
  >>> from jaxcompress.models import factory, resnet_cifar
  >>> model = resnet_cifar.ResNet20(num_classes=10, layers=factory.FLOAT)
"""
from __future__ import annotations

from jaxcompress.errors import ConfigError

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax

ModuleFactory = Callable[..., nn.Module]


def _default_conv() -> ModuleFactory:
  # Imported lazily so the factory stays importable while ops/ evolves; the fast conv entry
  # point picks the best formulation per backend (see jaxcompress/ops/conv.py).
  try:
    from jaxcompress.ops import conv as conv_ops  # pylint: disable=g-import-not-at-top
    return conv_ops.Conv
  except ImportError:  # pragma: no cover - only during bootstrap
    return nn.Conv


def _default_norm() -> ModuleFactory:
  # nn.BatchNorm with a closed-form backward on CPU (jaxcompress/ops/batch_norm.py): same
  # parameters, statistics and values; ResNet-20 training step +4-7% img/s on the 2-core CPU
  # (benchmarks/train_step.py --compare, BENCHMARKS.md). Exactly nn.BatchNorm on GPU/TPU.
  from jaxcompress.ops import batch_norm as bn_ops  # pylint: disable=g-import-not-at-top
  return bn_ops.BatchNorm


@dataclasses.dataclass(frozen=True)
class Layers:
  """The module classes a model is assembled from.

  Attributes:
    conv: factory for inner convolutions, called like `nn.Conv(features, kernel_size, ...)`.
    dense: factory for inner dense layers.
    first_conv: factory for the stem convolution (float in every compression paper).
    last_dense: factory for the classifier (float in every compression paper).
    last_conv: factory for the output conv of image-to-image models (float: SR tails, GANs).
    conv_transpose: factory for transposed convolutions (GAN generators).
    norm: factory for normalisation layers, called like `nn.BatchNorm(use_running_average=...)`.
    act: activation function (e.g. `nn.relu`, `nn.hard_tanh` for binary nets).
    bn_scale_init: initial value of batch-norm scales (RBNN's official code uses 1e-8).
  """
  conv: ModuleFactory = dataclasses.field(default_factory=_default_conv)
  dense: ModuleFactory = nn.Dense
  first_conv: ModuleFactory = dataclasses.field(default_factory=_default_conv)
  last_dense: ModuleFactory = nn.Dense
  last_conv: ModuleFactory = dataclasses.field(default_factory=_default_conv)
  conv_transpose: ModuleFactory = nn.ConvTranspose
  norm: ModuleFactory = dataclasses.field(default_factory=_default_norm)
  act: Callable[[jax.Array], jax.Array] = nn.relu
  bn_scale_init: float = 1.0

  def batch_norm(self, train: bool, **kwargs: Any) -> nn.Module:
    """A batch norm with the factory's scale init, PyTorch's momentum and epsilon."""
    kwargs.setdefault("momentum", 0.9)
    kwargs.setdefault("epsilon", 1e-5)
    return self.norm(use_running_average=not train,
                     scale_init=nn.initializers.constant(self.bn_scale_init), **kwargs)

  def replace(self, **changes: Any) -> "Layers":
    return dataclasses.replace(self, **changes)


FLOAT = Layers()

_REGISTRY: dict[str, Callable[..., Layers]] = {"float": lambda **kw: FLOAT.replace(**kw)}


def register(name: str) -> Callable[[Callable[..., Layers]], Callable[..., Layers]]:
  """Registers a named `Layers` builder (e.g. "rbnn", "pams") for configs to select by string."""
  def wrap(fn: Callable[..., Layers]) -> Callable[..., Layers]:
    _REGISTRY[name] = fn
    return fn
  return wrap


def get(name: str, **kwargs: Any) -> Layers:
  """Returns the `Layers` registered under `name`, built with `kwargs`.

  Raises:
    ValueError: naming the known layer sets when `name` is unknown.
  """
  if name not in _REGISTRY:
    raise ConfigError(f"Unknown layer set {name!r}; known: {sorted(_REGISTRY)}. "
                     "Set config.model.layers to one of these.")
  return _REGISTRY[name](**kwargs)


def conv3x3(layers: Layers, features: int, strides: int = 1, name: str | None = None) -> nn.Module:
  """A 3x3 conv with PyTorch-style padding 1 and no bias (ResNet convention)."""
  return layers.conv(features, (3, 3), strides=(strides, strides), padding=((1, 1), (1, 1)),
                     use_bias=False, name=name)


kaiming_normal = functools.partial(nn.initializers.variance_scaling, 2.0, "fan_out", "normal")
