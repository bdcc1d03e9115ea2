"""Binarisation / low-bit estimators: forward quantiser + backward surrogate gradient.

Pure `jax.numpy` functions on arrays of any shape. Each one computes in the dtype of `x`
(float64 in, float64 out under x64). Scalar hyper-parameters (`clip_value`, `beta`, `t`, `k`,
`threshold_value`, `k_bit`) are ordinary arguments of the `jax.custom_vjp`, so Python numbers and
traced 0-d arrays both work and a jitted step never recompiles when a schedule changes them;
their cotangent is zero.

The larq-named estimators follow larq (`larq/quantizers.py`, v0.13) exactly, including its sign
convention `sign(0) = +1` (larq's `math.sign(x) = sign(sign(x) + 0.1)`) and its inclusive gradient
window `|x| <= clip_value`. `rbnn_sign` follows the official RBNN code instead: `sign(0) = 0`, so
a zero-padded border stays zero after binarisation.

Gradient table (what the tests check, `g` = incoming cotangent):

| estimator            | forward                       | d/dx                                  |
|----------------------|-------------------------------|---------------------------------------|
| ste_sign             | -1 if x < 0 else +1           | 1 if abs(x) <= clip_value else 0      |
| approx_sign          | -1 if x < 0 else +1           | 2 - 2 abs(x) if abs(x) <= 1 else 0    |
| swish_sign           | -1 if x < 0 else +1           | b (2 - bx tanh(bx/2)) / (1 + cosh bx) |
| magnitude_aware_sign | mean(abs(x)) * ste_sign(x)    | mean(abs(x)) [abs(x) <= clip_value]   |
| xnor_sign            | mean(abs(x)) * ste_sign(x)    | as above + gradient through the mean  |
| ste_tern             | -1/0/+1 (+-D maps to +-1)     | 1 if abs(x) <= clip_value else 0      |
| ste_heaviside        | 1 if x > 0 else 0             | 1 if abs(x) <= clip_value else 0      |
| dorefa (activations) | round(clip(x, 0, 1) n) / n    | 1 if 0 <= x <= 1 else 0               |
| rbnn_sign            | jnp.sign(x) (sign(0) = 0)     | k max(0, sqrt(2) t - t^2 abs(x))      |

Example:
  >>> from jaxcompress import quant
  >>> x = jnp.array([-2.0, 0.0, 0.5])
  >>> quant.ste_sign(x)                                   # [-1, 1, 1]
  >>> quant.get("approx_sign")(x)                         # same values, Bi-Real gradient
  >>> t, k = quant.rbnn_schedule(epoch, 1000)             # traced, no recompiles
  >>> quant.rbnn_sign(x, t, k)                            # [-1, 0, 1]
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

Estimator = Callable[..., jax.Array]

_REGISTRY: dict[str, Estimator] = {}


def register(name: str, bits: int = 1) -> Callable[[Estimator], Estimator]:
  """Registers an estimator under `name` with its output precision in bits (for summaries)."""
  def wrap(fn: Estimator) -> Estimator:
    _REGISTRY[name] = fn
    fn.precision = bits  # type: ignore[attr-defined]  # larq's attribute name
    return fn
  return wrap


def names() -> list[str]:
  """All registered estimator names."""
  return sorted(_REGISTRY)


# k-bit quantizers whose bit width is a constructor argument (`quant.quantizers` registers its
# uniform quantizers here): name -> builder called as `build(bits=k, **kwargs)`.
_QUANTIZERS: dict[str, Callable[..., Estimator]] = {}


def register_quantizer(name: str, build: Callable[..., Estimator]) -> Callable[..., Estimator]:
  """Registers a k-bit quantizer class (or builder) under `name`, resolved by `get(name, bits=k)`.

  Args:
    name: the name configs use (e.g. "absmax").
    build: called as `build(**kwargs)` (`bits` among them when given); its result quantizes an
      array and reports its bit width as `precision` or `bits`.

  Returns:
    `build`, so this can decorate a class.
  """
  _QUANTIZERS[name] = build
  return build


def quantizer_names() -> list[str]:
  """All registered k-bit quantizer names (built per bit width by `get(name, bits=k)`)."""
  return sorted(_QUANTIZERS)


# larq's `quantizers.get` also takes its class names (serialised configs name classes).
_LARQ_CLASS_NAMES = {
    "SteSign": "ste_sign", "ApproxSign": "approx_sign", "SwishSign": "swish_sign",
    "MagnitudeAwareSign": "magnitude_aware_sign", "SteTern": "ste_tern",
    "SteHeaviside": "ste_heaviside", "DoReFa": "dorefa", "DoReFaQuantizer": "dorefa",
}
_ROLES = ("activations", "weights")


def get(identifier: str | Estimator | None, *, bits: int | None = None, role: str | None = None,
        **kwargs: Any) -> Estimator | None:
  """The one name -> quantizer resolver of the library; callables and None pass through.

  Names are the registered estimators (`names()`, or larq's class names, e.g. "SteSign") and the
  registered k-bit quantizers (`quantizer_names()`: "absmax", "pams_weight", ...).

  Args:
    identifier: a name, a callable (returned as is) or None (float: returned as is).
    bits: bit width. DoReFa builds its `k_bit` from it (default 2); a k-bit quantizer is built
      with it (default: the class's, 8); any other estimator must have exactly this width.
    role: "activations" or "weights": what the quantizer is applied to. Only DoReFa
      quantises the two differently (arXiv 1606.06160 eq. 5 vs 9); None means activations.
    **kwargs: further constructor arguments of a k-bit quantizer (e.g. `per_channel`, `alpha`).

  Returns:
    The estimator function itself for a plain estimator name (so `get("ste_sign") is ste_sign`),
    a `functools.partial` of `dorefa` (with a `precision` attribute) when `bits` or `role` is
    given for it, or a new k-bit quantizer instance.

  Raises:
    ValueError: an unknown name (naming the known ones), an estimator with another bit width
      than `bits`, an unknown `role`, or constructor arguments for an estimator.
  """
  if identifier is None or (callable(identifier) and not isinstance(identifier, str)):
    return identifier
  if role not in (None, *_ROLES):
    raise ValueError(f"role must be one of {_ROLES}, got {role!r}.")
  name = _LARQ_CLASS_NAMES.get(identifier, identifier) if isinstance(identifier, str) else None
  if name in _QUANTIZERS:
    return _QUANTIZERS[name](**({} if bits is None else {"bits": bits}), **kwargs)
  if name not in _REGISTRY:
    raise ValueError(f"Unknown quantizer {identifier!r}; estimators: {names()}, k-bit "
                     f"quantizers: {quantizer_names()}.")
  fn = _REGISTRY[name]
  if kwargs:
    raise ValueError(f"Estimator {name!r} takes no constructor arguments, got {sorted(kwargs)}; "
                     "pass its hyper-parameters when calling it.")
  if fn is dorefa and (bits is not None or role is not None):
    k = 2 if bits is None else int(bits)
    built = functools.partial(dorefa, k_bit=k, mode=role or "activations")
    built.precision = k  # type: ignore[attr-defined]
    return built
  if bits is not None and int(bits) != fn.precision:
    raise ValueError(f"Quantizer {name!r} has {fn.precision} bit(s); got bits={bits}.")
  return fn


def bits_of(identifier: str | Estimator | None, **kwargs: Any) -> int:
  """Output precision of an estimator: 1 for signs, 2 for ternary, `k_bit` for DoReFa, 32 for None.

  `functools.partial` objects are looked through, so `partial(dorefa, k_bit=4)` gives 4.
  """
  if identifier is None:
    return 32
  if isinstance(identifier, functools.partial):
    return bits_of(identifier.func, **{**identifier.keywords, **kwargs})
  if "k_bit" in kwargs:
    return int(kwargs["k_bit"])
  if isinstance(identifier, str):
    return int(get(identifier).precision)  # get raises, naming the known estimators
  return int(getattr(identifier, "precision", 32))


def _hp(value: ArrayLike, x: jax.Array) -> jax.Array:
  """A hyper-parameter as a 0-d array in the dtype of `x` (keeps the computation in x's dtype)."""
  return jnp.asarray(value).astype(x.dtype)


def _larq_sign(x: jax.Array) -> jax.Array:
  # larq/math.py: sign(sign(x) + 0.1) maps 0 (and -0.0) to +1.
  return jnp.sign(jnp.sign(x) + jnp.asarray(0.1, x.dtype))


def _estimator(forward: Callable[..., jax.Array],
               grad: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
  """Builds a custom_vjp `f(x, *hps)` with forward `forward(x, *hps)`, d/dx `grad(x, g, *hps)`.

  Hyper-parameters are differentiable-looking arguments with a zero cotangent rather than
  nondiff_argnums, so traced schedule values never trigger a retrace.
  """
  @jax.custom_vjp
  def f(x, *hps):
    return forward(x, *hps)

  def fwd(x, *hps):
    return forward(x, *hps), (x, hps)

  def bwd(res, g):
    x, hps = res
    return (grad(x, g, *hps),) + tuple(jnp.zeros_like(h) for h in hps)

  f.defvjp(fwd, bwd)
  return f


def _clipped(x: jax.Array, g: jax.Array, clip: jax.Array) -> jax.Array:
  # larq `_clipped_gradient`: pass g where |x| <= clip_value (inclusive), else 0.
  return jnp.where(jnp.abs(x) <= clip, g, jnp.zeros_like(g))


_ste_sign = _estimator(lambda x, c: _larq_sign(x), _clipped)
_approx_sign = _estimator(
    lambda x: _larq_sign(x),
    lambda x, g: jnp.where(jnp.abs(x) <= 1, (1 - jnp.abs(x)) * 2 * g, jnp.zeros_like(g)))


def _swish_grad(x, g, beta):
  b_x = beta * x
  # Same operation order as larq so float32 results match bit for bit.
  return g * beta * (2 - b_x * jnp.tanh(b_x * 0.5)) / (1 + jnp.cosh(b_x))


_swish_sign = _estimator(lambda x, b: _larq_sign(x), _swish_grad)
_ste_tern = _estimator(
    lambda x, th, c: jnp.sign(jnp.sign(x + th) + jnp.sign(x - th)),
    lambda x, g, th, c: _clipped(x, g, c))
_ste_heaviside = _estimator(lambda x, c: jnp.sign(jax.nn.relu(x)), _clipped)
_k_bit = _estimator(
    lambda x, n: jnp.round(jnp.clip(x, 0, 1) * n) / n,
    # tf.clip_by_value's gradient: 1 on the closed interval [0, 1].
    lambda x, g, n: jnp.where((x >= 0) & (x <= 1), g, jnp.zeros_like(g)))


def _rbnn_grad(x, g, t, k):
  # Official BinaryQuantize.backward: k * (2 sqrt(t^2/2) - |t^2 x|), clamped at 0, times g.
  # 2 sqrt(t^2 / 2) = sqrt(2) |t|; written in the official op order for bitwise agreement.
  return jnp.maximum(k * (2 * jnp.sqrt(t * t / 2) - jnp.abs(t * t * x)), 0) * g


_rbnn_sign = _estimator(lambda x, t, k: jnp.sign(x), _rbnn_grad)


def _clip_or_inf(clip_value: ArrayLike | None, x: jax.Array) -> jax.Array:
  # larq: clip_value=None means an unclipped identity gradient.
  return _hp(jnp.inf if clip_value is None else clip_value, x)


@register("ste_sign", bits=1)
def ste_sign(x: ArrayLike, clip_value: ArrayLike | None = 1.0) -> jax.Array:
  """Sign with the clipped straight-through estimator (BNN, Courbariaux et al. 2016; larq).

  Forward `q(x) = -1 if x < 0 else +1` (sign(0) = +1, as larq).
  Backward `dq/dx = 1 if |x| <= clip_value else 0` (identity when clip_value is None).

  Args:
    x: input of any shape.
    clip_value: gradient window; Python number, 0-d array (may be traced) or None.

  Returns:
    +-1 in the dtype of `x`.
  """
  x = jnp.asarray(x)
  return _ste_sign(x, _clip_or_inf(clip_value, x))


@register("approx_sign", bits=1)
def approx_sign(x: ArrayLike) -> jax.Array:
  """Sign with Bi-Real Net's ApproxSign gradient (Liu et al. 2018, arXiv 1808.00278, eq. 7).

  Forward `-1 if x < 0 else +1` (sign(0) = +1). Backward `2 - 2|x|` for `|x| <= 1`, else 0
  (the derivative of the piecewise quadratic approximation of sign).

  Args:
    x: input of any shape.

  Returns:
    +-1 in the dtype of `x`.
  """
  return _approx_sign(jnp.asarray(x))


@register("swish_sign", bits=1)
def swish_sign(x: ArrayLike, beta: ArrayLike = 5.0) -> jax.Array:
  """Sign with the SignSwish gradient (BNN+, Darabi et al. 2018, arXiv 1812.11800, eq. 4).

  Forward `-1 if x < 0 else +1` (sign(0) = +1). Backward
  `beta (2 - beta x tanh(beta x / 2)) / (1 + cosh(beta x))`; peak `beta` at 0.

  Args:
    x: input of any shape.
    beta: sharpness; Python number or (traced) 0-d array.

  Returns:
    +-1 in the dtype of `x`.
  """
  x = jnp.asarray(x)
  return _swish_sign(x, _hp(beta, x))


def _channel_mean_abs(x: jax.Array) -> jax.Array:
  # One scale per channel of the last axis (the output channels of HWIO / (in, out) kernels).
  return jnp.mean(jnp.abs(x), axis=tuple(range(x.ndim - 1)))


@register("magnitude_aware_sign", bits=1)
def magnitude_aware_sign(x: ArrayLike, clip_value: ArrayLike | None = 1.0) -> jax.Array:
  """Bi-Real Net's magnitude-aware sign for weights (arXiv 1808.00278, sec. 3.3; larq).

  Forward `s * ste_sign(x)` with `s = mean(|x|)` over all axes but the last (per output channel
  of an HWIO kernel or an (in, out) dense kernel), `s` under stop_gradient.
  Backward `s * [|x| <= clip_value]`.

  Args:
    x: input of any shape; the last axis is the channel axis.
    clip_value: gradient window of the inner ste_sign.

  Returns:
    `{-s, +s}` per channel, in the dtype of `x`.
  """
  x = jnp.asarray(x)
  return jax.lax.stop_gradient(_channel_mean_abs(x)) * ste_sign(x, clip_value)


@register("xnor_sign", bits=1)
def xnor_sign(x: ArrayLike, clip_value: ArrayLike | None = 1.0) -> jax.Array:
  """XNOR-Net's scaled weight sign (Rastegari et al. 2016, arXiv 1603.05279, Sec. 3.1, eq. 4-7).

  Forward `a * ste_sign(x)` with `a = mean(|x|)` over all axes but the last (per output filter
  of an HWIO kernel, as `magnitude_aware_sign`). Unlike `magnitude_aware_sign`, `a` is
  differentiated: backward `a [|x| <= clip_value] g + sign(x) mean(g * ste_sign(x))` (mean per
  filter), whose own-entry part is XNOR-Net's `g (1/n + a [|x| <= 1])` (n entries per filter).

  Args:
    x: a kernel with its output channels last (HWIO, or (in, out)).
    clip_value: the sign's straight-through gradient is cut where |x| > clip_value.

  Returns:
    `a * sign(x)` with one `a` per output channel, in the dtype of `x`.
  """
  x = jnp.asarray(x)
  return _channel_mean_abs(x) * ste_sign(x, clip_value)


@register("ste_tern", bits=2)
def ste_tern(x: ArrayLike, threshold_value: ArrayLike = 0.05,
             ternary_weight_networks: bool = False,
             clip_value: ArrayLike | None = 1.0) -> jax.Array:
  """Ternarisation with a clipped straight-through gradient (TWN, Li et al. 2016; larq).

  Forward `sign(sign(x + D) + sign(x - D))`: +1 for x >= D, 0 for |x| < D, -1 for x <= -D.
  `D = threshold_value`, or `0.7 mean(|x|)` over the whole tensor when `ternary_weight_networks`
  (TWN eq. 10). Backward `1 if |x| <= clip_value else 0` (no gradient through D).

  Args:
    x: input of any shape.
    threshold_value: D when not using the TWN rule; may be traced.
    ternary_weight_networks: compute D from x (static Python bool).
    clip_value: gradient window.

  Returns:
    -1, 0 or +1 in the dtype of `x`.
  """
  x = jnp.asarray(x)
  if ternary_weight_networks:
    threshold = jax.lax.stop_gradient(0.7 * jnp.sum(jnp.abs(x)) / x.size).astype(x.dtype)
  else:
    threshold = _hp(threshold_value, x)
  return _ste_tern(x, threshold, _clip_or_inf(clip_value, x))


@register("ste_heaviside", bits=1)
def ste_heaviside(x: ArrayLike, clip_value: ArrayLike | None = 1.0) -> jax.Array:
  """Heaviside step {0, 1} with a clipped straight-through gradient (larq `ste_heaviside`).

  Forward `1 if x > 0 else 0` (so 0 maps to 0). Backward `1 if |x| <= clip_value else 0`.

  Args:
    x: input of any shape.
    clip_value: gradient window.

  Returns:
    0 or 1 in the dtype of `x`.
  """
  x = jnp.asarray(x)
  return _ste_heaviside(x, _clip_or_inf(clip_value, x))


@register("dorefa", bits=2)
def dorefa(x: ArrayLike, k_bit: ArrayLike = 2, mode: str = "activations") -> jax.Array:
  """k-bit DoReFa quantiser (Zhou et al. 2016, arXiv 1606.06160, eq. 5, 9; larq `DoReFa`).

  Activations: `q = round(clip(x, 0, 1) n) / n`, `n = 2**k_bit - 1` (round half to even, as
  tf.round); gradient 1 on `0 <= x <= 1`, else 0.
  Weights (`mode="weights"`, eq. 9): `2 q(tanh(x) / (2 max|tanh x|) + 1/2) - 1`, with the max under
  stop_gradient (larq), gradient through tanh by autodiff.

  Args:
    x: input of any shape.
    k_bit: bits; Python int or (traced) 0-d array.
    mode: "activations" or "weights" (static).

  Returns:
    quantised values in the dtype of `x` (all-zero weights give q(1/2) * 2 - 1, as larq's
    `divide_no_nan`).
  """
  x = jnp.asarray(x)
  n = _hp(2.0 ** k_bit - 1 if isinstance(k_bit, int) else jnp.power(2.0, k_bit) - 1, x)
  if mode == "activations":
    return _k_bit(x, n)
  if mode == "weights":
    limited = jnp.tanh(x)
    dividend = jax.lax.stop_gradient(jnp.max(jnp.abs(limited)))
    # larq's tf.math.divide_no_nan: an all-zero tensor maps to 0 / 0 := 0, i.e. q(1/2).
    safe = jnp.where(dividend > 0, 2 * dividend, 1)
    return 2 * _k_bit(jnp.where(dividend > 0, limited / safe, 0) + 0.5, n) - 1
  raise ValueError(f"dorefa mode must be 'activations' or 'weights', got {mode!r}.")


_REGISTRY["dorefa_quantizer"] = dorefa  # larq's older alias


@register("rbnn_sign", bits=1)
def rbnn_sign(x: ArrayLike, t: ArrayLike = 1.0, k: ArrayLike = 1.0) -> jax.Array:
  """RBNN's training-aware sign (Lin et al. 2020, arXiv 2009.13055, eq. 16-17; official code).

  Forward `jnp.sign(x)` with sign(0) = 0 (official `torch.sign`). Backward, the derivative of
  `F(x) = k (sqrt(2) t x - t^2 x|x| / 2)` inside `|x| < sqrt(2)/t`:
  `dF/dx = k max(0, sqrt(2) t - t^2 |x|)` (computed as the official `2 sqrt(t^2/2)`, i.e.
  `sqrt(2)|t|`). Its integral over x is 2k. Activations use `rbnn_sign(x, max(t, 1), 1)`.

  Args:
    x: input of any shape.
    t: sharpness from `rbnn_schedule`; Python number or (traced) 0-d array.
    k: gradient scale from `rbnn_schedule`; Python number or (traced) 0-d array. The defaults
      (t = k = 1) only make the function usable as a one-argument registry quantizer.

  Returns:
    -1, 0 or +1 in the dtype of `x`.
  """
  x = jnp.asarray(x)
  return _rbnn_sign(x, _hp(t, x), _hp(k, x))


def rbnn_schedule(epoch: ArrayLike, epochs: ArrayLike, t_min: ArrayLike = 1e-2,
                  t_max: ArrayLike = 10.0) -> tuple[jax.Array, jax.Array]:
  """RBNN's per-epoch (t, k) (arXiv 2009.13055, eq. 18; official `cpt_tk`).

  `t = t_min (t_max / t_min) ** (epoch / epochs)` (t_max is never reached for epoch < epochs) and
  `k = max(1 / t, 1)`. All arguments may be traced, so the schedule lives in the train state.

  Args:
    epoch: 0-based epoch index.
    epochs: total number of epochs E.
    t_min: T_min (official 1e-2).
    t_max: T_max (official 10).

  Returns:
    `(t, k)` as 0-d arrays of the default float dtype.
  """
  dtype = jnp.result_type(float)
  e = jnp.asarray(epoch, dtype)
  t_min = jnp.asarray(t_min, dtype)
  t = t_min * (jnp.asarray(t_max, dtype) / t_min) ** (e / jnp.asarray(epochs, dtype))
  return t, jnp.maximum(1 / t, jnp.asarray(1, dtype))


