"""Uniform k-bit quantizers: PAMS (ECCV 2020, arXiv 2011.04212) and generic absmax quantizers.

Level 1 (pure functions, jit-able, dtype-preserving):
  * `pams_quantize(x, alpha, bits)`: PAMS activation quantizer with a learnable max scale.
  * `pams_quantize_weight(w, bits)`: PAMS per-tensor max-scale weight quantizer.
Level 1.5 (frozen dataclasses with a `bits` field, resolved by name through `quant.get`):
  * `AbsMaxQuantizer` (symmetric, per tensor or per channel), `UnsignedQuantizer` (post-ReLU),
    `PAMSWeightQuantizer`, `ClipQuantizer` (fixed alpha).
Level 2 (linen modules):
  * `PAMSQuantAct`: learnable `alpha` (init 10 as the official code) and the first-epoch range
    calibration, kept in the `pams_calib` collection.
  * `PAMSConv`: an `nn.Conv`-compatible convolution with PAMS weight quantization.

Example:
  >>> q = pams_quantize(jnp.linspace(-2., 2., 9), 1.0, 4)   # 15 levels in [-1, 1], step 1/7
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util
from jax import lax

from jaxcompress.ops import conv as conv_ops
from jaxcompress.ops import padding as padding_lib
from jaxcompress.quant import estimators

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

CALIB_COLLECTION = "pams_calib"


@jax.custom_jvp
def round_ste(x: Array) -> Array:
  """Round half to even (as `torch.round`) with a straight-through (identity) derivative.

  A custom JVP rather than `x + stop_gradient(round(x) - x)` so the forward value is exactly
  `round(x)` (the additive form can be off by one ulp).
  """
  return jnp.round(x)


@round_ste.defjvp
def _round_ste_jvp(primals, tangents):
  (x,), (dx,) = primals, tangents
  return jnp.round(x), dx


def _qmax(bits: ArrayLike, dtype: Any) -> Array:
  """Largest level of a signed k-bit grid, 2**(k-1) - 1, in `dtype` (bits may be traced).

  Computed with an integer shift: a float `2.0 ** b` lowers to exp/log on some backends and is
  then not exactly a power of two.
  """
  if isinstance(bits, int):
    return jnp.asarray(2.0 ** (bits - 1) - 1, dtype)
  b = jnp.asarray(bits).astype(jnp.int32)
  return (jnp.left_shift(jnp.int32(1), b - 1) - 1).astype(dtype)


# Both PAMS quantizers are jitted as a whole (bits and alpha traced). Op by op, XLA's algebraic
# simplifier rewrites `x / broadcast(alpha)` into `x * broadcast(1 / alpha)` (compiled HLO,
# jaxlib 0.10.2: [45.5, 45.5] / 7 gives 6.5000005), which is not correctly rounded, and an exact
# .5 tie then rounds one level up. In the whole function the divisor is the clip bound as well,
# XLA keeps a true divide, and ties round as PyTorch's IEEE division does (tests check them).
@jax.jit
def pams_quantize(x: ArrayLike, alpha: ArrayLike, bits: ArrayLike) -> Array:
  """PAMS activation quantizer with parameterized max scale (the paper's PAMS quantizer).

  Forward: `c = clip(x, -alpha, alpha)`, `q = round(c * qmax / alpha) * alpha / qmax`,
  `qmax = 2**(bits-1) - 1` (a signed grid, also after ReLU, as the official code).
  Backward: straight-through round, every other operation differentiated as written, which gives
    dq/dx     = 1 for |x| < alpha, 0 for |x| > alpha;
    dq/dalpha = sign(x) for |x| > alpha, (q - x) / alpha for |x| < alpha
  (the LSQ-like residual term, not PACT's 0 inside the range). At the tie |x| == alpha the clip
  splits the gradient in half (dq/dx = 1/2, dq/dalpha = sign(x)/2 + (q - x)/alpha), which is what
  both `jnp.clip` and current PyTorch give for the official
  `torch.max(torch.min(x, alpha), -alpha)` (PyTorch <= 1.6 sent it all to x).

  Ties: `c * qmax / alpha` exactly halfway between two levels rounds half to even, as PyTorch
  does, where the division is IEEE (XLA:CPU, TPU). XLA:GPU divides float32 with PTX
  `div.full.f32` (up to 2 ulp off), so there such a tie may go to the other level (PyTorch on a
  GPU divides IEEE). For bit-equal levels on a GPU, run with
  `XLA_FLAGS=--xla_backend_extra_options=-nvptx-prec-divf32=2`.

  Args:
    x: activations, any shape.
    alpha: positive clipping bound, scalar or broadcastable to `x` (a learnable parameter).
    bits: bit width k, a Python int or a traced 0-d array.

  Returns:
    The fake-quantized activations, same shape and dtype as `x`.
  """
  x = jnp.asarray(x)
  alpha = jnp.asarray(alpha, x.dtype)
  qmax = _qmax(bits, x.dtype)
  # jnp.clip = minimum(maximum(.)): gradients split 50/50 at |x| == alpha, as torch.min/max.
  c = jnp.clip(x, -alpha, alpha)
  return round_ste(c * qmax / alpha) * alpha / qmax


@jax.jit
def pams_quantize_weight(w: ArrayLike, bits: ArrayLike) -> Array:
  """PAMS weight quantizer: symmetric, per tensor, detached max scale (official `quant_weight`).

  `s = stop_gradient(max|w|) + 1e-8`, `q = round(w * qmax / s) * s / qmax`, straight-through round,
  so dq/dw = 1 everywhere (no clipping is needed: |w| <= s by construction).
  Exact ties round half to even on IEEE division only (see `pams_quantize` for XLA:GPU).

  Args:
    w: weights (HWIO for convolutions; any shape works).
    bits: bit width k, a Python int or a traced 0-d array.

  Returns:
    The fake-quantized weights, same shape and dtype as `w`.
  """
  w = jnp.asarray(w)
  qmax = _qmax(bits, w.dtype)
  s = lax.stop_gradient(jnp.max(jnp.abs(w))) + jnp.asarray(1e-8, w.dtype)
  return round_ste(w * qmax / s) * s / qmax


# ----------------------------------------------------------------------------------------------
# Generic quantizers (dataclasses with a `bits` field; registry for model transforms).


@dataclasses.dataclass(frozen=True, kw_only=True)
class AbsMaxQuantizer:
  """Symmetric k-bit quantizer scaled by the detached absolute maximum; identity STE.

  Attributes:
    bits: bit width k; levels are integers in [-(2**(k-1)-1), 2**(k-1)-1] times s / qmax.
    per_channel: one scale per slice along `channel_axis` (HWIO kernels: the output axis -1).
    channel_axis: the axis that keeps its own scale when `per_channel`.
  """
  bits: int = 8
  per_channel: bool = False
  channel_axis: int = -1

  @property
  def precision(self) -> int:
    return self.bits

  def __call__(self, x: ArrayLike) -> Array:
    x = jnp.asarray(x)
    qmax = _qmax(self.bits, x.dtype)
    if self.per_channel:
      axis = self.channel_axis % x.ndim
      reduce = tuple(i for i in range(x.ndim) if i != axis)
      s = jnp.max(jnp.abs(x), axis=reduce, keepdims=True)
    else:
      s = jnp.max(jnp.abs(x))
    s = lax.stop_gradient(s) + jnp.asarray(1e-8, x.dtype)
    return round_ste(x * qmax / s) * s / qmax


@dataclasses.dataclass(frozen=True, kw_only=True)
class UnsignedQuantizer:
  """Unsigned k-bit quantizer for non-negative (post-ReLU) inputs, 2**k - 1 levels above 0.

  `s = stop_gradient(max(x))`, `q = round(clip(x, 0, s) * (2**k-1) / s) * s / (2**k-1)`;
  gradient 1 where 0 <= x <= s, else 0.
  """
  bits: int = 8

  @property
  def precision(self) -> int:
    return self.bits

  def __call__(self, x: ArrayLike) -> Array:
    x = jnp.asarray(x)
    levels = 2.0 * _qmax(self.bits, x.dtype) + 1  # 2**k - 1
    s = lax.stop_gradient(jnp.max(x)) + jnp.asarray(1e-8, x.dtype)
    c = jnp.where(x < 0, jnp.zeros_like(x), x)
    return round_ste(c * levels / s) * s / levels


@dataclasses.dataclass(frozen=True, kw_only=True)
class PAMSWeightQuantizer:
  """`pams_quantize_weight` as a registry quantizer."""
  bits: int = 8

  @property
  def precision(self) -> int:
    return self.bits

  def __call__(self, w: ArrayLike) -> Array:
    return pams_quantize_weight(w, self.bits)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClipQuantizer:
  """`pams_quantize` with a fixed (non-learned) clipping bound `alpha`."""
  bits: int = 8
  alpha: float = 1.0

  @property
  def precision(self) -> int:
    return self.bits

  def __call__(self, x: ArrayLike) -> Array:
    return pams_quantize(x, self.alpha, self.bits)


# Resolved by name through `quant.get(name, bits=k)`, the library's one quantizer resolver.
estimators.register_quantizer("absmax", AbsMaxQuantizer)
estimators.register_quantizer("absmax_per_channel",
                              functools.partial(AbsMaxQuantizer, per_channel=True))
estimators.register_quantizer("unsigned", UnsignedQuantizer)
estimators.register_quantizer("pams_weight", PAMSWeightQuantizer)
estimators.register_quantizer("clip", ClipQuantizer)

get_quantizer = estimators.get  # e.g. get_quantizer("absmax", bits=4); the same resolver


# ----------------------------------------------------------------------------------------------
# Linen layers.


class PAMSQuantAct(nn.Module):
  """PAMS activation quantizer with a learnable max scale `alpha` (PAMS; official `pams_quant_act`).

  Normal mode: `pams_quantize(x, alpha, bits)`, also whenever `pams_calib` is not mutable (e.g.
  evaluation, like the official layer in `eval()` mode). Calibration mode (the paper's first
  epoch) is on when the `pams_calib` collection is mutable in `apply` and its `active` flag is
  true (a traced value, so switching it off after epoch 1 does not recompile). In that mode, as
  the official code: x is not clipped; the batch statistic m = mean_n max_{h,w,c} |x_n|
  (stop-gradient) updates `max_val`; the layer quantizes with alpha's value replaced by
  `max_val` while the gradient still reaches the `alpha` parameter. The method then copies
  `max_val` into `alpha` before each optimizer update of the calibration epoch
  (`calibrated_params`), reproducing the official `alpha.data = max_val` overwrite followed by
  the Adam step; after the epoch it switches the flag off (`set_calibration(calib, False)`) or
  stops marking `pams_calib` mutable.
  Initialisation (`init`) never updates the statistics.

  Attributes:
    bits: bit width k.
    alpha_init: initial alpha (10 in the official `pams_quant_act.reset_parameter`).
    calibration: "ema" (paper: exponential moving average over the calibration epoch, seeded
      with the first batch) or "last_batch" (official code: the buffer is overwritten every step
      because `epoch == 1`, so alpha ends at the last batch's statistic).
    decay: EMA decay (0.9997 in the official code).
  """
  bits: int = 8
  alpha_init: float = 10.0
  calibration: str = "ema"
  decay: float = 0.9997

  @property
  def input_bits(self) -> int:
    return self.bits

  @property
  def weight_bits(self) -> None:
    return None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    if self.calibration not in ("ema", "last_batch"):
      raise ValueError(f"calibration must be 'ema' or 'last_batch', got {self.calibration!r}.")
    alpha = self.param("alpha", nn.initializers.constant(self.alpha_init), (1,), jnp.float32)
    if not self.is_mutable_collection(CALIB_COLLECTION):
      # Evaluation / after calibration: `pams_calib` may even be absent from the variables.
      return pams_quantize(x, alpha, self.bits)
    # The official buffer starts at 1; `count` seeds the EMA with the first batch.
    max_val = self.variable(CALIB_COLLECTION, "max_val", lambda: jnp.ones((1,), jnp.float32))
    count = self.variable(CALIB_COLLECTION, "count", lambda: jnp.zeros((), jnp.int32))
    active = self.variable(CALIB_COLLECTION, "active", lambda: jnp.ones((), jnp.bool_))
    if self.is_initializing():
      return pams_quantize(x, alpha, self.bits)

    # Calibration statistic of the official `_ema`: per-sample max |x|, averaged over the batch.
    stat = jnp.mean(jnp.max(jnp.abs(lax.stop_gradient(x)), axis=tuple(range(1, x.ndim))))
    stat = jnp.reshape(stat, (1,)).astype(max_val.value.dtype)
    if self.calibration == "last_batch":
      new_max = stat
    else:
      ema = self.decay * max_val.value + (1.0 - self.decay) * stat
      new_max = jnp.where(count.value == 0, stat, ema)
    on = active.value
    max_val.value = jnp.where(on, new_max, max_val.value)
    count.value = count.value + on.astype(jnp.int32)

    # Value of the calibrated bound, gradient to the alpha parameter (as after `alpha.data = m`).
    a = (new_max + (alpha - lax.stop_gradient(alpha))).astype(x.dtype)
    qmax = _qmax(self.bits, x.dtype)
    calibrated = round_ste(x * qmax / a) * a / qmax
    return jnp.where(on, calibrated, pams_quantize(x, alpha, self.bits))


def set_calibration(calib: Any, active: bool | Array) -> Any:
  """Returns the `pams_calib` collection with every `active` flag set to `active`."""
  def f(path, leaf):
    name = getattr(path[-1], "key", None)
    return jnp.full_like(leaf, active) if name == "active" else leaf
  return jax.tree_util.tree_map_with_path(f, calib)


def calibrated_params(params: Any, calib: Any) -> Any:
  """Copies each PAMSQuantAct's `max_val` (from `pams_calib`) into its `alpha` parameter.

  Used by the PAMS method after each calibration step, before the optimizer update, so the update
  is applied to alpha = calibrated value, as in the official trainer.

  Args:
    params: the model's `params` collection.
    calib: the model's `pams_calib` collection (as returned by a mutable `apply`).

  Returns:
    `params` with every calibrated alpha replaced (same structure and dtypes).
  """
  flat_c = traverse_util.flatten_dict(calib)
  flat_p = traverse_util.flatten_dict(params)
  for path, value in flat_p.items():
    stat = flat_c.get(path[:-1] + ("max_val",))
    if path[-1] == "alpha" and stat is not None:
      flat_p[path] = jnp.asarray(stat, value.dtype).reshape(value.shape)
  return traverse_util.unflatten_dict(flat_p)


class PAMSConv(nn.Module):
  """`nn.Conv`-compatible convolution whose kernel is quantized by `pams_quantize_weight`.

  Parameter names (`kernel` HWIO, `bias`) match `nn.Conv`, so a full-precision model's params load
  into the PAMS student unchanged. The bias stays float (as the official code). The official
  `QuantConv2d` does not quantize its input: the blocks place `PAMSQuantAct` before it; set
  `quantize_input=True` to fold one in (for model transforms that only swap convolutions).

  Attributes:
    features, kernel_size, strides, padding, kernel_dilation, feature_group_count, use_bias, dtype,
    param_dtype, precision, kernel_init, bias_init: as `nn.Conv` (NHWC inputs).
    bits: weight (and folded-in input) bit width.
    quantize_input: apply a `PAMSQuantAct(bits)` named `quant_act` to the input first.
  """
  features: int
  kernel_size: Sequence[int] | int = (3, 3)
  strides: Sequence[int] | int = 1
  padding: Any = "SAME"
  kernel_dilation: Sequence[int] | int = 1
  feature_group_count: int = 1
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Callable[..., Array] = nn.initializers.lecun_normal()
  bias_init: Callable[..., Array] = nn.initializers.zeros_init()
  bits: int = 8
  quantize_input: bool = False

  @property
  def weight_bits(self) -> int:
    return self.bits

  @property
  def input_bits(self) -> int:
    return self.bits

  @nn.compact
  def __call__(self, x: Array) -> Array:
    ks = (self.kernel_size,) * 2 if isinstance(self.kernel_size, int) else tuple(self.kernel_size)
    n = len(ks)
    tup = lambda v: (v,) * n if isinstance(v, int) else tuple(v)
    if self.quantize_input:
      x = PAMSQuantAct(bits=self.bits, name="quant_act")(x)
    in_features = x.shape[-1]
    kernel = self.param("kernel", self.kernel_init,
                        ks + (in_features // self.feature_group_count, self.features),
                        self.param_dtype)
    dtype = self.dtype or jnp.result_type(x, kernel)
    x = jnp.asarray(x, dtype)
    kernel = pams_quantize_weight(jnp.asarray(kernel, dtype), self.bits)
    spatial = "HWD"[:n] if n <= 3 else None
    dn = lax.conv_dimension_numbers(x.shape, kernel.shape,
                                    ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C"))
    strides, dilation = tup(self.strides), tup(self.kernel_dilation)
    pads = padding_lib.explicit_pads(self.padding, x.shape[1:-1], ks, strides, dilation)
    y = conv_ops.conv_general_dilated(  # lax on GPU/TPU, matmul weight-gradients on CPU
        x, kernel, window_strides=strides, padding=pads, rhs_dilation=dilation,
        dimension_numbers=dn,
        feature_group_count=self.feature_group_count, precision=self.precision)
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
      y = y + jnp.asarray(bias, dtype)
    return y
