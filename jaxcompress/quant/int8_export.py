"""Real integer export and serving of PAMS models (PAMS, ECCV 2020, arXiv 2011.04212).

Train -> convert -> serve (aqt's modes) for models built with the "pams" layer set
(`PAMSConv` + `PAMSQuantAct`, e.g. PAMS-EDSR / PAMS-RDN):

  * `export_int8(variables, model, *example_args, **apply_kwargs)` traces one forward and, for
    every `PAMSConv`, stores the integer weight levels of the paper's weight quantizer
    `l_w = round(w * q_max / s_w)`, `s_w = max|w| + 1e-8` (per tensor, colorjam/PAMS
    `quant_weight`), as int8 (bits > 4) or two 4-bit levels per byte (bits <= 4), with the float
    per-tensor step `s_w / q_max`. Its input activation quantizer is found from the trace: the `PAMSQuantAct`
    whose OUTPUT is the conv's input (exact: e.g. EDSR conv2 after Q_a2), else one applied to
    the SAME tensor (EDSR conv1, whose input the official block leaves in float while its
    skip is Q_a1(x): the export quantizes conv1's input with Q_a1's learned alpha; the only
    approximation, reported in `Int8Exported.approximate`).
  * `serve_int8(exported, x)` runs the model with each `PAMSConv` replaced by an integer conv:
    activations to integer levels with the learned alpha (the paper's activation quantizer
    `l_x = round(clip(x, -alpha, alpha) * q_max / alpha)`), then
    `lax.conv_general_dilated(int8, int8, preferred_element_type=int32)` (int32 accumulation),
    then one float rescale `acc * (alpha / q_max) * (s_w / q_max) + bias`. Everything else
    (head, body end, upsampler, tail, the element-wise skip additions) stays float, as in the
    PAMS model.
  * `int8_sizes(exported)`: bytes of the quantized body (kernels, biases, scales) stored as
    integers vs float32.

Accuracy (the trained configs/pams/quick.py students, held-out photos, PSNR-Y vs fake-quant;
`benchmarks/pams_int8_accuracy.py`): with `unquantized_inputs="float"` (conv1 weight-only)
serving equals the fake-quant forward up to float summation order; the all-integer export (conv1
on Q_a1's levels) costs 0.002 dB at 8 bits but 0.06 dB at 4 bits (up to 19 grey levels), so the
default is all-integer above 4 bits and "float" at 4 bits and below. `int8_float_convs=
"body_end|upsampler"` (beyond the paper) costs 0.009 dB at 8 bits. A rounding decision flipped
by the summation order can move one activation by one level, so no bound is exact for deep
models.
Speed: on CPUs with AMX-INT8 the integer convolutions run on `ops.int8_conv` (the levels,
int32 accumulation and rescale in one native kernel); elsewhere they are XLA's int8 x int8 ->
int32 convolutions, which XLA:CPU runs through a slow generic loop. `benchmarks/pams.py`
measures both against float serving; results in BENCHMARKS.md.

Example:
  >>> student = edsr.edsr_baseline(scale=4, layers=edsr.pams_layers(bits=8))
  >>> exported = export_int8(variables, student, lr)
  >>> sr = jax.jit(serve_int8)(exported, lr)
  >>> int8_sizes(exported)["ratio"]   # about 4 (8-bit), about 8 (4-bit)
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util
from jax import lax

from jaxcompress import recording
from jaxcompress.ops import conv as conv_ops
from jaxcompress.ops import int8_conv as int8_conv_ops
from jaxcompress.ops import padding as padding_lib
from jaxcompress.quant import quantizers

Array = jax.Array
Path = tuple[str, ...]


@flax.struct.dataclass
class Int8Conv:
  """One exported `PAMSConv`.

  Attributes:
    kernel: int8 HWIO weight levels in [-q_max, q_max] (bits > 4), or uint8 with two 4-bit
      levels per byte (bits <= 4, `pack_int4`).
    w_step: float32 weight step s_w / q_max.
    bias: float32 bias (the official code keeps it float) or None.
    act_path: path of the activation quantizer whose alpha gives the input levels.
    shape: the HWIO kernel shape.
    bits: weight bit width.
    input_bits: bit width of the input levels.
    int_input: False: the input stays float (weight-only integer storage, float conv), used
      by `export_int8(..., unquantized_inputs="float")` for convs whose fake-quant input is
      not quantized.
    alpha: the calibrated input alpha of a float conv that PAMS leaves unquantized and the
      export serves in int8 anyway (`export_int8(..., int8_float_convs=...)`); None for PAMS
      convs, whose alpha is the learned one at `act_path`.
  """
  kernel: Array
  w_step: Array
  bias: Array | None
  act_path: Path = flax.struct.field(pytree_node=False)
  shape: tuple[int, ...] = flax.struct.field(pytree_node=False)
  bits: int = flax.struct.field(pytree_node=False)
  input_bits: int = flax.struct.field(pytree_node=False)
  int_input: bool = flax.struct.field(pytree_node=False, default=True)
  alpha: Array | None = None


@flax.struct.dataclass
class Int8Exported:
  """An exported PAMS model: integer body convs, float rest (see the module docstring).

  Attributes:
    convs: {"/".join(path): Int8Conv} for every PAMSConv.
    params: the float params the serving forward still reads (everything but the exported
      kernels and biases; the alphas stay here).
    model: the PAMS linen module (static).
    apply_kwargs: keyword arguments of the traced forward (static, e.g. none).
    approximate: conv paths whose fake-quant input was NOT quantized (EDSR conv1): served with
      the alpha of the quantizer applied to the same tensor.
  """
  convs: dict[str, Int8Conv]
  params: Any
  model: nn.Module = flax.struct.field(pytree_node=False)
  apply_kwargs: tuple[tuple[str, Any], ...] = flax.struct.field(pytree_node=False, default=())
  approximate: tuple[str, ...] = flax.struct.field(pytree_node=False, default=())


def pack_int4(levels: Array) -> Array:
  """Packs signed 4-bit levels (int, in [-8, 7]) two per byte, flattened, high nibble first.

  Args:
    levels: integer array of any shape.

  Returns:
    uint8 array of ceil(size / 2) bytes.
  """
  flat = jnp.ravel(levels).astype(jnp.int32)
  if flat.size % 2:
    flat = jnp.concatenate([flat, jnp.zeros((1,), jnp.int32)])
  nib = jnp.bitwise_and(flat, 0xF).reshape(-1, 2)
  return (jnp.left_shift(nib[:, 0], 4) | nib[:, 1]).astype(jnp.uint8)


def unpack_int4(packed: Array, shape: tuple[int, ...]) -> Array:
  """Inverse of `pack_int4`: int8 levels of `shape` (4-bit two's complement sign-extended)."""
  p = packed.astype(jnp.int32)
  nib = jnp.stack([jnp.right_shift(p, 4) & 0xF, p & 0xF], axis=-1).reshape(-1)
  nib = jnp.where(nib >= 8, nib - 16, nib)
  size = 1
  for d in shape:
    size *= d
  return nib[:size].reshape(shape).astype(jnp.int8)


def _boundary_mode(bits: int) -> str:
  # At 4 bits Q_a1's levels for conv1 drift up to 19 grey levels from the fake-quant forward
  # (PSNR -0.06 dB on the quick student, `benchmarks/pams_int8_accuracy.py`); at 8 bits 2.3.
  return "float" if bits <= 4 else "sibling"


def _qmax(bits: int) -> int:
  return 2 ** (int(bits) - 1) - 1


def _get(tree: Mapping[str, Any], path: Path) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def _trace_quantizers(variables: Any, model: nn.Module, args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> tuple[dict[Path, tuple[Path, bool, int]],
                                                       dict[Path, nn.Module]]:
  """{conv path: (activation quantizer path, exact, its bits)} and the convs, from one trace."""
  calls, _ = recording.record_calls(lambda v, *a: model.apply(v, *a, **kwargs), variables, *args)
  q_in: dict[int, Path] = {}      # id of a quantizer's input -> the first quantizer applied to it
  q_out: dict[int, Path] = {}     # id of a quantizer's output -> that quantizer
  q_bits: dict[Path, int] = {}
  conv_in: dict[Path, int] = {}
  conv_mod: dict[Path, nn.Module] = {}
  for call in calls:  # the recorded arrays stay alive (and their ids unique) with `calls`
    module = call.module
    if isinstance(module, quantizers.PAMSQuantAct):
      q_in.setdefault(id(call.x), call.path)
      q_out[id(call.output)] = call.path
      q_bits[call.path] = module.bits
    elif isinstance(module, quantizers.PAMSConv):
      conv_in[call.path] = id(call.x)
      conv_mod[call.path] = module.clone(parent=None)
  found = {}
  for path, xid in conv_in.items():
    if xid in q_out:
      found[path] = (q_out[xid], True, q_bits[q_out[xid]])
    elif xid in q_in:
      found[path] = (q_in[xid], conv_mod[path].quantize_input, q_bits[q_in[xid]])
    else:
      raise ValueError(f"PAMSConv {'/'.join(path)} has no PAMSQuantAct on its input, so its "
                       "activations have no learned integer scale. Build the model with the "
                       "'pams' layer set (quantizers before every PAMSConv) or PAMSConv("
                       "quantize_input=True).")
  return found, conv_mod


def _calibrate_float_convs(variables: Any, model: nn.Module, args: tuple[Any, ...],
                           kwargs: dict[str, Any], pattern: str) -> dict[Path, tuple[Any, Any]]:
  """{path: (max |input|, module)} of the float `nn.Conv`s whose path matches `pattern`."""
  found: dict[Path, tuple[Any, Any]] = {}

  def interceptor(next_fun, fargs, fkwargs, context):
    module = context.module
    if (context.method_name == "__call__" and isinstance(module, nn.Conv)
        and re.search(pattern, "/".join(module.path))):
      x = fargs[0]
      peak = jnp.max(jnp.abs(x.astype(jnp.float32)))
      previous = found.get(module.path, (jnp.float32(0), None))[0]
      found[module.path] = (jnp.maximum(previous, peak), module.clone(parent=None))
    return next_fun(*fargs, **fkwargs)

  with nn.intercept_methods(interceptor):
    model.apply(variables, *args, **kwargs)
  return found


def export_int8(variables: Any, model: nn.Module, *example_args: Any,
                unquantized_inputs: str | None = None, int8_float_convs: str | None = None,
                float_conv_bits: int = 8, **apply_kwargs: Any) -> Int8Exported:
  """Converts a trained PAMS model to integer weights with per-tensor steps.

  Args:
    variables: the model's variables ({"params": ...}; the `pams_calib` collection is ignored:
      serving uses the learned alphas, as the fake-quant evaluation forward).
    model: the PAMS linen module (e.g. `edsr_baseline(layers=pams_layers(bits))`).
    *example_args: example inputs (arrays or ShapeDtypeStructs) for one traced forward.
    unquantized_inputs: for a conv whose fake-quant input is NOT quantized (EDSR conv1):
      "sibling" serves it as an integer conv with the alpha of the quantizer applied to the
      same tensor (Q_a1), every body conv then runs on int8 operands (an approximation of the
      fake-quant forward: close at 8 bits, coarser at 4); "float" keeps its input float
      (integer weights, float conv): serving then equals the fake-quant forward. None
      (default): "sibling" for convs above 4 bits, "float" at 4 bits and below.
    int8_float_convs: a regex of float conv paths (e.g. "body_end|upsampler") that PAMS keeps in
      float and the export serves as integer convs too, beyond the paper: weight levels as PAMS's
      weight quantizer, input alpha = max |input| over `example_args` (so pass calibration data,
      not shapes). Changes the outputs; measure the cost (`benchmarks/pams.py`).
    float_conv_bits: bit width of those convs (weights and inputs).
    **apply_kwargs: keyword arguments of that forward (kept for serving).

  Returns:
    An `Int8Exported` for `serve_int8` / `int8_sizes`.

  Raises:
    ValueError: the model has no PAMSConv, a PAMSConv input has no activation quantizer, or
      `unquantized_inputs` is unknown.
  """
  if unquantized_inputs not in (None, "sibling", "float"):
    raise ValueError(f"unquantized_inputs must be 'sibling' or 'float', got "
                     f"{unquantized_inputs!r}.")
  params = flax.core.unfreeze(variables["params"])
  found, modules = _trace_quantizers({"params": params}, model, example_args, apply_kwargs)
  if not found:
    raise ValueError("export_int8 found no PAMSConv in the model: build it with the 'pams' "
                     "layer set (e.g. edsr_baseline(layers=pams_layers(bits=8))).")
  flat = traverse_util.flatten_dict(params)
  convs = {}
  for path, (act_path, exact, act_bits) in found.items():
    module = modules[path]
    w = jnp.asarray(flat.pop(path + ("kernel",)), jnp.float32)
    bias = flat.pop(path + ("bias",), None)
    qmax = _qmax(module.bits)
    # Exactly the fake-quant weight quantizer's levels (`pams_quantize_weight`).
    s = jnp.max(jnp.abs(w)) + jnp.float32(1e-8)
    levels = jnp.round(w * qmax / s)
    kernel = (pack_int4(levels) if module.bits <= 4 else levels.astype(jnp.int8))
    convs["/".join(path)] = Int8Conv(
        kernel=kernel, w_step=(s / qmax).astype(jnp.float32),
        bias=None if bias is None else jnp.asarray(bias, jnp.float32), act_path=act_path,
        shape=tuple(w.shape), bits=int(module.bits),
        input_bits=int(act_bits),
        int_input=exact or (unquantized_inputs or _boundary_mode(module.bits)) == "sibling")
  if int8_float_convs:
    calibrated = _calibrate_float_convs({"params": params}, model, example_args, apply_kwargs,
                                        int8_float_convs)
    if not calibrated:
      raise ValueError(f"int8_float_convs={int8_float_convs!r} matches no float conv of the "
                       "model; name paths such as 'body_end|upsampler'.")
    for path, (peak, module) in calibrated.items():
      w = jnp.asarray(flat.pop(path + ("kernel",)), jnp.float32)
      bias = flat.pop(path + ("bias",), None)
      qmax = _qmax(float_conv_bits)
      s = jnp.max(jnp.abs(w)) + jnp.float32(1e-8)
      levels = jnp.round(w * qmax / s)
      convs["/".join(path)] = Int8Conv(
          kernel=pack_int4(levels) if float_conv_bits <= 4 else levels.astype(jnp.int8),
          w_step=(s / qmax).astype(jnp.float32),
          bias=None if bias is None else jnp.asarray(bias, jnp.float32), act_path=(),
          shape=tuple(w.shape), bits=int(float_conv_bits), input_bits=int(float_conv_bits),
          alpha=jnp.maximum(peak, jnp.float32(1e-8)))
  approximate = tuple("/".join(p) for p, (_, exact, _) in found.items() if not exact)
  return Int8Exported(convs=convs, params=traverse_util.unflatten_dict(flat), model=model,
                      apply_kwargs=tuple(sorted(apply_kwargs.items())), approximate=approximate)


def int8_conv(x: Array, conv: Int8Conv, alpha: Array, module: quantizers.PAMSConv) -> Array:
  """One exported PAMSConv on float input `x`: integer levels, int8 conv, int32 accumulate.

  Args:
    x: NHWC float input.
    conv: the exported conv.
    alpha: the learned alpha of its input quantizer.
    module: the original PAMSConv (strides, padding, dilation, groups).

  Returns:
    float32 output `acc * (alpha / q_max_x) * w_step + bias`.
  """
  qmax = jnp.float32(_qmax(conv.input_bits))
  a = jnp.asarray(alpha, jnp.float32).reshape(())
  kernel = (unpack_int4(conv.kernel, conv.shape) if conv.bits <= 4 else conv.kernel)
  n = len(conv.shape) - 2
  tup = lambda v: (v,) * n if isinstance(v, int) else tuple(v)  # noqa: E731
  spatial = "HWD"[:n]
  dn = lax.conv_dimension_numbers(x.shape, kernel.shape,
                                  ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C"))
  strides, dilation = tup(module.strides), tup(module.kernel_dilation)
  pads = padding_lib.explicit_pads(module.padding, x.shape[1:-1], conv.shape[:n], strides,
                                   dilation)
  conv_fn = lambda lhs, rhs, **kw: lax.conv_general_dilated(  # noqa: E731
      lhs, rhs, window_strides=strides, padding=pads, rhs_dilation=dilation,
      dimension_numbers=dn,
      feature_group_count=module.feature_group_count, **kw)
  if (conv.int_input and x.dtype == jnp.float32 and n == 2
      and int8_conv_ops.supports(conv.shape, strides, dilation, pads, module.feature_group_count)
      and conv_ops.get_conv_impl() != "lax" and int8_conv_ops.available()):
    # The same levels, int32 accumulation and rescale in one native AMX kernel.
    return int8_conv_ops.pams_conv(x, a, float(_qmax(conv.input_bits)), kernel.astype(jnp.int8),
                                   (a / qmax) * conv.w_step, conv.bias, pads)
  if conv.int_input:
    # The paper's activation levels, computed as `pams_quantize` does (clip, scale, round).
    levels = jnp.round(jnp.clip(x.astype(jnp.float32), -a, a) * qmax / a).astype(jnp.int8)
    acc = conv_fn(levels, kernel, preferred_element_type=jnp.int32)  # int32 accumulation
    y = acc.astype(jnp.float32) * ((a / qmax) * conv.w_step)
  else:  # weight-only: the dequantized kernel, as the fake-quant conv computes it
    y = conv_fn(x.astype(jnp.float32), kernel.astype(jnp.float32) * conv.w_step)
  return y if conv.bias is None else y + conv.bias


def serve_int8(exported: Int8Exported, *args: Any) -> Any:
  """The exported model's forward with integer body convolutions (jit-able).

  Args:
    exported: from `export_int8`.
    *args: the model inputs (as the traced forward).

  Returns:
    The model output (same structure as `model.apply`).
  """
  params = exported.params

  def interceptor(next_fun, fargs, fkwargs, context):
    module = context.module
    if context.method_name == "__call__" and isinstance(module, (quantizers.PAMSConv, nn.Conv)):
      conv = exported.convs.get("/".join(module.path))
      if conv is not None:
        alpha = conv.alpha if conv.alpha is not None else _get(params, conv.act_path)["alpha"]
        return int8_conv(fargs[0], conv, alpha, module)
    return next_fun(*fargs, **fkwargs)

  with nn.intercept_methods(interceptor):
    return exported.model.apply({"params": params}, *args, **dict(exported.apply_kwargs))


def int8_sizes(exported: Int8Exported) -> dict[str, float]:
  """Stored bytes of the quantized body vs the same tensors in float32.

  Returns:
    {"float_bytes": kernels + biases of the PAMSConvs in float32, "int_bytes": the exported
    kernels (int8 or packed 4-bit) + float32 biases + two float32 steps per conv (weight step
    and alpha), "ratio": float / int, "kernel_ratio": kernels alone, "rest_float_bytes":
    the float layers left (head, tail, upsampler, alphas)}.
  """
  float_b = int_b = kfloat = kint = 0
  for conv in exported.convs.values():
    size = 1
    for d in conv.shape:
      size *= d
    bias = 0 if conv.bias is None else conv.bias.size * 4
    kfloat += size * 4
    kint += conv.kernel.size * conv.kernel.dtype.itemsize
    float_b += size * 4 + bias
    int_b += conv.kernel.size * conv.kernel.dtype.itemsize + bias + 8
  rest = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(exported.params))
  return {"float_bytes": float(float_b), "int_bytes": float(int_b),
          "ratio": float_b / max(int_b, 1), "kernel_ratio": kfloat / max(kint, 1),
          "rest_float_bytes": float(rest)}
