"""Converts torchvision ImageNet checkpoints into the variables of jaxcompress's models.

Compression papers start from torchvision's pretrained ImageNet weights (RBNN, PAMS, DMAD and the
pruning literature all fine-tune or distil from them). `convert_torchvision` reads a state_dict
that the user already has (a `.pth` file saved with `torch.save(model.state_dict(), path)`, or
the files torchvision's weight URLs point at, or an in-memory mapping of tensors/arrays) and
returns the `{"params": ..., "batch_stats": ...}` of the matching jaxcompress model, whose eval
outputs equal torchvision's. Nothing is downloaded.

Layouts: convolution kernels OIHW (out, in / groups, kh, kw) become HWIO; linear weights
(out, in) become dense kernels (in, out); BatchNorm weight/bias/running_mean/running_var become
scale/bias/mean/var; `num_batches_tracked` is dropped (flax keeps no counter).

Example:
  >>> from jaxcompress.models import torchvision_weights as tvw
  >>> variables = tvw.convert_torchvision("resnet50", "resnet50-0676ba61.pth")
  >>> model = tvw.torchvision_model("resnet50")
  >>> logits = model.apply(variables, images_nhwc, train=False)

Inputs are NHWC and normalised as torchvision's weights expect (RGB in [0, 1], minus mean
(0.485, 0.456, 0.406), divided by std (0.229, 0.224, 0.225)).
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import re
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress.errors import ConfigError

Path = tuple[str, ...]  # a flax module path, e.g. ("stage1_block0", "conv1")

# flax leaf name -> torchvision parameter/buffer suffix. `kernel` is a conv or linear `weight`
# and `scale` a BatchNorm `weight`; the rest keep their meaning.
_LEAF_TO_TORCH = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
                  "var": "running_var"}
# Buffers torchvision saves that flax has no counterpart for; accepted and dropped.
_IGNORED_SUFFIXES = ("num_batches_tracked",)


@dataclasses.dataclass(frozen=True)
class _Arch:
  """How one torchvision architecture maps onto a jaxcompress model.

  Attributes:
    constructor: "module:function" building the jaxcompress model (num_classes=, layers=, ...).
    to_torch: flax module path, set of all module paths -> torchvision key prefix.
    classifier: torchvision key of the classifier weight (gives num_classes).
    input_size: square input side used to trace the model's variable shapes.
    kwargs: fixed constructor arguments.
    optional_prefixes: torchvision key prefixes dropped when the model has no such modules.
  """
  constructor: str
  to_torch: Callable[[Path, frozenset[Path]], str]
  classifier: str
  input_size: int = 224
  kwargs: tuple[tuple[str, Any], ...] = ()
  optional_prefixes: tuple[str, ...] = ()


def _resnet_key(path: Path, modules: frozenset[Path]) -> str:
  """torchvision `models/resnet.py` names: conv1, bn1, layerS.B.{conv,bn}N, downsample.{0,1}, fc."""
  del modules
  top = {"stem": "conv1", "stem_bn": "bn1", "classifier": "fc"}
  if path[0] in top:
    return top[path[0]]
  m = re.fullmatch(r"stage(\d+)_block(\d+)", path[0])
  if m is None:
    raise KeyError(path)
  parts = [f"layer{m.group(1)}", m.group(2)]
  for name in path[1:]:
    parts.append({"conv": "0", "bn": "1"}.get(name, name) if path[1] == "downsample" else name)
  return ".".join(parts)


def _mobilenet_v2_key(path: Path, modules: frozenset[Path]) -> str:
  """torchvision `models/mobilenetv2.py` names: features.I..., classifier.1."""
  blocks = len({p[0] for p in modules if p[0].startswith("block")})
  top = {"stem": "features.0.0", "stem_bn": "features.0.1", "head": f"features.{blocks + 1}.0",
         "head_bn": f"features.{blocks + 1}.1", "classifier": "classifier.1"}
  if path[0] in top:
    return top[path[0]]
  index = path[0][len("block"):]
  # InvertedResidual.conv is a Sequential: [ConvBNReLU expand (t > 1)], ConvBNReLU depthwise,
  # Conv project, BN; the indices shift by one when there is no expansion.
  offset = 1 if (path[0], "expand") in modules else 0
  sub = {"expand": "0.0", "expand_bn": "0.1", "depthwise": f"{offset}.0",
         "depthwise_bn": f"{offset}.1", "project": f"{offset + 1}",
         "project_bn": f"{offset + 2}"}[path[1]]
  return f"features.{index}.conv.{sub}"


def _densenet_key(path: Path, modules: frozenset[Path]) -> str:
  """torchvision `models/densenet.py` names: features.<module path>, classifier."""
  del modules
  return "classifier" if path == ("classifier",) else "features." + ".".join(path)


def _inception_key(path: Path, modules: frozenset[Path]) -> str:
  """torchvision `models/inception.py` names: the module path itself (Conv2d_1a_3x3.conv, ...)."""
  del modules
  return ".".join(path)


_RESNET = "jaxcompress.models.resnet_imagenet"
_BOTTLENECK = "jaxcompress.models.resnet_bottleneck"
_ARCHS: dict[str, _Arch] = {
    "resnet18": _Arch(f"{_RESNET}:ResNet18", _resnet_key, "fc.weight"),
    "resnet34": _Arch(f"{_RESNET}:ResNet34", _resnet_key, "fc.weight"),
    "resnet50": _Arch(f"{_BOTTLENECK}:ResNet50", _resnet_key, "fc.weight"),
    "resnet101": _Arch(f"{_BOTTLENECK}:ResNet101", _resnet_key, "fc.weight"),
    "resnet152": _Arch(f"{_BOTTLENECK}:ResNet152", _resnet_key, "fc.weight"),
    "resnext50_32x4d": _Arch(f"{_BOTTLENECK}:ResNeXt50_32x4d", _resnet_key, "fc.weight"),
    "wide_resnet50_2": _Arch(f"{_BOTTLENECK}:WideResNet50_2", _resnet_key, "fc.weight"),
    "mobilenet_v2": _Arch("jaxcompress.models.mobilenet_v2:mobilenet_v2", _mobilenet_v2_key,
                          "classifier.1.weight"),
    "densenet121": _Arch("jaxcompress.models.densenet:densenet121", _densenet_key,
                         "classifier.weight"),
    "densenet161": _Arch("jaxcompress.models.densenet:densenet161", _densenet_key,
                         "classifier.weight"),
    "densenet169": _Arch("jaxcompress.models.densenet:densenet169", _densenet_key,
                         "classifier.weight"),
    "densenet201": _Arch("jaxcompress.models.densenet:densenet201", _densenet_key,
                         "classifier.weight"),
    # The auxiliary classifier's entries are dropped when the model is built without it.
    "inception_v3": _Arch("jaxcompress.models.inception_v3:inception_v3", _inception_key,
                          "fc.weight", input_size=299, optional_prefixes=("AuxLogits.",)),
}

# torchvision's own checkpoint files for DenseNet predate its module names: "norm.1" instead of
# "norm1" (torchvision `models/densenet.py`, `_load_state_dict` uses the same pattern).
_DENSENET_LEGACY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\."
                              r"(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def archs() -> list[str]:
  """The torchvision architecture names `convert_torchvision` accepts."""
  return sorted(_ARCHS)


def _arch(name: str) -> _Arch:
  if name not in _ARCHS:
    raise ConfigError(f"Unknown torchvision architecture {name!r}; known: {', '.join(archs())}. "
                      "Pass the name of the torchvision.models function the checkpoint came from.")
  return _ARCHS[name]


def torchvision_model(arch: str, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
  """The jaxcompress model whose architecture is torchvision's `arch`.

  Args:
    arch: a torchvision.models function name (see `archs()`), e.g. "resnet50".
    num_classes: classifier outputs.
    **kwargs: further model arguments (`layers=`, `dropout=`, `transform_input=` ...).

  Returns:
    An unbound linen module called as `model.apply(variables, x_nhwc, train=False)`.

  Raises:
    ConfigError: `arch` is unknown.
  """
  spec = _arch(arch)
  module, attr = spec.constructor.split(":")
  ctor = getattr(importlib.import_module(module), attr)
  return ctor(num_classes=num_classes, **{**dict(spec.kwargs), **kwargs})


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
  """Reads a `.pth` state_dict with `torch.load(weights_only=True)` into NumPy arrays.

  Args:
    path: a file written by `torch.save(model.state_dict(), path)` (or a dict holding it under
      "state_dict" or "model", as training scripts often save).

  Returns:
    Parameter name -> array.

  Raises:
    ConfigError: torch is not installed, the file is missing, or it holds no state_dict.
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ConfigError("pip install torch to read .pth files, or pass a dict of NumPy arrays "
                      "to convert_torchvision.") from e
  if not os.path.exists(path):
    raise ConfigError(f"Checkpoint file {os.fspath(path)!r} does not exist; pass the path of a "
                      "saved torchvision state_dict.")
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # pickle and zip errors have many types; all mean "not loadable"
    raise ConfigError(f"Cannot read {os.fspath(path)!r} as a PyTorch state_dict ({e}). Save "
                      "it with torch.save(model.state_dict(), path).") from e
  return _to_numpy(_unwrap(obj, os.fspath(path)))


def _unwrap(obj: Any, where: str) -> Mapping[str, Any]:
  """The state_dict in a checkpoint, possibly wrapped as {"state_dict": ...} or {"model": ...}."""
  if not isinstance(obj, Mapping):
    raise ConfigError(f"{where} holds a {type(obj).__name__}, not a state_dict; save "
                      "model.state_dict(), not the model.")
  for wrapper in ("state_dict", "model"):
    if isinstance(obj.get(wrapper), Mapping):
      return obj[wrapper]
  return obj


def _to_numpy(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
  out = {}
  for k, v in state.items():
    if hasattr(v, "detach"):  # a torch.Tensor; bfloat16 has no NumPy dtype, so widen floats
      v = v.detach().cpu()
      v = v.float() if v.is_floating_point() else v
      v = v.numpy()
    out[str(k)] = np.asarray(v)
  # nn.DataParallel / DistributedDataParallel checkpoints prefix every key with "module.".
  if out and all(k.startswith("module.") for k in out):
    out = {k[len("module."):]: v for k, v in out.items()}
  return out


def _torch_shape(leaf: str, shape: Sequence[int]) -> tuple[int, ...]:
  """The shape torchvision stores for a flax leaf of `shape`."""
  if leaf == "kernel" and len(shape) == 4:   # HWIO -> OIHW
    return (shape[3], shape[2], shape[0], shape[1])
  if leaf == "kernel" and len(shape) == 2:   # (in, out) -> (out, in)
    return (shape[1], shape[0])
  return tuple(shape)


def _from_torch(leaf: str, value: np.ndarray) -> np.ndarray:
  if leaf == "kernel" and value.ndim == 4:
    return np.transpose(value, (2, 3, 1, 0))
  if leaf == "kernel" and value.ndim == 2:
    return value.T
  return value


def _flat(tree: Mapping[str, Any], prefix: Path = ()) -> dict[Path, Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(_flat(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def _nest(flat: Mapping[Path, Any]) -> dict[str, Any]:
  out: dict[str, Any] = {}
  for path, v in flat.items():
    node = out
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = v
  return out


def _describe(keys: Sequence[str], shapes: Mapping[str, tuple[int, ...]], limit: int = 5) -> str:
  shown = ", ".join(f"{k!r} (expected shape {shapes[k]})" if k in shapes else repr(k)
                    for k in keys[:limit])
  return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def convert_torchvision(arch: str, state_dict_or_path: str | os.PathLike[str] | Mapping[str, Any],
                        *, num_classes: int | None = None, dtype: Any = np.float32,
                        **model_kwargs: Any) -> dict[str, Any]:
  """Converts a torchvision state_dict into the variables of `torchvision_model(arch)`.

  Every parameter and BatchNorm statistic of the jaxcompress model is taken from the checkpoint,
  and every checkpoint entry must be used (except `num_batches_tracked`, and Inception-v3's
  `AuxLogits.*` when the model is built with `aux_logits=False`), so a checkpoint of another
  architecture or width fails loudly instead of loading partially.

  Args:
    arch: torchvision.models function name (see `archs()`): "resnet18", "resnet34",
      "resnet50", "mobilenet_v2", "densenet121", "inception_v3", ...
    state_dict_or_path: a path to a `.pth` file (read with `torch.load(..., weights_only=True)`)
      or a mapping of parameter names to torch tensors or NumPy arrays. torchvision's legacy
      DenseNet names ("norm.1") and DataParallel's "module." prefix are accepted.
    num_classes: classifier outputs; by default read from the checkpoint's classifier weight
      (so fine-tuned checkpoints with other class counts convert too).
    dtype: dtype of the returned floating-point arrays.
    **model_kwargs: further arguments of `torchvision_model` (e.g. `layers=`); the model must
      have the same variables as the float model. torchvision's ImageNet weights of
      Inception-v3 expect `transform_input=True` when the model is applied (torchvision sets
      it for them); it changes no variable.

  Returns:
    {"params": ..., "batch_stats": ...} nested dicts of jax arrays for
    `torchvision_model(arch, num_classes, **model_kwargs).apply(variables, x, train=False)`.

  Raises:
    ConfigError: unknown `arch`; torch missing when a path is given; a key of the model missing
      from the checkpoint, an unexpected checkpoint key, or a shape mismatch (each message
      names the key and the expected torchvision shape).
  """
  spec = _arch(arch)
  if isinstance(state_dict_or_path, (str, os.PathLike)):
    state = load_state_dict(state_dict_or_path)
  else:
    state = _to_numpy(_unwrap(state_dict_or_path, "The state_dict argument"))
  if spec.to_torch is _densenet_key:
    state = {_DENSENET_LEGACY.sub(r"\1\2", k): v for k, v in state.items()}
  if num_classes is None:
    num_classes = int(state[spec.classifier].shape[0]) if spec.classifier in state else 1000
  model = torchvision_model(arch, num_classes=num_classes, **model_kwargs)

  x = jax.ShapeDtypeStruct((1, spec.input_size, spec.input_size, 3), jnp.float32)
  abstract = jax.eval_shape(lambda v: model.init(jax.random.key(0), v, train=False), x)
  unknown = set(abstract) - {"params", "batch_stats"}
  if unknown:
    raise ConfigError(f"The {arch} model built with {model_kwargs} has variable collections "
                      f"{sorted(unknown)} that torchvision checkpoints do not have; convert into "
                      "the float model (no `layers=` argument) and transform it afterwards.")
  leaves = {(col,) + p: v for col in ("params", "batch_stats")
            for p, v in _flat(abstract.get(col, {})).items()}
  modules = frozenset(p[1:-1] for p in leaves)

  # flax leaf -> torchvision key, and the shape torchvision stores it in.
  keys: dict[Path, str] = {}
  for path in leaves:
    module, leaf = path[1:-1], path[-1]
    if leaf not in _LEAF_TO_TORCH:
      raise ConfigError(f"The {arch} model has a variable {'/'.join(path)} with no torchvision "
                        "counterpart; convert into the float model and transform it afterwards.")
    keys[path] = f"{spec.to_torch(module, modules)}.{_LEAF_TO_TORCH[leaf]}"
  expected = {keys[p]: _torch_shape(p[-1], v.shape) for p, v in leaves.items()}
  assert len(expected) == len(leaves), "two flax variables map to one torchvision key"

  missing = sorted(k for k in expected if k not in state)
  if missing:
    hint = (f"Pass the state_dict of torchvision.models.{arch}() (or check `arch`).")
    if all(k.startswith(spec.optional_prefixes) for k in missing) and spec.optional_prefixes:
      hint = "The checkpoint has no auxiliary classifier: pass aux_logits=False."
    raise ConfigError(f"The {arch} checkpoint lacks {len(missing)} key(s) the model needs: "
                      f"{_describe(missing, expected)}. {hint}")
  used_modules = {k.rsplit(".", 1)[0] for k in expected}
  extra = sorted(
      k for k in state if k not in expected
      and not (k.endswith(_IGNORED_SUFFIXES) and k.rsplit(".", 1)[0] in used_modules)
      and not k.startswith(spec.optional_prefixes))
  if extra:
    raise ConfigError(f"The {arch} checkpoint has {len(extra)} key(s) the jaxcompress model "
                      f"does not use: {_describe(extra, {})}. Check `arch` and the model "
                      "arguments (a checkpoint of another architecture or width).")

  wrong = sorted(k for k in expected if tuple(state[k].shape) != expected[k])
  if wrong:
    shown = "; ".join(f"{k!r} has shape {tuple(state[k].shape)}, the model expects "
                      f"{expected[k]}" for k in wrong[:5])
    more = f" and {len(wrong) - 5} more" if len(wrong) > 5 else ""
    raise ConfigError(f"The {arch} checkpoint has {len(wrong)} tensor(s) of the wrong shape: "
                      f"{shown}{more} (torchvision layout). Check `arch` and the model "
                      "arguments (num_classes, width).")

  flat: dict[Path, Any] = {}
  for path in leaves:
    value = _from_torch(path[-1], state[keys[path]])
    flat[path] = jnp.asarray(value, dtype if np.issubdtype(value.dtype, np.floating) else None)
  return _nest(flat)
