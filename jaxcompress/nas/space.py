"""DARTS search-space primitives as NHWC Flax linen modules.

The candidate operations of DARTS (Liu et al., arXiv 1806.09055, Sec. 3 and App. A.1) with the
definitions of the official `quark0/darts` `cnn/operations.py`, reused by PC-DARTS
(arXiv 1907.05737), BNAS (arXiv 1911.10862) and ABanditNAS (arXiv 2008.00698):

| name          | definition                                                              |
|---------------|-------------------------------------------------------------------------|
| none          | zeros, strided like the other ops                                       |
| max_pool_3x3  | 3x3 max pool, padding 1                                                 |
| avg_pool_3x3  | 3x3 average pool, padding 1, padded cells not counted                   |
| skip_connect  | identity; `FactorizedReduce` at stride 2                                |
| sep_conv_kxk  | (ReLU, depthwise kxk stride s, 1x1, BN), then again at stride 1          |
| dil_conv_kxk  | ReLU, depthwise kxk dilation 2 stride s, 1x1, BN (once)                 |

`OPS[name](C, stride, affine)` builds an op with C output channels (input channels = C as in
DARTS). The sep/dil convs take their convolutions and activation from a `models.factory.Layers`
(`op_table(layers)`), so BNAS's binary ops are these classes with binary layers
(`binary_ops.ops_for`). Every op is called as `op(x, train)`; `train` switches batch norm to batch statistics.
Batch norms use PyTorch's defaults (momentum 0.1 -> flax momentum 0.9, epsilon 1e-5); `affine=False`
(the search network) drops scale and bias.

Example:
  >>> import jax, jax.numpy as jnp
  >>> op = OPS["sep_conv_3x3"](16, 1, False)
  >>> x = jnp.ones((2, 8, 8, 16))
  >>> variables = op.init(jax.random.key(0), x, train=True)
  >>> y, _ = op.apply(variables, x, train=True, mutable=["batch_stats"])
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcompress.models import factory
from jaxcompress.ops import conv as conv_ops
from jaxcompress.ops import padding as padding_lib

# Ops in the official order (cnn/genotypes.py); the index of an op in alphas follows this list.
PRIMITIVES: list[str] = [
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
]

# PyTorch's default conv init (kaiming_uniform with a = sqrt(5)) equals a uniform fan-in
# variance scaling of 1/3; the official code never re-initialises its search-net convs.
torch_conv_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def batch_norm(train: bool, affine: bool, epsilon: float = 1e-5,
               name: str | None = None) -> nn.BatchNorm:
  """A PyTorch-equivalent `BatchNorm2d(C, affine=affine)` (momentum 0.1, given epsilon)."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=epsilon,
                      use_scale=affine, use_bias=affine, name=name)


class Zero(nn.Module):
  """The `none` op: zeros of the strided input's shape (x[:, ::s, ::s] * 0 as in DARTS)."""
  stride: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train
    s = self.stride
    return x[:, ::s, ::s, :] * 0.0


class Identity(nn.Module):
  """The stride-1 `skip_connect` op."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train
    return x


class Pool(nn.Module):
  """3x3 pooling with padding 1: `kind` is "max" or "avg" (avg excludes padded cells).

  Attributes:
    kind: "max" or "avg".
    stride: 1 or 2.
    bn: append a batch norm (ABanditNAS' PoolBN; the DARTS search net adds its own affine-free BN
      after pools inside the mixed op instead).
    affine: batch norm scale/bias when `bn`.
    bn_epsilon: batch-norm epsilon when `bn`.
  """
  kind: str = "max"
  stride: int = 1
  bn: bool = False
  affine: bool = True
  bn_epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    s = (self.stride, self.stride)
    pads = padding_lib.explicit_pads(1, x.shape[1:-1], (3, 3), s)
    if self.kind == "max":
      y = nn.max_pool(x, (3, 3), strides=s, padding=pads)
    elif self.kind == "avg":
      # count_include_pad=False as nn.AvgPool2d(..., count_include_pad=False) in DARTS.
      y = nn.avg_pool(x, (3, 3), strides=s, padding=pads, count_include_pad=False)
    else:
      raise ValueError(f"Unknown pool kind {self.kind!r}; use 'max' or 'avg'.")
    if self.bn:
      y = batch_norm(train, self.affine, self.bn_epsilon)(y)
    return y


class ReLUConvBN(nn.Module):
  """ReLU -> k x k conv (no bias) -> BN: the DARTS cell preprocessing op.

  Attributes:
    features: output channels.
    kernel_size: square kernel size.
    stride: conv stride.
    padding: symmetric zero padding.
    affine: batch-norm scale/bias.
    bn_epsilon: batch-norm epsilon.
  """
  features: int
  kernel_size: int = 1
  stride: int = 1
  padding: int = 0
  affine: bool = True
  bn_epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    k, s = self.kernel_size, self.stride
    y = conv_ops.Conv(self.features, (k, k), strides=(s, s), padding=self.padding,
                      use_bias=False, kernel_init=torch_conv_init)(nn.relu(x))
    return batch_norm(train, self.affine, self.bn_epsilon)(y)


class DilConv(nn.Module):
  """act -> depthwise k x k (dilation d, stride s) -> 1x1 conv -> BN (DARTS `DilConv`).

  With `dilation=1` this is one half of the DARTS separable convolution. Both convolutions come
  from `layers.conv` and the activation is `layers.act` (ReLU in DARTS): the float op by default,
  BNAS's XNOR or PCNN op with the layers of `binary_ops.layers_for`.
  """
  features: int
  kernel_size: int
  stride: int
  padding: int
  dilation: int = 1
  affine: bool = True
  bn_epsilon: float = 1e-5
  layers: factory.Layers = factory.FLOAT

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    c_in = x.shape[-1]
    k, s, d = self.kernel_size, self.stride, self.dilation
    conv = self.layers.conv
    y = conv(c_in, (k, k), strides=(s, s), padding=self.padding, kernel_dilation=(d, d),
             feature_group_count=c_in, use_bias=False, kernel_init=torch_conv_init)(
                 self.layers.act(x))
    y = conv(self.features, (1, 1), use_bias=False, kernel_init=torch_conv_init)(y)
    return batch_norm(train, self.affine, self.bn_epsilon)(y)


class SepConv(nn.Module):
  """Two stacked `DilConv(dilation=1)` blocks; only the first is strided (DARTS `SepConv`)."""
  features: int
  kernel_size: int
  stride: int
  padding: int
  affine: bool = True
  bn_epsilon: float = 1e-5
  layers: factory.Layers = factory.FLOAT

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    c_in = x.shape[-1]
    y = DilConv(c_in, self.kernel_size, self.stride, self.padding, 1, self.affine,
                self.bn_epsilon, self.layers)(x, train)
    return DilConv(self.features, self.kernel_size, 1, self.padding, 1, self.affine,
                   self.bn_epsilon, self.layers)(y, train)


class FactorizedReduce(nn.Module):
  """Halves the resolution with two 1x1 stride-2 convs, the second on the input shifted by 1 px.

  out = BN(concat[conv1(relu(x)), conv2(relu(x)[:, 1:, 1:])]) as in DARTS; `features` must be even.
  """
  features: int
  affine: bool = True
  bn_epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.features % 2:
      raise ValueError(f"FactorizedReduce needs an even number of features, got {self.features}.")
    x = nn.relu(x)
    half = self.features // 2
    conv = lambda: conv_ops.Conv(half, (1, 1), strides=(2, 2), padding="VALID", use_bias=False,
                                 kernel_init=torch_conv_init)
    # The shifted branch sees the odd pixels, so the two halves cover complementary positions.
    y = jnp.concatenate([conv()(x), conv()(x[:, 1:, 1:, :])], axis=-1)
    return batch_norm(train, self.affine, self.bn_epsilon)(y)


OpFactory = Callable[[int, int, bool], nn.Module]


def op_table(layers: factory.Layers = factory.FLOAT) -> dict[str, OpFactory]:
  """The DARTS ops by name, the separable and dilated convolutions built from `layers`.

  Pools, `none` and `skip_connect` (with its `FactorizedReduce`) have no `layers` slot to fill:
  BNAS binarises the convolution ops only (`binary_ops`).

  Args:
    layers: the conv slot and activation of the sep/dil convs (float DARTS by default).

  Returns:
    {name: factory(C, stride, affine) -> module called as op(x, train)}.
  """
  return {
      "none": lambda C, stride, affine: Zero(stride),
      "avg_pool_3x3": lambda C, stride, affine: Pool("avg", stride),
      "max_pool_3x3": lambda C, stride, affine: Pool("max", stride),
      "skip_connect": lambda C, stride, affine: (
          Identity() if stride == 1 else FactorizedReduce(C, affine)),
      "sep_conv_3x3": lambda C, stride, affine: SepConv(C, 3, stride, 1, affine, layers=layers),
      "sep_conv_5x5": lambda C, stride, affine: SepConv(C, 5, stride, 2, affine, layers=layers),
      "sep_conv_7x7": lambda C, stride, affine: SepConv(C, 7, stride, 3, affine, layers=layers),
      "dil_conv_3x3": lambda C, stride, affine: DilConv(C, 3, stride, 2, 2, affine,
                                                        layers=layers),
      "dil_conv_5x5": lambda C, stride, affine: DilConv(C, 5, stride, 4, 2, affine,
                                                        layers=layers),
  }


OPS: dict[str, OpFactory] = op_table()


def get_op(name: str, channels: int, stride: int, affine: bool) -> nn.Module:
  """Builds `OPS[name](channels, stride, affine)` with a helpful error for unknown names.

  Raises:
    ValueError: naming the known ops.
  """
  if name not in OPS:
    raise ValueError(f"Unknown op {name!r}; known: {sorted(OPS)}.")
  return OPS[name](channels, stride, affine)
