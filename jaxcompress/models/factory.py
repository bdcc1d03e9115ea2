"""Layer factories: one model definition serves float, binary, quantized and masked variants.

Every architecture in `jaxcompress.models` builds its convolutions, dense layers, norms and
activations through a `Layers` value instead of naming `nn.Conv` directly. A paper swaps in its
layer classes (RBNN binary convs, PAMS quantized convs, DMAD masked convs) without copying the
model. The first convolution and the classifier have their own slots because binary and quantized
papers keep them in float (RBNN, PAMS, XNOR-Net all do).

Three conventions shared by the models, for the pruning and distillation papers:
  * Gate slot (`Layers.gate`): a channel gate/mask module placed right after every normalisation
    and before the activation (DMAD, arXiv 2011.08382, Sec. 3.1 puts its differentiable masks
    there). None (the default) places no module, so float models keep their parameters exactly.
  * Per-layer widths: models that can be pruned take `widths`, a mapping from a layer's role
    (its parameter path, e.g. "block0/conv1") to its output channels; `resolve_widths` checks it.
    Width 0 for a removable role (a residual block's first conv) removes the block. Such models
    describe their roles as a `PruneSpec` (method `prune_spec()`), which
    `jaxcompress.prune.materialize` reads to cut a gated model down to a really smaller one.
  * Feature taps: models sow features into the `TAPS` ("intermediates") collection under role
    names ("down2", "res3", "stage1", ...) through a `Taps` child; `apply(..., mutable=[TAPS])`
    returns them and `taps` reads them back by role. Nothing is stored by `init`, so variables
    stay as they were.

Named layer sets ("float", "rbnn", "binary", "pams") are registered here and import the
technique modules that define their layers only when selected (see `layer_sets`).

Example:
  >>> from jaxcompress.models import factory, resnet_cifar
  >>> model = resnet_cifar.ResNet20(num_classes=10, layers=factory.FLOAT)
  >>> y, state = model.apply(variables, x, mutable=[factory.TAPS])
  >>> factory.taps(state)["stage2"].shape
  (N, 16, 16, 32)
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
from typing import Any, Callable, Collection, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcompress.errors import ConfigError

ModuleFactory = Callable[..., nn.Module]

# The collection feature taps are sown into (flax's conventional name for sown values).
TAPS = "intermediates"
_TAPS_MODULE = "taps"  # the name models give their `Taps` child


def _default_conv() -> ModuleFactory:
  # The fast conv entry point picks the best formulation per backend (jaxcompress/ops/conv.py);
  # imported on first use so that importing the factory does not import the ops.
  from jaxcompress.ops import conv as conv_ops  # pylint: disable=g-import-not-at-top
  return conv_ops.Conv


def _default_conv_transpose() -> ModuleFactory:
  # nn.ConvTranspose whose CPU gradients are ordinary convolutions (jaxcompress/ops/
  # conv_transpose.py): same parameters and values; XLA:CPU runs nn.ConvTranspose's kernel
  # gradient as a generic loop nest (timings: BENCHMARKS.md). Exactly nn.ConvTranspose on GPU/TPU.
  from jaxcompress.ops import conv_transpose as ct_ops  # pylint: disable=g-import-not-at-top
  return ct_ops.ConvTranspose


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
    gate: factory of channel gates placed right after every normalisation (before the
      activation), called as `gate(features, name=...)` and returning a module that maps
      NHWC `x` to `x * mask(c)` (e.g. `ChannelGate`; DMAD's masks, arXiv 2011.08382). The
      factory sees each gate's name and may return a mask-free module for layers it keeps
      whole. None: no module at all (parameters and outputs of the plain model).
  """
  conv: ModuleFactory = dataclasses.field(default_factory=_default_conv)
  dense: ModuleFactory = nn.Dense
  first_conv: ModuleFactory = dataclasses.field(default_factory=_default_conv)
  last_dense: ModuleFactory = nn.Dense
  last_conv: ModuleFactory = dataclasses.field(default_factory=_default_conv)
  conv_transpose: ModuleFactory = dataclasses.field(default_factory=_default_conv_transpose)
  norm: ModuleFactory = dataclasses.field(default_factory=_default_norm)
  act: Callable[[jax.Array], jax.Array] = nn.relu
  bn_scale_init: float = 1.0
  gate: ModuleFactory | None = None

  def batch_norm(self, train: bool, **kwargs: Any) -> nn.Module:
    """A batch norm with the factory's scale init, PyTorch's momentum and epsilon."""
    kwargs.setdefault("momentum", 0.9)
    kwargs.setdefault("epsilon", 1e-5)
    return self.norm(use_running_average=not train,
                     scale_init=nn.initializers.constant(self.bn_scale_init), **kwargs)

  def replace(self, **changes: Any) -> "Layers":
    return dataclasses.replace(self, **changes)


FLOAT = Layers()


def _lazy(target: str) -> Callable[..., Layers]:
  """A builder that imports "module:function" on first use.

  Named layer sets live next to the models (`layer_sets`, `edsr`) and import their technique
  modules (`jaxcompress.quant`); registering them by name here keeps `get("rbnn")` working
  without importing those modules up front and without techniques importing models.
  """
  module, attr = target.split(":")

  def build(**kwargs: Any) -> Layers:
    return getattr(importlib.import_module(module), attr)(**kwargs)
  return build


_REGISTRY: dict[str, Callable[..., Layers]] = {
    "float": lambda **kw: FLOAT.replace(**kw),
    "rbnn": _lazy("jaxcompress.models.layer_sets:rbnn_layers"),
    "binary": _lazy("jaxcompress.models.layer_sets:binary_layers"),
    "pams": _lazy("jaxcompress.models.edsr:pams_layers"),
}


def register(name: str) -> Callable[[Callable[..., Layers]], Callable[..., Layers]]:
  """Registers a named `Layers` builder (e.g. "rbnn", "pams") for configs to select by string."""
  def wrap(fn: Callable[..., Layers]) -> Callable[..., Layers]:
    _REGISTRY[name] = fn
    return fn
  return wrap


def get(name: str, **kwargs: Any) -> Layers:
  """Returns the `Layers` registered under `name`, built with `kwargs`.

  Raises:
    ConfigError: naming the known layer sets when `name` is unknown.
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


def _identity(x: jax.Array) -> jax.Array:
  return x


def gate(layers: Layers, features: int, name: str) -> Callable[[jax.Array], jax.Array]:
  """The gate that follows a normalisation: `layers.gate(features, name=name)` or the identity.

  Args:
    layers: the model's layer factory.
    features: channels of the normalised tensor (the mask length).
    name: module name of the gate, unique within the calling module.

  Returns:
    A callable NHWC -> NHWC; the identity (no module, no parameters) when `layers.gate` is None.
  """
  make = getattr(layers, "gate", None)
  return _identity if make is None else make(features, name=name)


class ChannelGate(nn.Module):
  """A learnable per-channel mask: `x * mask`, `mask` initialised to ones (a no-op at init).

  The plain multiplicative mask of channel-pruning papers (Network Slimming-style scaling,
  DMAD's masks before binarisation, arXiv 2011.08382 Eq. 2); use it as `Layers(gate=ChannelGate)`
  or wrap it to add a relaxation.

  Attributes:
    features: mask length (channels of the last axis).
    mask_init: initializer of the `mask` parameter.
  """
  features: int
  mask_init: Callable[..., jax.Array] = nn.initializers.ones_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.shape[-1] != self.features:
      raise ValueError(f"ChannelGate {self.name!r} has {self.features} channels, input has "
                       f"{x.shape[-1]}.")
    mask = self.param("mask", self.mask_init, (self.features,), jnp.float32)
    return x * mask.astype(x.dtype)


def resolve_widths(widths: Mapping[str, int] | None, defaults: Mapping[str, int],
                   model: str, removable: Collection[str] = ()) -> dict[str, int]:
  """Per-layer output widths: the architecture's `defaults` overridden by `widths`.

  Args:
    widths: role -> channels for the layers a pruned network narrows (None: none narrowed).
    defaults: every role the model accepts, with the architecture's width.
    model: the model's name, for error messages.
    removable: roles that may be 0 (the model then leaves that layer out: a residual block whose
      first conv keeps no channel, DMAD arXiv 2011.08382 Sec. 3).

  Returns:
    A dict with one entry per role of `defaults`.

  Raises:
    ConfigError: when a role is unknown or a width is not a positive integer (or 0 for a
      removable role).
  """
  out = dict(defaults)
  if widths is None:
    return out
  if not hasattr(widths, "items"):
    raise ConfigError(f"{model}: widths must map layer roles to channels, got "
                      f"{type(widths).__name__}. Pass e.g. {{{next(iter(defaults))!r}: 8}}.")
  for role, width in widths.items():
    if role not in defaults:
      raise ConfigError(f"{model}: unknown layer role {role!r} in widths. Known roles: "
                        f"{', '.join(defaults)}.")
    least = 0 if role in removable else 1
    if isinstance(width, bool) or not isinstance(width, int) or width < least:
      what = "a non-negative int (0 removes the layer)" if least == 0 else "a positive int"
      raise ConfigError(f"{model}: widths[{role!r}] must be {what}, got {width!r}.")
    out[role] = width
  return out


class PruneRole(NamedTuple):
  """The channels of one width role, as `PruneSpec` declares them.

  Attributes:
    gates: gate module path -> paths of the modules whose output channels that gate masks: the
      conv and its norm (any of them may own no parameters), e.g.
      {"block0/gate2": ("block0/conv2", "block0/norm2")}. A residual stream lists every gate
      that writes into it.
    residual: the role is a residual stream shared by several gates: a channel is kept when
      more than `threshold` of them keep it (DMAD's group rule, arXiv 2011.08382 Sec. 3).
    removable: width 0 is allowed and removes the role's layer (a residual block's first conv
      that keeps no channel).
  """
  gates: Mapping[str, Sequence[str]]
  residual: bool = False
  removable: bool = False


class PruneSpec(NamedTuple):
  """How a gated model's channels map onto its parameters (`jaxcompress.prune.materialize`).

  Attributes:
    roles: width role (a key of the model's `layer_widths()`) -> `PruneRole`, for the roles
      the gates prune; other roles keep their width.
    inputs: module path -> the roles whose channels, concatenated in this order, form that
      module's input channels (a U-Net decoder reads [skip, previous]); modules left out read
      the model input (their input axis is kept whole).
    input_layer: path of the layer that reads the model input (its kernel gives the input
      channels of the example input the model is traced with).
    input_size: spatial size (H, W) of an input the model accepts, for tracing.
    arrange: optional hook `keep -> keep` over role -> kept channel indices (sorted, from the
      masks) that may add channels and reorder them, for structure the gates do not show: a
      parameter-free shortcut that places one role's channels inside another's
      (`resnet_cifar`'s option A). None: the masks' keep-sets as they are.
  """
  roles: Mapping[str, PruneRole]
  inputs: Mapping[str, Sequence[str]]
  input_layer: str
  input_size: tuple[int, int]
  arrange: Callable[[dict[str, Any]], dict[str, Any]] | None = None


class Taps(nn.Module):
  """Sows features into the `TAPS` collection by role (create it through `tapper`).

  The values live in this child's scope because a role may share its name with a layer of the
  model ("down2" is also the generator's conv); the module has no variables, so parameters and
  random streams are those of the model without it.
  """

  @nn.compact
  def __call__(self, role: str, x: jax.Array) -> jax.Array:
    """Records `x` under `role` (appended, flax's `sow`); returns `x` unchanged."""
    self.sow(TAPS, role, x)
    return x


def tapper(module: nn.Module) -> Callable[[str, jax.Array], jax.Array]:
  """The feature-tap function of one call of `module`: `tap = factory.tapper(self)`, then
  `tap("down2", x)` at each position (inside `module`'s compact `__call__`).

  Args:
    module: the model, from inside its compact method.

  Returns:
    `tap(role, x) -> x`. It records only when `TAPS` is mutable and the model is not being
    initialised, so `init` returns no activations and plain `apply` calls (and model
    summaries) see no extra module.
  """
  if module.is_initializing() or not module.is_mutable_collection(TAPS):
    return lambda role, x: x
  return Taps(name=_TAPS_MODULE)


def taps(state: Mapping[str, Any]) -> dict[str, jax.Array]:
  """The sown features by role, from `apply(..., mutable=[TAPS])`'s returned state.

  Args:
    state: the mutated-variables dict (with a `TAPS` entry) or the `TAPS` collection itself.

  Returns:
    role -> the last value sown under that role; roles of a model used inside another are
    prefixed with its path ("netG/down2").
  """
  col = state.get(TAPS, state) if hasattr(state, "get") else state
  out: dict[str, jax.Array] = {}

  def visit(node: Any, prefix: str) -> None:
    for key, val in node.items():
      if isinstance(val, tuple):
        out[prefix + key] = val[-1]
      else:  # a `Taps` child holds its model's roles: no path component of its own
        visit(val, prefix if key == _TAPS_MODULE else f"{prefix}{key}/")
  visit(col, "")
  return out
