"""Train -> convert -> serve (aqt's modes): real low-bit weights and a forward that reads them.

`export(variables, model, *example_args, **apply_kwargs)` walks one (shape-only) forward of a
trained model and converts every quantised layer it meets:

* binary layers (1-bit kernel: `BinaryConv` / `BinaryDense`, or `nn.Conv` / `nn.Dense` matched by
  a 1-bit `QuantRule` of `quantize`): the kernel's signs, bit-packed into `uint32` along the
  flattened (kh*kw*cin) reduction axis (32 per word; the last word's unused bits are 0 in weights
  AND activations, so they never count), plus a float per-output-channel `scale` (the kernel's
  magnitude for magnitude-aware quantizers, XNOR's mean|w|, and a folded BatchNorm) and `shift`;
* k-bit layers (kernel quantizer `AbsMaxQuantizer` / `absmax*` / `PAMSWeightQuantizer`, bits <= 8):
  `int8` kernels plus their float step; other k-bit quantizers keep their fake-quantised kernel
  in float (format "float", listed in `Exported.notes`);
* RBNN convolutions (`RBNNConv`, found by type): the binary weight `sign(w3)`, with
  `w3 = w2 + |sin theta| (R1^T X R2 - w2)` the mixed rotated standardised kernel (paper eq. 15,
  `rotation.rbnn_mixed_weight`), is fixed after training, so it is computed once and bit-packed
  like the binary layers; the float `scale` is the learned per-channel alpha (eq. 16), times a
  folded BatchNorm; the rotations, angles and latent kernel are dropped;
* everything else (stem, classifier, norms) is left as is, and so are grouped (e.g. depthwise)
  quantised convolutions, which run their training forward (listed in `Exported.notes`).

BatchNorm folding: an inference BatchNorm (`use_running_average=True`, feature axis last) whose
input is exactly the output of a converted layer, and which is the next module called after it,
is folded into that layer's `scale` / `shift` and dropped. This assumes the BatchNorm is the only
consumer of that output (true of every conv-BN pair in `jaxcompress.models`); pass
`fold_bn=False` for models where a quantised layer's raw output is also used elsewhere. BatchNorms
in training mode, after float layers, or on other axes are never folded.

`serve_apply(exported, x)` runs the model's own forward (`model.apply`, so shortcuts, pooling and
activations are the model's code) with the converted layers replaced by:

* XNOR-popcount for binary layers whose input quantizer is a +-1 sign (`ste_sign`,
  `approx_sign`, `swish_sign`): binarise (the training quantizer's forward, then
  `> 0`), im2col, pack to `uint32`, and `dot = K - 2 * popcount(a ^ w)` accumulated word by word
  in a `lax.fori_loop` (measured: 3.9x faster than a float matmul on a 256x4608x512 binary dense
  on CPU; a broadcast xor-popcount-sum over all words is 3.2x slower). Convolution zero padding
  is applied after binarisation in training, so a padded tap contributes 0, not +-1: padded taps
  are packed as bit 0 (-1) and the dot product is corrected by `padmask @ tapsum`, where
  `tapsum[tap, o]` is the sum of the binary weights of a kernel tap (exact integer arithmetic);
* RBNN convolutions the same XNOR-popcount, with the activation binarised as the training
  forward does: `sign` of the per-sample standardised input (unbiased std, official code), which,
  standardisation being a positive affine map per sample, is `sign(x - mean)` with the per-sample
  mean over (H, W, C) computed at serve time (`rotation.rbnn_activation_sign`). sign(0) = 0 has
  no bit: an entry exactly equal to its sample's mean is packed as -1 and corrected exactly by
  adding `conv(zero mask, w)` under a `lax.cond` (run only when such an entry exists). A kernel
  whose `w3` has an exact 0 (sign 0) is kept as a float ternary kernel (mode "float", in `notes`).
  A constant sample (std 0) is NaN in training and 0-centred here;
* an unpacked +-1 kernel with a float product when the input is not binary;
* the dequantised int8 kernel (`q * step`, the training quantizer's arithmetic) for k-bit layers.

Example (the same for `layers="rbnn"`, with all of `model.init`'s collections in `variables`):
  >>> model = models.build("resnet20", layers="binary")
  >>> exported = quant.export(variables, model, x, train=False)
  >>> logits = quant.serve_apply(exported, x)          # == model.apply(variables, x)
  >>> quant.export_sizes(exported)                     # packed vs float32 bytes
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Callable, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct, traverse_util
from jax import lax

from jaxcompress import recording
from jaxcompress.ops import binary_conv
from jaxcompress.ops import conv as conv_ops
from jaxcompress.ops import padding as padding_lib
from jaxcompress.quant import estimators, rotation, serve_fusion, transform
from jaxcompress.quant import layers as qlayers
from jaxcompress.quant import quantizers as quantizers_lib

# Input quantizers whose forward is exactly +-1 (larq's sign(0) = +1). rbnn_sign is not one:
# sign(0) = 0 (e.g. after a ReLU) has no bit, so such layers run the float product.
_PM1_INPUTS = ("ste_sign", "approx_sign", "swish_sign")
# Words up to which the XNOR product is unrolled rather than looped (see xnor_popcount_matmul).
_UNROLL_WORDS = 32


# ----------------------------------------------------------------------------------------------
# Bit packing and the XNOR-popcount product.


def pack_bits(bits: jax.Array) -> jax.Array:
  """Packs a boolean array along its last axis into `uint32` words, bit i of word j = bits[32j+i].

  The last word is padded with 0 bits.

  Example:
    >>> pack_bits(jnp.array([True, False, True]))   # [5]
  """
  n = bits.shape[-1]
  words = -(-n // 32)
  b = jnp.pad(bits.astype(jnp.uint32), [(0, 0)] * (bits.ndim - 1) + [(0, words * 32 - n)])
  b = b.reshape(bits.shape[:-1] + (words, 32))
  return jnp.sum(b << jnp.arange(32, dtype=jnp.uint32), axis=-1, dtype=jnp.uint32)


def unpack_bits(words: jax.Array, n: int) -> jax.Array:
  """Inverse of `pack_bits`: `(..., ceil(n/32))` uint32 -> `(..., n)` bool."""
  b = (words[..., None] >> jnp.arange(32, dtype=jnp.uint32)) & jnp.uint32(1)
  return b.reshape(words.shape[:-1] + (-1,))[..., :n].astype(bool)


def xnor_popcount_matmul(a_words: jax.Array, w_words: jax.Array, n: int,
                         unroll_words: int = _UNROLL_WORDS) -> jax.Array:
  """+-1 dot products from packed signs: `(M, W) x (W, O) -> (M, O)` int32, `n - 2 popcount(xor)`.

  The working set stays (M, O) int32 and the product is accumulated word by word: never the
  (M, W, O) broadcast (measured 3.2x slower than a float matmul for 256x4608x512). Up to
  `unroll_words` words the sum is written out (XLA fuses it into one pass over the output:
  8x faster than the loop for ResNet-20's 5-18 words); beyond, a `lax.fori_loop` over words
  (the structure measured 3.9x faster than a float matmul for 4608 = 144 words).
  """
  a_t = a_words.T  # (W, M): each step reads one contiguous row
  words = a_words.shape[1]

  def term(i):
    return lax.population_count(a_t[i][:, None] ^ w_words[i][None, :]).astype(jnp.int32)

  if words <= unroll_words:
    pc = term(0)
    for i in range(1, words):
      pc = pc + term(i)
  else:
    acc = jnp.zeros((a_words.shape[0], w_words.shape[1]), jnp.int32)
    pc = lax.fori_loop(0, words, lambda i, acc: acc + term(i), acc)
  return jnp.int32(n) - 2 * pc


# ----------------------------------------------------------------------------------------------
# Exported layers.


@dataclasses.dataclass(frozen=True)
class LayerSpec:
  """Static description of a converted layer."""
  kind: str                      # "conv" | "dense"
  mode: str                      # "xnor" | "binary_weight" | "int" | "float"
  kernel_shape: tuple[int, ...]  # HWIO (conv) or (in, out) (dense)
  strides: tuple[int, ...] = ()
  dilation: tuple[int, ...] = ()
  padding: Any = "VALID"
  input_quantizer: Any = None    # callable or None (hashable: functions / frozen dataclasses)
  qmax: float = 1.0              # int mode: kernel = q * step / qmax
  # xnor mode, RBNN: input bits are `x - per-sample mean > 0`; entries exactly 0 after centring
  # (sign 0, no bit) are corrected exactly (see `_serve_conv`).
  center_input: bool = False

  @property
  def k(self) -> int:
    return int(np.prod(self.kernel_shape[:-1]))


@struct.dataclass
class ExportedLayer:
  """Arrays of one converted layer: `y = core(x) * scale + shift`."""
  weights: jax.Array                 # uint32 (W, O) | int8 kernel | float kernel
  scale: jax.Array                   # (O,) float
  shift: jax.Array                   # (O,) float
  step: jax.Array | None = None      # int mode: broadcastable dequantisation step
  tapsum: jax.Array | None = None    # binary conv: (taps, O) float, sum of +-1 weights per tap
  spec: LayerSpec = struct.field(pytree_node=False, default=None)


@struct.dataclass
class Exported:
  """A converted model: float variables of the rest, converted layers by path."""
  variables: Any
  layers: dict[str, ExportedLayer]
  model: Any = struct.field(pytree_node=False, default=None)
  apply_kwargs: tuple[tuple[str, Any], ...] = struct.field(pytree_node=False, default=())
  folded: tuple[tuple[str, str], ...] = struct.field(pytree_node=False, default=())  # (bn, layer)
  notes: tuple[str, ...] = struct.field(pytree_node=False, default=())


# ----------------------------------------------------------------------------------------------
# Conversion.


_Call = recording.ModuleCall


def _record_calls(model: nn.Module, variables: Any, args: Any,
                  kwargs: Any) -> list[_Call]:
  """Every module `__call__` of one shape-only forward, in the order the calls returned."""
  calls, _ = recording.record_calls(lambda v, *a: model.apply(v, *a, **kwargs), variables, *args)
  return sorted(calls, key=lambda c: c.returned)


def _layer_rule(call: _Call, decisions: dict[str, Any]) -> transform.QuantRule | None:
  """The quantisation of a recorded call as a QuantRule (None: not a converted layer)."""
  mod = call.module
  if isinstance(mod, (qlayers.BinaryConv, qlayers.BinaryDense)):
    if mod.kernel_quantizer is None:
      return None
    return transform.QuantRule(module_path=".*", input_quantizer=mod.input_quantizer,
                               kernel_quantizer=mod.kernel_quantizer)
  if transform.is_quantizable(mod):
    return decisions.get(call.name)
  return None


def _conv_geometry(mod: Any, nd: int) -> tuple[tuple[int, ...], tuple[int, ...], Any]:
  strides = transform.as_tuple(mod.strides, nd)
  dil = transform.as_tuple(getattr(mod, "kernel_dilation", 1), nd)
  return strides, dil, mod.padding


def _int_kernel(q_k: Any, kernel: jax.Array) -> tuple[jax.Array, jax.Array, float] | None:
  """(int8 q, step s, qmax) with `q * s / qmax` == the quantizer's forward, for known quantizers."""
  if isinstance(q_k, (quantizers_lib.AbsMaxQuantizer, quantizers_lib.PAMSWeightQuantizer)):
    if q_k.bits > 8:
      return None
    qmax = 2.0 ** (q_k.bits - 1) - 1
    a = jnp.abs(kernel)
    if isinstance(q_k, quantizers_lib.AbsMaxQuantizer) and q_k.per_channel:
      axis = q_k.channel_axis % kernel.ndim
      s = jnp.max(a, axis=tuple(i for i in range(kernel.ndim) if i != axis), keepdims=True)
    else:
      s = jnp.max(a)
    s = s + jnp.asarray(1e-8, kernel.dtype)
    q = jnp.round(kernel * jnp.asarray(qmax, kernel.dtype) / s)
    return q.astype(jnp.int8), s, qmax
  return None


def _convert(call: _Call, rule: transform.QuantRule, params: Any) -> tuple[ExportedLayer, str]:
  mod = call.module
  kernel = jnp.asarray(params["kernel"])
  o = kernel.shape[-1]
  is_conv = kernel.ndim > 2
  nd = kernel.ndim - 2
  strides, dil, padding = _conv_geometry(mod, nd) if is_conv else ((), (), "VALID")
  q_in, q_k = rule.input_fn(), rule.kernel_fn()
  scale = jnp.ones((o,), kernel.dtype)
  alpha = transform.channel_scale(kernel, rule.scale)
  if alpha is not None:
    scale = scale * alpha
  bias = params.get("bias") if getattr(mod, "use_bias", False) else None
  shift = jnp.zeros((o,), kernel.dtype) if bias is None else jnp.asarray(bias)
  note = ""
  common = dict(kind="conv" if is_conv else "dense", kernel_shape=tuple(kernel.shape),
                strides=strides, dilation=dil, padding=padding, input_quantizer=q_in)
  if rule.weight_bits == 1:
    wq = q_k(kernel)
    mag = jnp.max(jnp.abs(wq).reshape(-1, o), axis=0)
    if not bool(jnp.all(jnp.abs(wq) == mag)) or not bool(jnp.all(mag > 0)):
      raise ValueError(f"export: the 1-bit kernel of {call.name} is not +-m per output channel.")
    signs = (wq > 0).reshape(-1, o)                           # (K, O), K in HWIO order
    packed = pack_bits(signs.T).T                             # (W, O)
    tapsum = None
    if is_conv:
      pm1 = jnp.where(signs, 1.0, -1.0).reshape(-1, kernel.shape[-2], o)  # (taps, cin, O)
      tapsum = jnp.sum(pm1, axis=1)
    xnor = any(rule.input_fn() is estimators.get(name) for name in _PM1_INPUTS)
    mode = "xnor" if xnor else "binary_weight"
    if not xnor:
      note = f"{call.name}: binary weights with a {rule.input_bits}-bit input run a float product"
    return ExportedLayer(weights=packed, scale=scale * mag, shift=shift, tapsum=tapsum,
                         spec=LayerSpec(mode=mode, **common)), note
  ints = _int_kernel(q_k, kernel) if q_k is not None else None
  if ints is not None:
    q, s, qmax = ints
    return ExportedLayer(weights=q, scale=scale, shift=shift, step=s,
                         spec=LayerSpec(mode="int", qmax=qmax, **common)), note
  wq = kernel if q_k is None else q_k(kernel)
  note = f"{call.name}: kernel quantizer {rule.kernel_quantizer!r} kept as fake-quantised float"
  return ExportedLayer(weights=wq, scale=scale, shift=shift,
                       spec=LayerSpec(mode="float", **common)), note


def _convert_rbnn(call: _Call, params: Any, rotations: Any) -> tuple[ExportedLayer, str]:
  """An `RBNNConv` as packed bits: `sign(w3)` precomputed, activations centred per sample.

  The training forward (`rotation.rbnn_conv2d`, paper eq. 15-16 + official standardisation) is
  `alpha * conv(pad(sign(std(x))), sign(w3))`. After training `w3` is fixed, so its signs are
  packed here; `sign(std(x)) = sign(x - mean)` is computed per sample at serve time
  (`rotation.rbnn_activation_sign`). A weight exactly 0 (sign 0) has no bit: such a layer keeps
  its ternary kernel in float (mode "float", listed in the notes).
  """
  mod = call.module
  if rotations is None or "r1" not in rotations:
    raise ValueError(f"export: RBNN conv {call.name} needs its rotations: pass every collection "
                     "of model.init (params, batch_stats, rbnn, rbnn_schedule) as variables.")
  kernel = jnp.asarray(params["kernel"])
  if kernel.ndim != 4:
    raise NotImplementedError(f"export: RBNN conv {call.name} is not 2-D.")
  o = kernel.shape[-1]
  wb = jnp.sign(rotation.rbnn_mixed_weight(kernel, rotations["r1"], rotations["r2"],
                                           params["theta"]))
  scale = jnp.asarray(params["alpha"])
  bias = params.get("bias") if mod.use_bias else None
  shift = jnp.zeros((o,), scale.dtype) if bias is None else jnp.asarray(bias)
  common = dict(kind="conv", kernel_shape=tuple(kernel.shape),
                strides=transform.as_tuple(mod.strides, 2), dilation=(1, 1), padding=mod.padding)
  if not bool(jnp.all(wb != 0)):
    note = f"{call.name}: RBNN binary kernel has exact zeros; kept as a float ternary kernel"
    return ExportedLayer(weights=wb, scale=scale, shift=shift, spec=LayerSpec(
        mode="float", input_quantizer=rotation.rbnn_activation_sign, **common)), note
  signs = (wb > 0).reshape(-1, o)                           # (K, O), K in HWIO order
  pm1 = jnp.where(signs, 1.0, -1.0).reshape(-1, kernel.shape[-2], o)
  return ExportedLayer(weights=pack_bits(signs.T).T, scale=scale, shift=shift,
                       tapsum=jnp.sum(pm1, axis=1),
                       spec=LayerSpec(mode="xnor", center_input=True, **common)), ""


def _fold_bn(layer: ExportedLayer, bn: Any, bn_vars: dict[str, Any]) -> ExportedLayer | None:
  if (not isinstance(bn, nn.BatchNorm) or bn.use_running_average is not True
      or bn.axis not in (-1,) or bn.axis_name is not None):
    return None
  mean, var = bn_vars["batch_stats"]["mean"], bn_vars["batch_stats"]["var"]
  mul = lax.rsqrt(var + bn.epsilon)
  if bn.use_scale:
    mul = mul * bn_vars["params"]["scale"]
  shift = (layer.shift - mean) * mul
  if bn.use_bias:
    shift = shift + bn_vars["params"]["bias"]
  return layer.replace(scale=layer.scale * mul, shift=shift)


def _get(tree: Any, path: str) -> Any:
  node = tree
  for key in path.split("/") if path else []:
    if node is None or key not in node:
      return None
    node = node[key]
  return node


def export(variables: Any, rules_or_model: Any, *example_args: Any, model: nn.Module | None = None,
           fold_bn: bool = True, **apply_kwargs: Any) -> Exported:
  """Converts a trained model's quantised layers to real low-bit weights.

  Args:
    variables: the model's variables (`{"params": ..., "batch_stats": ...}`) or its params.
    rules_or_model: the model (`BinaryConv`/`BinaryDense`-based, or `quantize(...)`'s result),
      or `QuantRule`s, then the float model is `model=` and it is quantised with them.
    *example_args: example inputs (arrays or `jax.ShapeDtypeStruct`) for a shape-only trace.
    model: the float model when `rules_or_model` is rules.
    fold_bn: fold inference BatchNorms that directly follow a converted layer (see module doc).
    **apply_kwargs: the serving call's keyword arguments (e.g. `train=False`).

  Returns:
    An `Exported` pytree for `serve_apply`.
  """
  if not isinstance(rules_or_model, nn.Module):
    if model is None:
      raise ValueError("export(variables, rules, ...) needs the float model as model=.")
    rules_or_model = transform.quantize(model, rules_or_model, log=None)
  model = rules_or_model
  if "params" not in variables:
    variables = {"params": variables}
  variables = flax.core.unfreeze(variables)
  calls = _record_calls(model, variables, example_args, apply_kwargs)
  decisions = dict(model.state.decisions) if isinstance(model, transform.Quantized) else {}
  inner = model.model if isinstance(model, transform.Quantized) else model

  flat = {k: dict(traverse_util.flatten_dict(v)) for k, v in variables.items()}
  layers: dict[str, ExportedLayer] = {}
  folded: list[tuple[str, str]] = []
  notes: list[str] = []
  for i, call in enumerate(calls):
    if isinstance(call.module, qlayers.RBNNConv):
      layer, note = _convert_rbnn(call, _get(variables["params"], call.name),
                                  _get(variables.get("rbnn", {}), call.name))
    else:
      rule = _layer_rule(call, decisions)
      if rule is None:
        continue
      if getattr(call.module, "feature_group_count", 1) != 1:
        # The packed formats hold dense kernels; the layer's own forward is exact meanwhile.
        notes.append(f"{call.name}: grouped convolution not converted (runs as trained)")
        continue
      layer, note = _convert(call, rule, _get(variables["params"], call.name))
    if note:
      notes.append(note)
    nxt = calls[i + 1] if i + 1 < len(calls) else None
    if fold_bn and nxt is not None and nxt.x is call.output:
      bn_vars = {c: _get(variables.get(c, {}), nxt.name) for c in ("params", "batch_stats")}
      new = _fold_bn(layer, nxt.module, bn_vars) if bn_vars["batch_stats"] is not None else None
      if new is not None:
        layer = new
        folded.append((nxt.name, call.name))
    layers[call.name] = layer
  # Drop every variable of converted layers (float kernels, biases, RBNN angles, scales,
  # rotations and schedule) and of folded BatchNorms.
  drop = {tuple(p.split("/")) for p, _ in folded} | {tuple(p.split("/")) for p in layers}
  for coll in flat.values():
    for key in [k for k in coll if k[:-1] in drop]:
      coll.pop(key)
  new_vars = {c: traverse_util.unflatten_dict(v) for c, v in flat.items() if v}
  return Exported(variables=new_vars, layers=layers, model=inner,
                  apply_kwargs=tuple(sorted(apply_kwargs.items())), folded=tuple(folded),
                  notes=tuple(notes))


# ----------------------------------------------------------------------------------------------
# Serving.


def _patches(xp: jax.Array, kshape: Sequence[int], out_sp: Sequence[int], strides: Sequence[int],
             dil: Sequence[int]) -> list[jax.Array]:
  """Kernel-tap views of a padded NHWC array, taps in row-major (HWIO) order."""
  views = []
  for off in itertools.product(*[range(k) for k in kshape]):
    start = [0] + [o * d for o, d in zip(off, dil)] + [0]
    limit = ([xp.shape[0]] + [s0 + (n - 1) * s + 1 for s0, n, s in zip(start[1:], out_sp, strides)]
             + [xp.shape[-1]])
    views.append(lax.slice(xp, start, limit, [1] + list(strides) + [1]))
  return views


def _pad_mask(in_sp: Sequence[int], pads: Sequence[tuple[int, int]], kshape: Sequence[int],
              out_sp: Sequence[int], strides: Sequence[int], dil: Sequence[int]) -> np.ndarray:
  """(prod(out_sp), taps) float32: 1 where an output position's tap reads a padded entry."""
  masks = []
  for off in itertools.product(*[range(k) for k in kshape]):
    m = np.ones(tuple(out_sp), bool)
    for d, (n, (lo, _), o, s, dl, k) in enumerate(zip(in_sp, pads, off, strides, dil, out_sp)):
      pos = np.arange(k) * s + o * dl - lo
      valid = (pos >= 0) & (pos < n)
      shape = [1] * len(out_sp)
      shape[d] = k
      m = m & valid.reshape(shape)
    masks.append(~m.reshape(-1))
  return np.stack(masks, axis=-1).astype(np.float32)


def _binary_input(spec: LayerSpec, x: jax.Array) -> jax.Array:
  q = spec.input_quantizer
  return (q(x) if q is not None else x) > 0


def _native_binary(layer: ExportedLayer, x: jax.Array) -> bool:
  """Whether an xnor conv is served by the fused native kernel (`ops.binary_conv`).

  Not under `ops.conv.set_conv_impl("lax")` (plain XLA ops, what `jax.export` can serialise).
  """
  return (x.dtype == jnp.float32 and layer.scale.dtype == jnp.float32
          and binary_conv.supports(layer.spec.kernel_shape[-2])
          and conv_ops.get_conv_impl() != "lax" and binary_conv.available())


def _serve_conv(layer: ExportedLayer, x: jax.Array) -> jax.Array:
  spec = layer.spec
  nd = len(spec.kernel_shape) - 2
  kshape, (cin, o) = spec.kernel_shape[:nd], spec.kernel_shape[nd:]
  pads = padding_lib.explicit_pads(spec.padding, x.shape[1:-1], kshape, spec.strides,
                                  spec.dilation)
  nhwc_pads = [(0, 0), *pads, (0, 0)]
  dtype = jnp.result_type(x.dtype, layer.scale.dtype)
  if spec.mode != "xnor":
    q = spec.input_quantizer
    xq = q(x) if q is not None else x
    if spec.mode == "binary_weight":
      w = jnp.where(unpack_bits(layer.weights.T, spec.k).T, 1.0, -1.0).reshape(spec.kernel_shape)
    elif spec.mode == "int":
      w = layer.weights.astype(dtype) * layer.step / spec.qmax
    else:
      w = layer.weights
    # The library's convolution (oneDNN on CPU where it applies; lax under set_conv_impl("lax")),
    # zero padding after the input quantiser as in training.
    y = conv_ops.conv_general_dilated(xq, w.astype(xq.dtype), spec.strides, pads,
                                 rhs_dilation=spec.dilation,
                                 dimension_numbers=("NHWC", "HWIO", "NHWC") if nd == 2 else
                                 lax.conv_dimension_numbers(xq.shape, w.shape, (
                                     "N" + "DHW"[-nd:] + "C", "DHW"[-nd:] + "IO",
                                     "N" + "DHW"[-nd:] + "C")))
    return y * layer.scale + layer.shift
  if nd == 2 and _native_binary(layer, x):
    if spec.center_input:
      # RBNN: sign(x - per-sample mean); x - m > 0 exactly when x > m, and 0 when x == m.
      thr, rule = jnp.mean(x, axis=(1, 2, 3)), "gt"
    else:
      thr, rule = np.zeros((1,), np.float32), "ge"  # larq sign: sign(0) = +1 (a constant)
    return binary_conv.xnor_conv(x, thr, layer.weights, layer.scale, layer.shift,
                                 kshape=kshape, strides=spec.strides, pads=pads,
                                 dilation=spec.dilation, rule=rule,
                                 exact_zeros=spec.center_input)
  zeros = None
  if spec.center_input:
    # RBNN: sign(standardised x) = sign(x - per-sample mean); exact zeros have no bit.
    centred = x - jnp.mean(x, axis=tuple(range(1, x.ndim)), keepdims=True)
    bits, zeros = centred > 0, centred == 0
  else:
    bits = _binary_input(spec, x)
  in_sp = x.shape[1:-1]
  padded = tuple(n + lo + hi for n, (lo, hi) in zip(in_sp, pads))
  out_sp = tuple((p - (k - 1) * d - 1) // s + 1
                 for p, k, s, d in zip(padded, kshape, spec.strides, spec.dilation))
  if cin % 32 == 0:
    # Pack channels first: the K-chunking of (tap, cin) then aligns with per-tap words, and the
    # im2col moves 32x less data.
    words = pack_bits(bits)
    words = jnp.pad(words, nhwc_pads)
    a = jnp.concatenate(_patches(words, kshape, out_sp, spec.strides, spec.dilation), axis=-1)
  elif 32 % cin == 0:
    # cin divides 32: pack each pixel's channels into cin low bits, then put 32 / cin
    # consecutive taps in one word (bit (tap % g) * cin + c), the same K order as the weights.
    pix = jnp.pad(pack_bits(bits), nhwc_pads)
    views = _patches(pix, kshape, out_sp, spec.strides, spec.dilation)
    g = 32 // cin
    cols = []
    for j in range(0, len(views), g):
      word = views[j]
      for t in range(1, min(g, len(views) - j)):
        word = word | (views[j + t] << jnp.uint32(t * cin))
      cols.append(word)
    a = jnp.concatenate(cols, axis=-1)
  else:
    b = jnp.pad(bits, nhwc_pads)
    a = pack_bits(jnp.concatenate(_patches(b, kshape, out_sp, spec.strides, spec.dilation), -1))
  n = x.shape[0]
  dot = xnor_popcount_matmul(a.reshape(-1, a.shape[-1]), layer.weights, spec.k)
  dot = dot.reshape((n, -1, o)).astype(dtype)
  if any(lo or hi for lo, hi in pads):
    mask = _pad_mask(in_sp, pads, kshape, out_sp, spec.strides, spec.dilation)
    dot = dot + (jnp.asarray(mask) @ layer.tapsum.astype(dtype))[None]
  if zeros is not None:
    # An input entry exactly 0 was packed as bit 0 (-1), adding -w where the training forward
    # adds 0 * w: add back conv(zero mask, w) (exact small integers). The float conv only runs
    # when a zero exists (lax.cond), which for continuous activations is essentially never.
    w_pm1 = jnp.where(unpack_bits(layer.weights.T, spec.k).T, 1.0, -1.0).astype(dtype)

    def zero_correction(z):
      z = jnp.pad(z.astype(dtype), nhwc_pads)
      c = lax.conv_general_dilated(z, w_pm1.reshape(spec.kernel_shape), spec.strides, "VALID",
                                   rhs_dilation=spec.dilation,
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                   precision=lax.Precision.HIGHEST)
      return c.reshape(dot.shape)

    dot = dot + lax.cond(jnp.any(zeros), zero_correction, lambda z: jnp.zeros_like(dot), zeros)
  y = dot * layer.scale.astype(dtype) + layer.shift.astype(dtype)
  return y.reshape((n,) + out_sp + (o,))


def _serve_dense(layer: ExportedLayer, x: jax.Array) -> jax.Array:
  spec = layer.spec
  k, o = spec.kernel_shape
  lead = x.shape[:-1]
  x2 = x.reshape(-1, k)
  dtype = jnp.result_type(x.dtype, layer.scale.dtype)
  if spec.mode == "xnor":
    dot = xnor_popcount_matmul(pack_bits(_binary_input(spec, x2)), layer.weights, k)
    y = dot.astype(dtype)
  else:
    q = spec.input_quantizer
    xq = q(x2) if q is not None else x2
    if spec.mode == "binary_weight":
      w = jnp.where(unpack_bits(layer.weights.T, k).T, 1.0, -1.0)
    elif spec.mode == "int":
      w = layer.weights.astype(dtype) * layer.step / spec.qmax
    else:
      w = layer.weights
    y = xq @ w.astype(xq.dtype)
  y = y * layer.scale.astype(dtype) + layer.shift.astype(dtype)
  return y.reshape(lead + (o,))


def serve_apply(exported: Exported, *args: Any, **kwargs: Any) -> Any:
  """The serve-time forward: the model's own code, converted layers computed from low-bit weights.

  Pure and jit-able (`jax.jit(serve_apply)(exported, x)`, or `serve_fn(exported)`).

  Args:
    exported: `export(...)`'s result.
    *args: the model's inputs.
    **kwargs: overrides of the apply keyword arguments given to `export`.

  Returns:
    The model's output (same as the training-time `model.apply(variables, x, train=False)`).
  """
  layers = exported.layers
  folded = dict(exported.folded)
  last: dict[str, Any] = {}

  def interceptor(next_fun, a, kw, context):
    if context.method_name != "__call__":
      return next_fun(*a, **kw)
    path = "/".join(context.module.path)
    x = a[0] if a else next(iter(kw.values()), None)
    if path in layers:
      layer = layers[path]
      y = (_serve_conv if layer.spec.kind == "conv" else _serve_dense)(layer, x)
      last[path] = y
      return y
    if path in folded:
      if last.get(folded[path]) is not x:
        raise ValueError(f"export folded BatchNorm {path} into {folded[path]}, but at serve time "
                         "it received another input; export with fold_bn=False.")
      return x
    return next_fun(*a, **kw)

  call_kwargs = {**dict(exported.apply_kwargs), **kwargs}
  with nn.intercept_methods(interceptor):
    return exported.model.apply(exported.variables, *args, **call_kwargs)


def serve_fn(exported: Exported) -> Callable[..., Any]:
  """A jitted `x -> serve_apply(exported, x)` (arrays passed as arguments, not constants).

  Where the binary convs run the native kernel, the residual adds and hard_tanh activations
  that follow them are folded into its epilogue (`quant.serve_fusion`); same outputs.
  """
  jitted = jax.jit(serve_fusion.fused(lambda layers, variables, *a: serve_apply(
      exported.replace(layers=layers, variables=variables), *a)))
  return lambda *a: jitted(exported.layers, exported.variables, *a)


def float_serving(exported: Exported) -> Exported:
  """The same served network with every packed kernel unpacked to a float +-1 kernel.

  The fair float baseline for packed serving: the XNOR layers become float convs / matmuls over
  the same sign inputs and +-1 weights (same scales, shifts and folded BatchNorms), so a
  comparison measures the packed arithmetic, not a different forward (the training-time forward
  also recomputes rotated or quantised weights each call).

  Args:
    exported: `export(...)`'s result.

  Returns:
    An `Exported` for `serve_fn` / `serve_apply` with the same outputs up to float rounding.
  """
  layers = {}
  for path, layer in exported.layers.items():
    spec = layer.spec
    if spec.mode != "xnor":
      layers[path] = layer
      continue
    w = jnp.where(unpack_bits(layer.weights.T, spec.k).T, 1.0, -1.0).astype(layer.scale.dtype)
    q = rotation.rbnn_activation_sign if spec.center_input else spec.input_quantizer
    layers[path] = layer.replace(weights=w.reshape(spec.kernel_shape), spec=dataclasses.replace(
        spec, mode="float", input_quantizer=q, center_input=False))
  return exported.replace(layers=layers)


def export_sizes(exported: Exported) -> dict[str, float]:
  """Bytes of the converted layers vs their float32 kernels.

  Returns:
    `binary_kernel_bytes` (packed words), `binary_float_bytes` (the same kernels in float32),
    `binary_ratio` (kernels only), `binary_ratio_with_scales` (adding the per-channel float scale
    and shift), the same for k-bit layers (`int_*`), and `total_bytes` of the whole export.
  """
  out = dict(binary_kernel_bytes=0, binary_float_bytes=0, binary_scale_bytes=0,
             int_kernel_bytes=0, int_float_bytes=0)
  for layer in exported.layers.values():
    spec = layer.spec
    fl = int(np.prod(spec.kernel_shape)) * 4
    if spec.mode in ("xnor", "binary_weight"):
      out["binary_kernel_bytes"] += layer.weights.size * 4
      out["binary_float_bytes"] += fl
      out["binary_scale_bytes"] += (layer.scale.size + layer.shift.size) * 4
    elif spec.mode == "int":
      out["int_kernel_bytes"] += layer.weights.size
      out["int_float_bytes"] += fl
  if out["binary_kernel_bytes"]:
    out["binary_ratio"] = out["binary_float_bytes"] / out["binary_kernel_bytes"]
    out["binary_ratio_with_scales"] = out["binary_float_bytes"] / (
        out["binary_kernel_bytes"] + out["binary_scale_bytes"])
  if out["int_kernel_bytes"]:
    out["int_ratio"] = out["int_float_bytes"] / out["int_kernel_bytes"]
  out["total_bytes"] = sum(l.size * l.dtype.itemsize for l in jax.tree_util.tree_leaves(exported))
  return out
