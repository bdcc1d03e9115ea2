"""Rule-based quantisation of an unmodified linen model (qwix / aqt style).

`quantize(model, rules)` returns a linen module with the model's `init` / `apply` signature and
the SAME parameter tree, whose `nn.Conv` / `nn.Dense` calls that match a rule compute with
quantised inputs and kernels. It is a `flax.linen.intercept_methods` interceptor on the
`__call__` of `nn.Conv` / `nn.Dense` instances (aqt's `flax/intercept`, not a patch of `jax.lax`):
the interceptor reads the module's `kernel` / `bias`, quantises them and the input, and computes
the convolution with the module's strides, padding, dilation and groups itself. As in the binary
layers (`BinaryConv`, larq `pad_values=0`, official RBNN) the zero padding is applied AFTER the
input quantiser: the input is padded explicitly, then convolved with VALID padding.

Rules are matched in order; the first whose `module_path` regex FULLY matches the layer path
(relative to the quantised model, e.g. "stage1_block0/Conv_0") wins (qwix's convention). The
first and the last quantisable layer (first / last `nn.Conv` or `nn.Dense` call in call order,
i.e. the stem and the classifier of a classifier) stay float unless `keep_first_last_float=False`;
call order is found by a shape-only pre-pass (`jax.eval_shape`, nothing computed) per input
signature. One line per layer is logged the first time it is traced, like qwix's "[QWIX]" log.

Example:
  >>> from jaxcompress import quant
  >>> rules = [quant.QuantRule(module_path="stage.*", input_quantizer="ste_sign",
  ...                          kernel_quantizer="ste_sign", scale="channel")]
  >>> qmodel = quant.quantize(model, rules)
  >>> variables = qmodel.init(rng, x)          # same tree as model.init(rng, x)
  >>> logits = qmodel.apply(variables, x)
  >>> summary(qmodel, x, layer_bits=quant.layer_bits_fn(qmodel))
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import re
import threading
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxcompress import recording
from jaxcompress.ops import padding as padding_lib
from jaxcompress.quant import estimators

Quantizer = str | Callable[..., jax.Array] | None
_SCALES = (None, "channel", "tensor")
_LOG_PREFIX = "[jaxcompress.quant]"


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuantRule:
  """Which layers to quantise and how.

  Attributes:
    module_path: regex fully matched against the layer path ("a/b/Conv_0") relative to the model.
    input_quantizer: a name `quant.get` resolves (estimators, `quant.names()`: "ste_sign",
      "approx_sign", "dorefa", ...; k-bit quantizers, `quant.quantizer_names()`: "absmax",
      "absmax_per_channel", "unsigned", "pams_weight", "clip"), a callable, or None (float).
    kernel_quantizer: the same for the kernel.
    bits: bit width for k-bit names ("dorefa" -> k_bit, k-bit quantizers -> bits; default 8,
      DoReFa 2); must be None or 1 with sign estimators (`quant.get`).
    scale: None, "channel" (XNOR-Net: the output is multiplied by mean|w| of the latent kernel
      per output channel) or "tensor" (one mean|w|); the scale is a detached statistic
      (stop_gradient, like larq's magnitude_aware_sign), applied to the conv output so the
      binary product itself stays exact.
  """
  module_path: str = ".*"
  input_quantizer: Quantizer = "ste_sign"
  kernel_quantizer: Quantizer = "ste_sign"
  bits: int | None = None
  scale: str | None = None

  def __post_init__(self):
    re.compile(self.module_path)
    if self.scale not in _SCALES:
      raise ValueError(f"scale must be one of {_SCALES}, got {self.scale!r}.")
    self.input_fn(), self.kernel_fn()  # fail at construction on unknown names  # pylint: disable=expression-not-assigned

  def input_fn(self) -> Callable[[jax.Array], jax.Array] | None:
    return resolve_quantizer(self.input_quantizer, self.bits, "activations")

  def kernel_fn(self) -> Callable[[jax.Array], jax.Array] | None:
    return resolve_quantizer(self.kernel_quantizer, self.bits, "weights")

  @property
  def input_bits(self) -> int:
    return _precision(self.input_fn())

  @property
  def weight_bits(self) -> int:
    return _precision(self.kernel_fn())

  def matches(self, path: str) -> bool:
    return re.fullmatch(self.module_path, path) is not None


def _precision(fn: Any) -> int:
  if fn is None:
    return 32
  bits = getattr(fn, "precision", None)
  if bits is None:
    bits = getattr(fn, "bits", None)
  return estimators.bits_of(fn) if bits is None else int(bits)


@functools.lru_cache(maxsize=None)
def _cached_resolve(name: str, bits: int | None, role: str) -> Callable[[jax.Array], jax.Array]:
  # Cached so every call of a rule's input_fn / kernel_fn returns the same object.
  return estimators.get(name, bits=bits, role=role)


def resolve_quantizer(q: Quantizer, bits: int | None = None,
                      role: str = "activations") -> Callable[[jax.Array], jax.Array] | None:
  """A rule's quantizer as a callable (None stays None); `role` is "activations" or "weights"."""
  if q is None or (callable(q) and not isinstance(q, str)):
    return q
  return _cached_resolve(q, bits, role)


# ----------------------------------------------------------------------------------------------
# Fake-quantised layer computations (shared with export.py).


def as_tuple(v: Any, nd: int) -> tuple[int, ...]:
  if v is None:
    return (1,) * nd
  return (int(v),) * nd if isinstance(v, int) else tuple(int(i) for i in v)


def channel_scale(kernel: jax.Array, scale: str | None) -> jax.Array | None:
  """XNOR-Net's detached mean|w| per output channel (last axis) or per tensor."""
  if scale is None:
    return None
  a = jnp.abs(lax.stop_gradient(kernel))
  if scale == "channel":
    return jnp.mean(a, axis=tuple(range(kernel.ndim - 1)))
  return jnp.mean(a)


def quantized_conv(module: nn.Conv, rule: QuantRule, x: jax.Array, kernel: jax.Array,
                   bias: jax.Array | None) -> jax.Array:
  """`nn.Conv` forward with rule-quantised input / kernel, padding applied after quantisation."""
  nd = kernel.ndim - 2
  if isinstance(module.padding, str) and module.padding.upper() in ("CIRCULAR", "CAUSAL",
                                                                    "REFLECT"):
    raise NotImplementedError(f"{module.padding} padding is not supported by quantize().")
  if as_tuple(module.input_dilation, nd) != (1,) * nd or module.mask is not None:
    raise NotImplementedError("quantize() supports nn.Conv without input_dilation or mask.")
  unbatched = x.ndim == nd + 1
  batch_shape = x.shape[:-(nd + 1)]
  if unbatched:
    x = x[None]
  elif len(batch_shape) > 1:
    x = x.reshape((-1,) + x.shape[-(nd + 1):])
  x, kernel, bias = module.promote_dtype(x, kernel, bias, dtype=module.dtype)
  q_in, q_k = rule.input_fn(), rule.kernel_fn()
  xq = x if q_in is None else q_in(x)
  kq = kernel if q_k is None else q_k(kernel)
  strides = as_tuple(module.strides, nd)
  dil = as_tuple(module.kernel_dilation, nd)
  pads = padding_lib.explicit_pads(module.padding, x.shape[1:-1], kernel.shape[:nd], strides, dil)
  xq = jnp.pad(xq, [(0, 0), *pads, (0, 0)])  # zeros AFTER quantisation (binary-conv border)
  spatial = "DHW"[-nd:] if nd <= 3 else None
  dn = lax.conv_dimension_numbers(xq.shape, kq.shape,
                                  ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C"))
  conv = module.conv_general_dilated or lax.conv_general_dilated
  y = conv(lhs=xq, rhs=kq.astype(xq.dtype), window_strides=strides, padding="VALID",
           rhs_dilation=dil, dimension_numbers=dn, feature_group_count=module.feature_group_count,
           precision=module.precision)
  alpha = channel_scale(kernel, rule.scale)
  if alpha is not None:
    y = y * alpha.astype(y.dtype)
  if bias is not None:
    y = y + bias.reshape((1,) * (y.ndim - 1) + (-1,))
  if unbatched:
    return y[0]
  return y.reshape(batch_shape + y.shape[1:]) if len(batch_shape) > 1 else y


def quantized_dense(module: nn.Dense, rule: QuantRule, x: jax.Array, kernel: jax.Array,
                    bias: jax.Array | None) -> jax.Array:
  """`nn.Dense` forward with rule-quantised input / kernel."""
  x, kernel, bias = module.promote_dtype(x, kernel, bias, dtype=module.dtype)
  q_in, q_k = rule.input_fn(), rule.kernel_fn()
  xq = x if q_in is None else q_in(x)
  kq = kernel if q_k is None else q_k(kernel)
  y = lax.dot_general(xq, kq.astype(xq.dtype), (((xq.ndim - 1,), (0,)), ((), ())),
                      precision=module.precision)
  alpha = channel_scale(kernel, rule.scale)
  if alpha is not None:
    y = y * alpha.astype(y.dtype)
  if bias is not None:
    y = y + bias.reshape((1,) * (y.ndim - 1) + (-1,))
  return y


def is_quantizable(module: Any) -> bool:
  return isinstance(module, (nn.Conv, nn.Dense))


# ----------------------------------------------------------------------------------------------
# The transform.


class _State:
  """Mutable per-transform bookkeeping shared by every clone of a `Quantized` module."""

  def __init__(self):
    self.lock = threading.Lock()
    self.plans: dict[Any, tuple[str, ...]] = {}   # input signature -> float (first/last) paths
    self.decisions: dict[str, QuantRule | None] = {}  # path -> rule used (None: float)
    self.logged: set[str] = set()


@dataclasses.dataclass(frozen=True)
class _Static:
  """Holds the unbound model outside linen's field binding (used by the shape pre-pass)."""
  model: Any

  def __hash__(self):
    return id(self.model)


def _rel(path: Sequence[str], prefix: Sequence[str]) -> str:
  return "/".join(path[len(prefix):])


def _signature(args: Any, kwargs: Any) -> Any:
  leaves, tree = jax.tree_util.tree_flatten((args, kwargs))
  sig = []
  for leaf in leaves:
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
      sig.append(("array", tuple(leaf.shape), str(leaf.dtype)))
    else:
      try:
        hash(leaf)
        sig.append(("static", leaf))
      except TypeError:
        sig.append(("static", id(leaf)))
  return tree, tuple(sig)


def call_order(model: nn.Module, rng_names: Sequence[str], args: Any,
               kwargs: Any) -> list[tuple[str, str]]:
  """(path, "conv"|"dense") of every `nn.Conv` / `nn.Dense` call of `model.init`, in call order.

  Shape-only (`recording.record_calls`), so nothing is computed; array arguments may be tracers.
  The pre-pass is isolated from the callers' interceptors (e.g. `summary`'s recorder), which
  would otherwise record it as extra layers.
  """
  leaves, tree = jax.tree_util.tree_flatten((args, kwargs))
  is_arr = [hasattr(l, "shape") and hasattr(l, "dtype") for l in leaves]
  abstract = [jax.ShapeDtypeStruct(l.shape, l.dtype) for l, a in zip(leaves, is_arr) if a]

  def run(*arrays):
    it = iter(arrays)
    full = [next(it) if a else l for l, a in zip(leaves, is_arr)]
    a, kw = jax.tree_util.tree_unflatten(tree, full)
    rngs = {name: jax.random.key(0) for name in set(rng_names) | {"params"}}
    return model.init(rngs, *a, **kw)

  calls, _ = recording.record_calls(run, *abstract)
  return [(c.name, "conv" if isinstance(c.module, nn.Conv) else "dense")
          for c in calls if is_quantizable(c.module)]


class Quantized(nn.Module):
  """A model whose matching Conv/Dense layers compute quantised (built by `quantize`).

  Shares its scope with `model` (`nn.share_scope`), so the variables are exactly the model's.
  """
  model: nn.Module
  rules: tuple[QuantRule, ...]
  keep_first_last_float: bool = True
  log: Callable[[str], Any] | None = None
  static: _Static | None = None
  state: _State | None = dataclasses.field(default=None, compare=False, hash=False)

  def setup(self):
    nn.share_scope(self, self.model)

  def _float_paths(self, args: Any, kwargs: Any) -> tuple[str, ...]:
    if self.state is None or self.static is None:
      raise ValueError("Build Quantized modules with quant.quantize(model, rules).")
    if not self.keep_first_last_float:
      return ()
    key = _signature(args, kwargs)
    with self.state.lock:
      if key in self.state.plans:
        return self.state.plans[key]
    order = call_order(self.static.model, list(self.scope.rngs), args, kwargs)
    paths = tuple(dict.fromkeys([order[0][0], order[-1][0]])) if order else ()
    with self.state.lock:
      self.state.plans[key] = paths
    return paths

  def __call__(self, *args, **kwargs):
    float_paths = self._float_paths(args, kwargs)
    prefix = tuple(self.path)
    state, log, rules = self.state, self.log, self.rules

    def interceptor(next_fun, a, kw, context):
      mod = context.module
      if context.method_name != "__call__" or not is_quantizable(mod):
        return next_fun(*a, **kw)
      path = _rel(mod.path, prefix)
      rule, why = decide(rules, path, float_paths)
      with state.lock:
        state.decisions[path] = rule
        first_time = path not in state.logged
        state.logged.add(path)
      if first_time and log is not None:
        log(f"{_LOG_PREFIX} {path or '(root)'} ({type(mod).__name__}): {why}")
      if rule is None:
        return next_fun(*a, **kw)
      if not mod.has_variable("params", "kernel"):
        next_fun(*a, **kw)  # init: let the layer create its parameters
      x = a[0] if a else kw["inputs"]
      kernel = mod.get_variable("params", "kernel")
      bias = mod.get_variable("params", "bias") if mod.use_bias else None
      fn = quantized_conv if isinstance(mod, nn.Conv) else quantized_dense
      return fn(mod, rule, x, kernel, bias)

    with nn.intercept_methods(interceptor):
      return self.model(*args, **kwargs)


def decide(rules: Sequence[QuantRule], path: str,
           float_paths: Sequence[str] = ()) -> tuple[QuantRule | None, str]:
  """The rule for a layer path (first full match; None = float) and a description of why."""
  if path in float_paths:
    return None, "float (first/last layer kept float)"
  for i, rule in enumerate(rules):
    if rule.matches(path):
      return rule, (f"rule {i} {rule.module_path!r}: input {_name(rule.input_quantizer)}, kernel "
                    f"{_name(rule.kernel_quantizer)}, weight/input bits "
                    f"{rule.weight_bits}/{rule.input_bits}"
                    + (f", scale {rule.scale}" if rule.scale else ""))
  return None, "float (no rule matched)"


def _name(q: Quantizer) -> str:
  if q is None:
    return "float"
  if isinstance(q, str):
    return q
  return getattr(q, "__name__", type(q).__name__)


def _default_log(msg: str) -> None:
  logging.getLogger("jaxcompress.quant").info(msg)


def quantize(model: nn.Module, rules: QuantRule | Sequence[QuantRule] | Sequence[dict], *,
             keep_first_last_float: bool = True,
             log: Callable[[str], Any] | None = _default_log) -> Quantized:
  """Quantises the `nn.Conv` / `nn.Dense` layers of `model` that match `rules`.

  Args:
    model: an unbound linen module (any architecture built from `nn.Conv` / `nn.Dense`).
    rules: `QuantRule`s (or dicts of their fields, as `config.quant.rules`); first match wins.
    keep_first_last_float: keep the first and last Conv/Dense call float (papers' convention).
    log: called with one line per layer the first time it is traced (`print`, a list's
      `append`, ...); None silences it. Default: `logging.getLogger("jaxcompress.quant").info`.

  Returns:
    A linen module with `model`'s `init` / `apply` signature and the same variables.

  Example:
    >>> qmodel = quantize(model, [QuantRule(module_path=".*")], log=print)
    >>> y = qmodel.apply(qmodel.init(rng, x), x)
  """
  if isinstance(rules, (QuantRule, dict)):
    rules = [rules]
  rules = tuple(r if isinstance(r, QuantRule) else QuantRule(**r) for r in rules)
  return Quantized(model=model, rules=rules, keep_first_last_float=keep_first_last_float,
                   log=log, static=_Static(model), state=_State())


def layer_bits_fn(model_or_rules: Quantized | QuantRule | Sequence[QuantRule]
                  ) -> Callable[[str, nn.Module], tuple[int, int] | None]:
  """A `layer_bits` callback for `jaxcompress.summary.summary` describing a quantisation.

  With a `Quantized` model the decisions recorded when it was last traced are used (so the
  first/last-float choice is reflected; `summary` traces the model before it asks). With bare
  rules only the regexes are applied (no first/last exception), to Conv/Dense modules.

  Example:
    >>> summary(qmodel, x, layer_bits=layer_bits_fn(qmodel))
  """
  if isinstance(model_or_rules, Quantized):
    state = model_or_rules.state

    def from_model(path: str, module: nn.Module) -> tuple[int, int] | None:
      if path not in state.decisions:
        return None
      rule = state.decisions[path]
      return (32, 32) if rule is None else (rule.weight_bits, rule.input_bits)
    return from_model

  rules = ([model_or_rules] if isinstance(model_or_rules, QuantRule) else list(model_or_rules))

  def from_rules(path: str, module: nn.Module) -> tuple[int, int] | None:
    if not is_quantizable(module):
      return None
    for rule in rules:
      if rule.matches(path):
        return rule.weight_bits, rule.input_bits
    return None
  return from_rules
