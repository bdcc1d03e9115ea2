"""Model summary: parameters, weight bits, memory and MACs by precision, counted as papers do.

`summary(model, *inputs)` traces `model.init` under `jax.eval_shape` (nothing is allocated, so
ImageNet-size models and abstract `jax.ShapeDtypeStruct` inputs are fine) with a
`flax.linen.intercept_methods` interceptor that records every module call: its path, class, input
and output shapes, and the module's own parameters. Modules that own a `kernel` parameter
(`nn.Conv`, `nn.ConvTranspose`, `nn.Dense`, and the library's binary / quantized layers) get MACs
counted analytically for ONE example, as papers report them:

* convolution: out_H * out_W * C_out * (C_in / groups) * kh * kw (= output positions * kernel size);
* dense: in * out (per token when applied to a sequence);
* transposed convolution, `mac_convention="true"`: in_H * in_W * C_in * C_out * kh * kw (every input
  pixel scatters a full kernel: the multiplications actually done); `"gan"`: the same product at
  OUTPUT resolution, the convention of GAN-compression papers (thop, DMAD, GAN Compression).

Precision comes from the layer class: attributes `weight_bits` and `input_bits` (larq's kernel and
input precision; 32 when absent), read from the module that owns the kernel (a model-level field
such as a paper's default `weight_bits` must not leak into its float first/last layers). A MAC
runs at max(weight_bits, input_bits): binary (1), low-bit (2..8) or float (> 8), as larq counts
them. Parameters are counted over the whole `params` collection (batch norm included, batch
statistics excluded as in PyTorch); kernels of quantized layers are stored at their bits,
everything else at 32 bits.

Limitations: only layers with a `kernel` count MACs (elementwise ops, norms and pooling count
none, like most papers; thop adds ~0.3% for them on ResNet-18); a module inside `nn.scan` is
traced once, so its MACs are counted once; `xla_flops` gives an independent total.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxcompress.summary import summary
  >>> from jaxcompress.models import resnet_cifar
  >>> s = summary(resnet_cifar.ResNet20(),
  ...                         jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32), train=False)
  >>> print(s)            # the table
  >>> s.total_macs        # 40.55e6
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

from jaxcompress import recording

MAC_CONVENTIONS = ("true", "gan")
# (module path "a/b/c", module) -> (weight_bits, input_bits), or None to read the class attributes.
LayerBitsFn = Callable[[str, nn.Module], "tuple[int, int] | None"]
_FLOAT_BITS = 32


@dataclasses.dataclass(frozen=True)
class LayerInfo:
  """One row of the summary table (one module call)."""
  path: str
  type: str
  output_shape: str
  params: int
  weight_bits: int
  input_bits: int
  memory_bytes: float
  macs: int

  @property
  def mac_bits(self) -> int:
    """Precision a MAC of this layer runs at: the wider of weights and inputs."""
    return max(self.weight_bits, self.input_bits)

  @property
  def binary_macs(self) -> int:
    return self.macs if self.mac_bits == 1 else 0

  @property
  def lowbit_macs(self) -> int:
    return self.macs if 2 <= self.mac_bits <= 8 else 0

  @property
  def float_macs(self) -> int:
    return self.macs if self.mac_bits > 8 else 0


@dataclasses.dataclass(frozen=True)
class Summary:
  """Per-layer table and totals. `str(summary)` is the printable table; `as_dict()` is for code.

  Attributes:
    layers: one `LayerInfo` per module call that owns parameters or has no sub-modules.
    total_params: all entries of the `params` collection.
    params_by_bits: parameter count per storage bit width.
    memory_bytes: parameter memory with quantized kernels at their bits.
    float_memory_bytes: the same parameters all in float32.
    total_macs, binary_macs, lowbit_macs, float_macs: MACs for one example.
    mac_convention: "true" or "gan" (how transposed convolutions were counted).
  """
  layers: tuple[LayerInfo, ...]
  total_params: int
  params_by_bits: dict[int, int]
  memory_bytes: float
  float_memory_bytes: float
  total_macs: int
  binary_macs: int
  lowbit_macs: int
  float_macs: int
  mac_convention: str

  @property
  def compression_ratio(self) -> float:
    """Memory of the all-float32 model over memory at the layers' bit widths."""
    return self.float_memory_bytes / self.memory_bytes if self.memory_bytes else 1.0

  @property
  def binary_mac_fraction(self) -> float:
    return self.binary_macs / self.total_macs if self.total_macs else 0.0

  def as_dict(self) -> dict[str, Any]:
    """Totals and rows as plain Python values (JSON-serialisable)."""
    rows = [dict(dataclasses.asdict(l), binary_macs=l.binary_macs, lowbit_macs=l.lowbit_macs,
                 float_macs=l.float_macs) for l in self.layers]
    return {
        "layers": rows,
        "total_params": self.total_params,
        "params_by_bits": {str(k): v for k, v in sorted(self.params_by_bits.items())},
        "memory_bytes": self.memory_bytes,
        "float_memory_bytes": self.float_memory_bytes,
        "compression_ratio": self.compression_ratio,
        "total_macs": self.total_macs,
        "binary_macs": self.binary_macs,
        "lowbit_macs": self.lowbit_macs,
        "float_macs": self.float_macs,
        "binary_mac_fraction": self.binary_mac_fraction,
        "mac_convention": self.mac_convention,
    }

  def __str__(self) -> str:
    header = ("Layer", "Type", "Output shape", "Params", "Bits w/a", "Memory",
              "Binary MACs", "Low-bit MACs", "Float MACs")
    rows = [(l.path, l.type, l.output_shape, _human(l.params), f"{l.weight_bits}/{l.input_bits}",
             _human_bytes(l.memory_bytes), _human(l.binary_macs), _human(l.lowbit_macs),
             _human(l.float_macs)) for l in self.layers]
    total = ("Total", "", "", _human(self.total_params), "", _human_bytes(self.memory_bytes),
             _human(self.binary_macs), _human(self.lowbit_macs), _human(self.float_macs))
    widths = [max(len(r[i]) for r in [header, total, *rows]) for i in range(len(header))]
    # Text columns left-aligned, numbers right-aligned, so magnitudes line up.
    def fmt(r: Sequence[str]) -> str:
      cells = (c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
      return "  ".join(cells)
    rule = "-" * len(fmt(header))
    bits = ", ".join(f"{b}-bit: {_human(n)}" for b, n in sorted(self.params_by_bits.items()))
    lines = [fmt(header), rule, *map(fmt, rows), rule, fmt(total), "",
             f"Params: {_human(self.total_params)} ({bits})",
             f"Memory: {_human_bytes(self.memory_bytes)} (float32: "
             f"{_human_bytes(self.float_memory_bytes)}), compression ratio "
             f"{self.compression_ratio:.2f}x",
             f"MACs per example ({self.mac_convention!r} convention): {_human(self.total_macs)} = "
             f"binary {_human(self.binary_macs)} + low-bit {_human(self.lowbit_macs)} + float "
             f"{_human(self.float_macs)}; binary fraction {100 * self.binary_mac_fraction:.1f}%"]
    return "\n".join(lines)


def _human(n: float) -> str:
  for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
    if abs(n) >= scale:
      return f"{n / scale:.2f} {unit}"
  return f"{int(n)}"


def _human_bytes(n: float) -> str:
  for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
    if n >= scale:
      return f"{n / scale:.2f} {unit}"
  return f"{n:.0f} B"


def _bits(module: nn.Module, name: str) -> int:
  """The module's `name` bit width (class attribute or field), else 32."""
  value = getattr(module, name, None)
  if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
    return int(value)
  return _FLOAT_BITS


def _shape_str(tree: Any) -> str:
  shapes = [tuple(x.shape) for x in jax.tree_util.tree_leaves(tree) if hasattr(x, "shape")]
  if len(shapes) == 1:
    return str(shapes[0])
  return str(shapes)


@dataclasses.dataclass
class _Call:
  module: nn.Module
  path: tuple[str, ...]
  in_shape: tuple[int, ...] | None
  has_children: bool = False
  out_tree: Any = None
  own_params: dict[str, Any] = dataclasses.field(default_factory=dict)
  weight_bits: int = _FLOAT_BITS
  input_bits: int = _FLOAT_BITS


def _abstract(tree: Any) -> Any:
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype) if hasattr(x, "shape") else x, tree)


def _record(model: nn.Module, inputs: Sequence[Any], rngs: Any,
            apply_kwargs: Mapping[str, Any]) -> tuple[list[_Call], Any]:
  """Abstractly initialises `model`, returning every module call and the variable shapes."""
  recorded, variables = recording.record_calls(
      lambda *xs: model.init(rngs, *xs, **apply_kwargs), *inputs, variables=True)
  parents = {c.parent for c in recorded}
  calls = []
  for i, c in enumerate(recorded):
    first = next((a for a in jax.tree_util.tree_leaves((c.args, c.kwargs)) if hasattr(a, "shape")),
                 None)
    params = (c.variables or {}).get("params", {})
    # Only the module's own leaves: sub-modules appear as nested mappings and get their own rows.
    own = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in params.items()
           if hasattr(v, "shape")}
    calls.append(_Call(c.module, c.path, tuple(first.shape) if first is not None else None,
                       has_children=i in parents, out_tree=_abstract(c.output), own_params=own,
                       weight_bits=_bits(c.module, "weight_bits"),
                       input_bits=_bits(c.module, "input_bits")))
  return calls, variables


def _macs(call: _Call, batch: int, mac_convention: str) -> int:
  """Analytic MACs of one call for one example (0 for modules without a kernel)."""
  kernel = call.own_params.get("kernel")
  outs = [x for x in jax.tree_util.tree_leaves(call.out_tree) if hasattr(x, "shape")]
  if kernel is None or not outs:
    return 0
  transposed = (isinstance(call.module, nn.ConvTranspose)
                or "Transpose" in type(call.module).__name__)
  if transposed and mac_convention == "true" and call.in_shape is not None:
    ref = call.in_shape          # scatter per input pixel
  else:
    ref = tuple(outs[0].shape)   # gather per output position (conv, dense, "gan" transposed)
  positions = int(np.prod(ref[:-1], dtype=np.int64))
  # Kernel size = kh * kw * (C_in / groups) * C_out for convs (either kernel layout), in * out
  # for dense; times output (or input) positions gives MACs for the whole batch.
  return positions * int(np.prod(kernel.shape, dtype=np.int64)) // max(batch, 1)


def summary(model: nn.Module, *inputs: Any, mac_convention: str = "true", rngs: Any = None,
            layer_bits: LayerBitsFn | None = None, **apply_kwargs: Any) -> Summary:
  """Summarises `model` on `inputs` without running it.

  Args:
    model: an unbound linen module.
    *inputs: example inputs (arrays or `jax.ShapeDtypeStruct`); the leading axis of the first is
      the batch, and MACs are reported per example.
    mac_convention: "true" counts transposed convolutions at input resolution (the work done);
      "gan" at output resolution, as GAN-compression papers (thop) count them.
    rngs: PRNG keys for `model.init`; defaults to fixed "params" and "dropout" keys.
    layer_bits: optional `(path, module) -> (weight_bits, input_bits) | None` overriding the class
      attributes, for precision decided outside the layer class (a rule-based `quant.quantize`
      transform matching module paths by regex); None keeps the attributes.
    **apply_kwargs: keyword arguments of the model's `__call__` (e.g. `train=False`).

  Returns:
    A `Summary` (print it for the table).

  Raises:
    ValueError: if `mac_convention` is unknown or no inputs are given.
  """
  if mac_convention not in MAC_CONVENTIONS:
    raise ValueError(f"mac_convention must be one of {MAC_CONVENTIONS}, got {mac_convention!r}.")
  if not inputs:
    raise ValueError("summary needs at least one example input (e.g. jax.ShapeDtypeStruct).")
  if rngs is None:
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
  calls, variables = _record(model, inputs, rngs, apply_kwargs)
  if layer_bits is not None:
    for c in calls:
      override = layer_bits("/".join(c.path), c.module)
      if override is not None:
        c.weight_bits, c.input_bits = (int(b) for b in override)
  first = jax.tree_util.tree_leaves(inputs[0])[0]
  batch = int(first.shape[0]) if first.shape else 1

  # Bits of each kernel, keyed by its module path (last call wins for shared modules; same bits).
  kernel_bits = {c.path: c.weight_bits for c in calls if "kernel" in c.own_params}
  flat = traverse_util.flatten_dict(dict(variables.get("params", {})))
  params_by_bits: dict[int, int] = {}
  memory = 0.0
  for key, leaf in flat.items():
    bits = kernel_bits.get(key[:-1], _FLOAT_BITS) if key[-1] == "kernel" else _FLOAT_BITS
    size = int(np.prod(leaf.shape, dtype=np.int64))
    params_by_bits[bits] = params_by_bits.get(bits, 0) + size
    memory += size * bits / 8
  total_params = sum(params_by_bits.values())

  layers = []
  seen: set[tuple[str, ...]] = set()
  for c in calls:
    if c.has_children and not c.own_params:
      continue  # containers: their leaves are listed
    # A shared module's parameters are listed on its first call only, so rows add up to totals.
    own = {} if c.path in seen else c.own_params
    seen.add(c.path)
    n = 0
    mem = 0.0
    for k, v in own.items():
      size = int(np.prod(v.shape, dtype=np.int64))
      n += size
      mem += size * (c.weight_bits if k == "kernel" else _FLOAT_BITS) / 8
    layers.append(LayerInfo(path="/".join(c.path) or "(root)", type=type(c.module).__name__,
                            output_shape=_shape_str(c.out_tree), params=n,
                            weight_bits=c.weight_bits if "kernel" in c.own_params else _FLOAT_BITS,
                            input_bits=c.input_bits, memory_bytes=mem,
                            macs=_macs(c, batch, mac_convention)))
  return Summary(
      layers=tuple(layers), total_params=total_params, params_by_bits=params_by_bits,
      memory_bytes=memory, float_memory_bytes=total_params * _FLOAT_BITS / 8,
      total_macs=sum(l.macs for l in layers), binary_macs=sum(l.binary_macs for l in layers),
      lowbit_macs=sum(l.lowbit_macs for l in layers), float_macs=sum(l.float_macs for l in layers),
      mac_convention=mac_convention)


def xla_flops(fn: Any, *args: Any) -> float:
  """FLOPs XLA's cost model assigns to `jax.jit(fn)(*args)` (args may be `ShapeDtypeStruct`s).

  A cross-check of `summary`: for conv/dense nets, flops ~= 2 * MACs * batch (a multiply and an
  add per MAC) plus the few elementwise ops.

  Args:
    fn: a JAX function.
    *args: its arguments, concrete or abstract.

  Returns:
    The "flops" estimate of XLA:CPU's cost model for the lowered (not yet optimised)
    computation, 0.0 if it reports none, whatever the default backend. The optimised module
    would be backend-specific: on GPU, XLA rewrites convolutions into cuDNN custom calls, which
    its cost model counts as 0 FLOPs (measured on an H200: 0.014-0.07x the MACs), and the GPU
    cost model gave 0 for the lowered module too (H100); on CPU lowered and optimised agree.
  """
  # The CPU cost model on every host: it counts convolutions, and the result then does not
  # depend on the accelerator (the GPU model gave 0 FLOPs for a conv net's lowered module on an
  # H100). Only shapes matter, so concrete arrays become abstract ones (a committed GPU array
  # would otherwise pin the lowering to the GPU).
  args = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype) if isinstance(a, jax.Array) else a, args)
  try:
    cpu = jax.devices("cpu")[0]
  except RuntimeError:  # JAX_PLATFORMS leaves the CPU backend out: the default backend's model
    cpu = None
  with jax.default_device(cpu):
    cost = jax.jit(fn).lower(*args).cost_analysis()
  if isinstance(cost, (list, tuple)):  # older JAX returned one dict per device program
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", 0.0))
