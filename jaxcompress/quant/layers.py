"""Binary linen layers: larq-style binary convs/dense layers and RBNN's rotated binary conv.

* `BinaryConv` / `BinaryDense`: larq-style `QuantConv2D` / `QuantDense` with quantisers named as
  `quant.get` resolves them (`"ste_sign"`, `"approx_sign"`, ...; None keeps that side float). Called
  like `nn.Conv` / `nn.Dense`, so a model's layer factory can use them in place of `nn.Conv`
  (the named "binary" and "rbnn" layer sets of the model factory do).
* `RBNNConv`: the Rotated Binary Neural Network conv (arXiv 2009.13055) around
  `rotation.rbnn_conv2d`.

Every binary layer exposes `weight_bits` and `input_bits` (read them from an instance) for the
model summary.

RBNN state lives in two non-trainable collections so the training engine keeps it in the train
state and nothing is recompiled per epoch:
  * `"rbnn"`: `r1`, `r2` per layer, updated once per epoch by `rotation.rbnn_rotate_params`;
  * `"rbnn_schedule"`: `t`, `k` per layer (0-d), set each epoch with `set_rbnn_schedule`.
Pass all collections returned by `init` to `apply` (they are read-only during a step).

Example (the model built by name, `config.model.layers = "rbnn"`):
  >>> model = jaxcompress.models.build("resnet20", layers="rbnn")
  >>> variables = model.init(rng, x)          # params, batch_stats, rbnn, rbnn_schedule
  >>> t, k = quant.rbnn_schedule(epoch, epochs)
  >>> variables["rbnn_schedule"] = set_rbnn_schedule(variables["rbnn_schedule"], t, k)
"""
from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcompress.quant import estimators, rotation

Quantizer = str | Callable[..., jax.Array] | None
Initializer = Callable[..., jax.Array]

# PyTorch's `kaiming_normal_` (fan_in, gain sqrt 2, untruncated): the official RBNN models
# re-initialise every conv with it.
kaiming_normal_fan_in = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def _quantize(quantizer: Quantizer, x: jax.Array) -> jax.Array:
  fn = estimators.get(quantizer)
  return x if fn is None else fn(x)


class _QuantizerBits:
  """`weight_bits` / `input_bits` read by the model summary, from the subclass's quantizer fields."""

  @property
  def weight_bits(self) -> int:
    return estimators.bits_of(self.kernel_quantizer)

  @property
  def input_bits(self) -> int:
    return estimators.bits_of(self.input_quantizer)


class BinaryConv(_QuantizerBits, nn.Module):
  """Convolution with quantised input and kernel (larq `QuantConv2D`, NHWC / HWIO).

  `y = conv(pad(q_in(x)), q_k(kernel)) + bias`: the zero padding is applied after the input
  quantiser, as larq (`pad_values=0`) and the official RBNN/IR-Net binary convs do. Called like
  `nn.Conv`, so it fills a `Layers.conv` slot (the "binary" layer set; BNAS's XNOR DARTS ops with
  `kernel_quantizer="xnor_sign"`, depthwise and dilated included).

  Attributes:
    features: output channels.
    kernel_size: window, int or tuple.
    strides: int or tuple.
    padding: "SAME", "VALID", an int (PyTorch style) or per-dim pairs.
    use_bias: add a float bias.
    input_quantizer: quantizer name (`quant.get`) / callable / None (float input).
    kernel_quantizer: quantizer name / callable / None (float kernel).
    kernel_init, bias_init, param_dtype: as `nn.Conv`.
    kernel_dilation: int or tuple (atrous convolution).
    feature_group_count: feature groups (the input channels for a depthwise convolution).
  """
  features: int
  kernel_size: int | Sequence[int] = (3, 3)
  strides: int | Sequence[int] = 1
  padding: Any = "SAME"
  use_bias: bool = False
  input_quantizer: Quantizer = "ste_sign"
  kernel_quantizer: Quantizer = "ste_sign"
  kernel_init: Initializer = nn.initializers.lecun_normal()
  bias_init: Initializer = nn.initializers.zeros_init()
  param_dtype: Any = jnp.float32
  kernel_dilation: int | Sequence[int] = 1
  feature_group_count: int = 1

  def binary_kernel(self, kernel: jax.Array) -> jax.Array:
    """The kernel the convolution uses: `kernel_quantizer(kernel)`.

    Subclasses that binarise the kernel another way (PCNN's learned projections) override it;
    they may create parameters here, as it runs inside `__call__`.
    """
    return _quantize(self.kernel_quantizer, kernel)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    nd = x.ndim - 2
    ks = rotation.as_tuple(self.kernel_size, nd)
    groups = self.feature_group_count
    if x.shape[-1] % groups or self.features % groups:
      raise ValueError(f"{type(self).__name__}: {x.shape[-1]} input and {self.features} output "
                       f"channels must both be divisible by feature_group_count={groups}.")
    kernel = self.param("kernel", self.kernel_init, ks + (x.shape[-1] // groups, self.features),
                        self.param_dtype)
    y = rotation.pad_and_conv(_quantize(self.input_quantizer, x), self.binary_kernel(kernel),
                              self.strides, self.padding, dilation=self.kernel_dilation,
                              groups=groups)
    if self.use_bias:
      y = y + self.param("bias", self.bias_init, (self.features,), self.param_dtype)
    return y


class BinaryDense(_QuantizerBits, nn.Module):
  """Dense layer with quantised input and kernel (larq `QuantDense`): `q_in(x) @ q_k(W) + b`.

  Attributes:
    features: output features.
    use_bias: add a float bias.
    input_quantizer, kernel_quantizer: estimator names / callables / None.
    kernel_init, bias_init, param_dtype: as `nn.Dense`.
  """
  features: int
  use_bias: bool = True
  input_quantizer: Quantizer = "ste_sign"
  kernel_quantizer: Quantizer = "ste_sign"
  kernel_init: Initializer = nn.initializers.lecun_normal()
  bias_init: Initializer = nn.initializers.zeros_init()
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), self.param_dtype)
    xq, kq = _quantize(self.input_quantizer, x), _quantize(self.kernel_quantizer, kernel)
    dtype = jnp.result_type(xq, kq)
    y = jnp.dot(xq.astype(dtype), kq.astype(dtype))
    if self.use_bias:
      y = y + self.param("bias", self.bias_init, (self.features,), self.param_dtype)
    return y


def _official_alpha_init(fan_in: int) -> Initializer:
  """alpha = mean|w| per output channel of PyTorch's *default* conv init.

  The official layer computes alpha in `__init__`, from `nn.Conv2d`'s default
  kaiming_uniform(a=sqrt 5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), before the model re-draws the
  kernel with kaiming_normal_. So alpha is ~0.5/sqrt(fan_in), not mean|kernel|.
  """
  def init(rng: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
    bound = 1.0 / math.sqrt(fan_in)
    u = jax.random.uniform(rng, (fan_in,) + tuple(shape), dtype, -bound, bound)
    return jnp.mean(jnp.abs(u), axis=0)
  return init


class RBNNConv(nn.Module):
  """RBNN binary convolution (arXiv 2009.13055; official `BinarizeConv2d`), NHWC / HWIO.

  Variables:
    params/kernel: latent HWIO kernel, kaiming_normal (fan_in) like the official models.
    params/theta: (O,) rotation angles, init pi/2 (fully rotated weight).
    params/alpha: (O,) output scales, init as the official code (see `alpha_init`).
    rbnn/r1, rbnn/r2: Haar-random (a, a), (b, b) rotations, `(a, b) = rotation_shape(kh kw in)`.
    rbnn_schedule/t, rbnn_schedule/k: 0-d surrogate schedule, init to epoch 0 of the official
      schedule (t = 1e-2, k = 100); they only change gradients, never the forward value.

  Attributes:
    features: output channels.
    kernel_size: window (int or tuple).
    strides: int or tuple.
    padding: int / pairs / "SAME" / "VALID", applied after binarisation.
    use_bias: add a float bias (official convs have none).
    alpha_init: "official" (mean|w| of an independent PyTorch-default uniform draw, what the
      official `__init__` computes) or "kernel" (mean|kernel| per output channel).
    kernel_init, param_dtype: as `nn.Conv`.
  """
  features: int
  kernel_size: int | Sequence[int] = (3, 3)
  strides: int | Sequence[int] = (1, 1)
  padding: Any = ((1, 1), (1, 1))
  use_bias: bool = False
  alpha_init: str = "official"
  kernel_init: Initializer = kaiming_normal_fan_in
  param_dtype: Any = jnp.float32

  weight_bits: ClassVar[int] = 1
  input_bits: ClassVar[int] = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ks = rotation.as_tuple(self.kernel_size, x.ndim - 2)
    shape = ks + (x.shape[-1], self.features)
    kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
    theta = self.param("theta", nn.initializers.constant(math.pi / 2), (self.features,),
                       self.param_dtype)
    fan_in = math.prod(shape[:-1])
    if self.alpha_init == "official":
      alpha_fn = _official_alpha_init(fan_in)
    elif self.alpha_init == "kernel":
      alpha_fn = lambda rng, s, d: jnp.mean(jnp.abs(kernel), axis=tuple(range(len(ks) + 1)))
    else:
      raise ValueError(f"alpha_init must be 'official' or 'kernel', got {self.alpha_init!r}.")
    alpha = self.param("alpha", alpha_fn, (self.features,), self.param_dtype)
    a, b = rotation.rotation_shape(fan_in)
    r1 = self.variable("rbnn", "r1", lambda: rotation.haar_orthogonal(
        self.make_rng("params"), a, self.param_dtype))
    r2 = self.variable("rbnn", "r2", lambda: rotation.haar_orthogonal(
        self.make_rng("params"), b, self.param_dtype))
    t = self.variable("rbnn_schedule", "t", lambda: jnp.asarray(1e-2, self.param_dtype))
    k = self.variable("rbnn_schedule", "k", lambda: jnp.asarray(1e2, self.param_dtype))
    y = rotation.rbnn_conv2d(x, kernel, r1.value, r2.value, theta, alpha, t.value, k.value,
                             self.strides, self.padding)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,), self.param_dtype)
    return y


def set_rbnn_schedule(schedule: Any, t: ArrayLike, k: ArrayLike) -> Any:
  """Returns the `"rbnn_schedule"` collection with every layer's `t`, `k` set (jit-friendly)."""
  def visit(node: Any) -> Any:
    out = {}
    for key, val in node.items():
      if hasattr(val, "items"):
        out[key] = visit(val)
      elif key in ("t", "k"):
        out[key] = jnp.asarray(t if key == "t" else k).astype(jnp.asarray(val).dtype)
      else:
        out[key] = val
    return out
  return visit(schedule)
