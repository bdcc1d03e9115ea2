"""A serialized serving artefact: a converted model as one StableHLO program on disk.

`write_artefact(exported, directory, *example_args)` traces `serve_apply(exported, ...)` (the
converted model of `export`: packed 1-bit and integer layers, the model's own Flax code around
them), exports it with `jax.export` and writes

  * `serve.stablehlo`: the serialized `jax.export.Exported` (`Exported.serialize()`), with every
    weight baked into the program as a constant;
  * `manifest.json`: input and output shapes and dtypes, the converted layers (mode and weight
    bits of each, and per mode), `export_sizes`, the jax version, the platforms, the format
    version and the program's SHA-256.

The weights are constants rather than saved arrays so that the program file alone is the model:
a server calls it with the model's inputs only (`exported.call(x)`), there is no second file to
keep in step with it and no pytree of weights to rebuild in the right order, and XLA may fold the
weight-only work (unpacking the 1-bit kernels of float-input layers, dequantising int8 kernels)
into constants when it compiles the program. The packed formats are what gets stored: a 1-bit
kernel is a `uint32` constant of 32 signs a word, an int8 kernel an `int8` constant.

`load_artefact(directory)` deserializes it and returns a callable that checks its inputs against
the manifest before running the program. It needs only jax and numpy: the model code is not
imported (the converted model is the program). A process without jaxcompress can load it with
jax alone (jax's optional dependency `flatbuffers` reads the file):

  >>> exp = jax.export.deserialize(open("artefact/serve.stablehlo", "rb").read())
  >>> logits = exp.call(x)

Example:
  >>> exported = quant.export(variables, model, x, train=False)
  >>> quant.write_artefact(exported, "artefact", x, batch_polymorphic=True)
  >>> serve = quant.load_artefact("artefact")
  >>> logits = serve(x)                            # == quant.serve_fn(exported)(x)
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from typing import TYPE_CHECKING, Any, Callable, Sequence

import jax
import numpy as np

if TYPE_CHECKING:
  from jaxcompress.quant.export import Exported

FORMAT = "jaxcompress.serving_artefact"
FORMAT_VERSION = 1
PROGRAM_FILE = "serve.stablehlo"
MANIFEST_FILE = "manifest.json"
# Name of the symbolic batch dimension of a batch-polymorphic artefact.
BATCH_DIM = "b"


def _dims(shape: Sequence[Any]) -> list[int | str]:
  """A shape for JSON: ints, and the names of symbolic dimensions."""
  return [d if isinstance(d, int) else str(d) for d in shape]


def _signature(avals: Sequence[Any]) -> list[dict[str, Any]]:
  return [{"shape": _dims(a.shape), "dtype": np.dtype(a.dtype).name} for a in avals]


def _weight_bits(layer: Any) -> int:
  """Bits of one stored kernel entry's grid (the quantizer's precision, not the storage type)."""
  spec = layer.spec
  if spec.mode in ("xnor", "binary_weight"):
    return 1
  if spec.mode == "int":
    # qmax = 2^(bits - 1) - 1 for the integer quantizers `export` converts.
    return int(round(np.log2(spec.qmax + 1))) + 1
  return np.dtype(layer.weights.dtype).itemsize * 8


def _layers(exported: Exported) -> tuple[dict[str, Any], dict[str, Any]]:
  """Per converted layer (path -> mode, kind, shape, bits) and per mode (count, bits)."""
  per_layer, per_mode = {}, {}
  for path, layer in sorted(exported.layers.items()):
    spec, bits = layer.spec, _weight_bits(layer)
    per_layer[path] = {"mode": spec.mode, "kind": spec.kind,
                       "kernel_shape": list(spec.kernel_shape), "weight_bits": bits,
                       "weight_dtype": np.dtype(layer.weights.dtype).name}
    mode = per_mode.setdefault(spec.mode, {"layers": 0, "weight_bits": []})
    mode["layers"] += 1
    if bits not in mode["weight_bits"]:
      mode["weight_bits"] = sorted(mode["weight_bits"] + [bits])
  return per_layer, per_mode


def _arg_specs(example_args: Sequence[Any], batch_polymorphic: bool) -> list[Any]:
  """`jax.ShapeDtypeStruct`s of the example inputs, the leading dimension symbolic if asked."""
  batch = jax.export.symbolic_shape(BATCH_DIM)[0] if batch_polymorphic else None

  def spec(a: Any) -> jax.ShapeDtypeStruct:
    shape = tuple(np.shape(a))
    dtype = a.dtype if hasattr(a, "dtype") else np.result_type(a)
    if batch is not None:
      if not shape:
        raise ValueError("write_artefact(batch_polymorphic=True) needs every input to have a "
                         f"leading batch dimension; got a scalar input of dtype {dtype}.")
      shape = (batch,) + shape[1:]
    return jax.ShapeDtypeStruct(shape, dtype)

  return jax.tree_util.tree_map(spec, list(example_args))


def _is_artefact(directory: str) -> bool:
  try:
    with open(os.path.join(directory, MANIFEST_FILE), encoding="utf-8") as f:
      return json.load(f).get("format") == FORMAT
  except (OSError, ValueError, AttributeError):
    return False


def _sibling(parent: str, name: str, kind: str) -> str:
  """Creates an empty hidden directory beside `name` (permissions from the umask, unlike
  `tempfile.mkdtemp`'s owner-only ones, which the renamed artefact would keep)."""
  while True:
    path = os.path.join(parent, f".{name}.{kind}-{secrets.token_hex(4)}")
    try:
      os.mkdir(path)
      return path
    except FileExistsError:
      continue


def _write_atomically(directory: str, files: dict[str, bytes]) -> None:
  """Writes `files` into a temporary sibling directory, then renames it to `directory`.

  A reader sees the old artefact, or none for the instant between the two renames when one is
  replaced, or the new one: never a directory with some of the files written.
  """
  directory = os.path.abspath(directory)
  parent, name = os.path.split(directory)
  if os.path.lexists(directory) and not (
      os.path.isdir(directory) and (not os.listdir(directory) or _is_artefact(directory))):
    raise FileExistsError(f"write_artefact: {directory} exists and is not a serving artefact; "
                          "choose another directory or remove it first.")
  os.makedirs(parent, exist_ok=True)
  tmp = _sibling(parent, name, "tmp")
  old = None
  try:
    for filename, data in files.items():
      with open(os.path.join(tmp, filename), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if os.path.lexists(directory):
      # A directory cannot be renamed over a non-empty one: move the old artefact aside first.
      old = _sibling(parent, name, "old")
      os.replace(directory, os.path.join(old, name))
    os.replace(tmp, directory)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    if old is not None and not os.path.lexists(directory):
      os.replace(os.path.join(old, name), directory)  # put the previous artefact back
    raise
  finally:
    if old is not None:
      shutil.rmtree(old, ignore_errors=True)


def write_artefact(exported: Exported, directory: str, *example_args: Any,
                   batch_polymorphic: bool = False, platforms: Sequence[str] | None = None,
                   **apply_kwargs: Any) -> dict[str, Any]:
  """Serializes a converted model's serving function to `directory`.

  The program is `jax.export.export(jax.jit(f))(*input_specs)` of
  `f = lambda *args: serve_apply(exported, *args, **apply_kwargs)`, with the weights baked in as
  constants (see the module docstring), so it runs with the model's inputs alone.

  The program must hold no custom call that `jax.export` cannot serialize. On one CPU device,
  `jaxcompress.ops.conv` runs large float32 convolutions (e.g. the float stem of models built by
  `jaxcompress.models`) as oneDNN's `__onednn$convolution` custom call, which has no
  compatibility guarantee and which `jax.export` refuses. The trace therefore runs with
  `ops.conv.set_conv_impl("lax")` (plain `lax.conv_general_dilated`, what GPU/TPU always use;
  the converted layers' own convolutions are lax already), and the previous setting is restored
  afterwards. The setting is process-wide: do not trace other programs in other threads while
  this runs.

  Writing is atomic: the files go into a temporary sibling directory that is renamed into place.
  An existing artefact (or empty directory) at `directory` is replaced; any other existing path
  is refused.

  Args:
    exported: `export(...)`'s result.
    directory: where the artefact goes (created; its parent is created too).
    *example_args: the model's inputs, as arrays or `jax.ShapeDtypeStruct`s: their shapes and
      dtypes are the artefact's input signature (only shapes and dtypes are read).
    batch_polymorphic: make the leading dimension of every input one symbolic batch size `b`
      (any b >= 1 at call time, `jax.export.symbolic_shape`); every converted layer kind
      (XNOR-popcount, binary-weight, int, RBNN) serves with it.
    platforms: the platforms to lower for (e.g. `("cpu", "cuda")`); default: the default
      backend's.
    **apply_kwargs: overrides of the apply keyword arguments given to `export`.

  Returns:
    The manifest (also written to `manifest.json`).
  """
  # The writer needs jaxcompress's serving code; the loader below needs only jax and numpy, so
  # these imports stay here.
  from jaxcompress.ops import conv as conv_ops  # pylint: disable=g-import-not-at-top
  from jaxcompress.quant.export import export_sizes, serve_apply  # pylint: disable=g-import-not-at-top

  if not example_args:
    raise ValueError("write_artefact needs example inputs (arrays or jax.ShapeDtypeStruct) "
                     "for the serving signature, e.g. write_artefact(exported, dir, x).")
  specs = _arg_specs(example_args, batch_polymorphic)
  serve = jax.jit(lambda *args: serve_apply(exported, *args, **apply_kwargs))
  previous = conv_ops.get_conv_impl()
  conv_ops.set_conv_impl("lax")
  try:
    program = jax.export.export(serve, platforms=platforms)(*specs)
  finally:
    conv_ops.set_conv_impl(previous)
  data = bytes(program.serialize())
  per_layer, per_mode = _layers(exported)
  sizes = {k: (int(v) if isinstance(v, (int, np.integer)) else float(v))
           for k, v in export_sizes(exported).items()}
  manifest = {
      "format": FORMAT,
      "format_version": FORMAT_VERSION,
      "program": PROGRAM_FILE,
      "program_bytes": len(data),
      "program_sha256": hashlib.sha256(data).hexdigest(),
      "inputs": _signature(program.in_avals),
      "outputs": _signature(program.out_avals),
      "batch_polymorphic": bool(batch_polymorphic),
      "platforms": list(program.platforms),
      "jax_version": jax.__version__,
      "calling_convention_version": program.calling_convention_version,
      "layer_modes": per_mode,
      "layers": per_layer,
      "sizes": sizes,
      "notes": list(exported.notes),
  }
  _write_atomically(directory, {
      PROGRAM_FILE: data,
      MANIFEST_FILE: (json.dumps(manifest, indent=2) + "\n").encode("utf-8"),
  })
  return manifest


def _format_shape(shape: Sequence[Any]) -> str:
  return "(" + ", ".join(str(d) for d in shape) + (",)" if len(shape) == 1 else ")")


class ServingArtefact:
  """A loaded serving artefact: call it with the model's inputs.

  Attributes:
    manifest: the artefact's `manifest.json`.
    exported: the deserialized `jax.export.Exported` (usable inside `jax.jit` via `.call`).
    directory: where it was loaded from.
  """

  def __init__(self, directory: str, manifest: dict[str, Any], exported: Any):
    self.directory = directory
    self.manifest = manifest
    self.exported = exported
    self._call = jax.jit(exported.call)

  def _check(self, leaves: Sequence[Any]) -> None:
    expected = self.manifest["inputs"]
    if len(leaves) != len(expected):
      raise ValueError(f"Serving artefact {self.directory} takes {len(expected)} input array(s) "
                       f"({', '.join(_format_shape(e['shape']) for e in expected)}), got "
                       f"{len(leaves)}.")
    symbols: dict[str, int] = {}
    for i, (leaf, want) in enumerate(zip(leaves, expected)):
      shape = tuple(int(d) for d in np.shape(leaf))
      dtype = np.dtype(leaf.dtype if hasattr(leaf, "dtype") else np.result_type(leaf)).name
      ok = dtype == want["dtype"] and len(shape) == len(want["shape"])
      if ok:
        for got, dim in zip(shape, want["shape"]):
          if isinstance(dim, str):  # a symbolic dimension: any size >= 1, one per name
            ok = ok and got >= 1 and symbols.setdefault(dim, got) == got
          else:
            ok = ok and got == dim
      if not ok:
        poly = any(isinstance(d, str) for d in want["shape"])
        hint = (f" ({BATCH_DIM}: any batch size >= 1, the same for every input)" if poly else "")
        fix = ("pass an array of that shape and dtype (e.g. x.astype(...), or resize it)"
               if poly else "pass an array of that shape and dtype (e.g. x.astype(...), or "
               "split or pad the batch), or write the artefact again with example inputs of "
               "the shape you serve, or with write_artefact(..., batch_polymorphic=True) for "
               "any batch size")
        raise ValueError(
            f"Serving artefact {self.directory}: input {i} has shape {_format_shape(shape)} "
            f"and dtype {dtype}, but the artefact was written for shape "
            f"{_format_shape(want['shape'])} and dtype {want['dtype']}{hint}. Fix: {fix}.")

  def __call__(self, *args: Any) -> Any:
    """Runs the program on `args` (the model's inputs) after checking them against the manifest.

    Args:
      *args: the inputs, with the shapes and dtypes of `manifest["inputs"]`.

    Returns:
      The model's output.
    """
    self._check(jax.tree_util.tree_leaves(list(args)))
    return self._call(*args)


def load_artefact(directory: str) -> Callable[..., Any]:
  """Loads an artefact of `write_artefact`: a callable running the serialized program.

  Needs only jax and numpy (the model's code is not imported). The callable checks each call's
  input shapes and dtypes against the manifest and raises a `ValueError` naming the expected
  shape; it also exposes `.manifest` and the deserialized `.exported`.

  Args:
    directory: the artefact's directory.

  Returns:
    A `ServingArtefact`: `load_artefact(dir)(x)` is the served model's output.
  """
  with open(os.path.join(directory, MANIFEST_FILE), encoding="utf-8") as f:
    manifest = json.load(f)
  if manifest.get("format") != FORMAT:
    raise ValueError(f"{directory} is not a serving artefact (its manifest's format is "
                     f"{manifest.get('format')!r}, expected {FORMAT!r}).")
  if manifest.get("format_version", 0) > FORMAT_VERSION:
    raise ValueError(f"Serving artefact {directory} has format version "
                     f"{manifest['format_version']}; this jaxcompress reads up to "
                     f"{FORMAT_VERSION}: upgrade jaxcompress to load it.")
  with open(os.path.join(directory, manifest["program"]), "rb") as f:
    data = f.read()
  if hashlib.sha256(data).hexdigest() != manifest["program_sha256"]:
    raise ValueError(f"Serving artefact {directory}: {manifest['program']} does not match the "
                     "SHA-256 in its manifest (the file was changed or truncated); write the "
                     "artefact again.")
  return ServingArtefact(directory, manifest, jax.export.deserialize(bytearray(data)))
