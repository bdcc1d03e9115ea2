"""Materialize a channel-pruned network: a really smaller model equal to the binary-masked one.

DMAD (arXiv 2011.08382, Sec. 3, "Pruning") searches per-channel masks placed after every norm
and then prunes: a channel is kept iff its mask m > 0; a residual stream shared by several masks
keeps channel i iff more than `threshold` of them keep it; inside a block, kept stream channels
whose own mask is off get zero weights; a block whose first conv keeps no channel is removed
(SJLeo/DMAD `models/MaskCycleGAN.py`, `get_cfg_residual_mask` and `prune`). `materialize` does
this for any model built through the layer factory (`jaxcompress.models.factory`) that
describes its channels with `prune_spec()`, as NNI's ModelSpeedup does for PyTorch modules.
Depthwise convs (separable convs of the mobile generator, `models/MaskMobileCycleGAN.py`) keep
the channels of their input, as the official mobile `prune` does.

Example:
  >>> from jaxcompress import prune
  >>> masks = prune.mask_params(variables)            # {"block0/gate1": m, ...}
  >>> small, small_vars = prune.materialize(generator, variables, masks)
  >>> y = small.apply(small_vars, x)                  # == the model gated by 1[m > 0]
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxcompress.errors import ConfigError
from jaxcompress.models import factory
from jaxcompress.prune import gate as gate_lib

_PARAMS = "params"


def _spec(model: nn.Module) -> factory.PruneSpec:
  if not hasattr(model, "prune_spec") or not hasattr(model, "layer_widths"):
    raise ConfigError(f"{type(model).__name__} does not describe its channels: materialize "
                      "needs the model methods layer_widths() and prune_spec() (see "
                      "factory.PruneSpec; cyclegan.ResnetGenerator is an example).")
  return model.prune_spec()


def _flat_masks(masks: Mapping[str, Any]) -> dict[str, np.ndarray]:
  if not hasattr(masks, "items"):
    raise ConfigError(f"masks must map gate module paths to mask vectors, got "
                      f"{type(masks).__name__}; `jaxcompress.prune.mask_params(params)` gives one.")
  if any(hasattr(v, "items") for v in masks.values()):  # a params tree: read its gates' masks
    masks = gate_lib.mask_params(masks)
  return {k: np.asarray(v) for k, v in masks.items()}


def _plan(model: nn.Module, masks: Mapping[str, Any], threshold: float
          ) -> tuple[factory.PruneSpec, dict[str, int], dict[str, np.ndarray],
                     dict[str, np.ndarray]]:
  """(spec, widths, role -> kept channel indices, gate -> effective boolean mask)."""
  if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold < 0:
    raise ConfigError(f"threshold must be a non-negative number (DMAD's --threshold, default "
                      f"0), got {threshold!r}.")
  spec = _spec(model)
  widths = model.layer_widths()
  gate_role = {g: role for role, r in spec.roles.items() for g in r.gates}
  flat = _flat_masks(masks)
  unknown = sorted(set(flat) - set(gate_role))
  if unknown:
    raise ConfigError(f"masks name unknown gates {unknown}; the gates of "
                      f"{type(model).__name__} are: {', '.join(gate_role)}.")
  on: dict[str, np.ndarray] = {}
  for g, role in gate_role.items():
    if g not in flat:  # a layer kept whole (no mask searched for it)
      on[g] = np.ones(widths[role], bool)
      continue
    if flat[g].shape != (widths[role],):
      raise ConfigError(f"mask {g!r} has shape {flat[g].shape}; gate {g!r} masks the "
                        f"{widths[role]} channels of role {role!r}, so pass shape "
                        f"({widths[role]},).")
    on[g] = flat[g] > 0
  keep = {}
  for role, r in spec.roles.items():
    count = np.sum([on[g] for g in r.gates], axis=0, dtype=np.int64)
    keep[role] = np.flatnonzero(count > (threshold if r.residual else 0))
  if spec.arrange is not None:
    arranged = spec.arrange(keep)
    for role, k in keep.items():
      a = np.asarray(arranged[role])
      if (a.ndim != 1 or len(np.unique(a)) != len(a) or not np.isin(k, a).all()
          or (len(a) and (a.min() < 0 or a.max() >= widths[role]))):
        raise ConfigError(f"{type(model).__name__}.prune_spec().arrange returned {a} for role "
                          f"{role!r}: it must list distinct channels in [0, {widths[role]}) "
                          f"including every channel the masks keep ({k}).")
      keep[role] = a.astype(np.int64)
  effective = {g: on[g] & np.isin(np.arange(widths[role]), keep[role])
               for g, role in gate_role.items()}
  return spec, widths, keep, effective


def effective_masks(model: nn.Module, masks: Mapping[str, Any], threshold: float = 0
                    ) -> dict[str, np.ndarray]:
  """The binary masks the materialized model is exactly equivalent to.

  1[m > 0] for every gate, except that a residual stream's channels dropped by the group rule
  are off in all of its gates (with `threshold` 0 nothing changes: then this is 1[m > 0]).

  Args:
    model: a model with `prune_spec()` (see `materialize`).
    masks: gate module path -> mask values (C,); gates left out keep every channel.
    threshold: DMAD's residual-group threshold (SJLeo/DMAD `--threshold`).

  Returns:
    Gate module path -> float32 0/1 vector, for every gate of the model's spec; put them into
    a `factory.ChannelGate`-gated copy of the model to get the reference output.
  """
  _, _, _, effective = _plan(model, masks, threshold)
  return {g: m.astype(np.float32) for g, m in effective.items()}


def _trace(model: nn.Module, example: Any) -> dict[str, nn.Module]:
  """Module path -> module for every module call of `model.init` (abstract: nothing runs)."""
  modules: dict[str, nn.Module] = {}

  def record(next_fun, args, kwargs, context):
    if context.method_name == "__call__" and context.module.scope is not None:
      modules.setdefault("/".join(context.module.scope.path), context.module)
    return next_fun(*args, **kwargs)

  def init(x):
    with nn.intercept_methods(record):
      return model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)
  jax.eval_shape(init, example)
  return modules


def _is_depthwise(module: nn.Module | None) -> bool:
  """Whether `module` is a grouped conv (flax's `feature_group_count` > 1)."""
  return getattr(module, "feature_group_count", 1) > 1


def _owner(path: str, declared: Mapping[str, Any]) -> str | None:
  """The longest declared module path that is `path` or one of its parents."""
  parts = path.split("/")
  for n in range(len(parts), 0, -1):
    if "/".join(parts[:n]) in declared:
      return "/".join(parts[:n])
  return None


def materialize(model: nn.Module, params: Any, masks: Mapping[str, Any], *,
                threshold: float = 0, example_input: Any = None) -> tuple[nn.Module, Any]:
  """A really smaller model and variables whose output equals the binary-masked model's.

  The model describes its channels through a protocol (`factory.PruneSpec`):
    * `layer_widths()`: every width role -> channels; the model accepts the same mapping as
      `widths` (width 0 for a removable role leaves that block out);
    * `prune_spec()`: for each pruned role the gates that mask it, each with the modules whose
      output channels it masks (conv, norm), and whether it is a residual stream (group rule)
      or removable; which roles, concatenated, form each module's input channels; the layer
      that reads the model input and an input size to trace with; an optional `arrange` hook
      for shortcuts that place one role's channels inside another's.
  From the masks, each role keeps channels {c : m_c > 0} (a residual stream: those kept by
  more than `threshold` of its gates). The new model is `model.clone(widths=..., layers=
  model.layers.replace(gate=None))`; every parameter and model-state leaf is sliced: the last
  axis of 1-D leaves (biases, norm scales and statistics) and of kernels (HWIO; the second to
  last for transposed-kernel layers) by the producing role's kept channels, the input axis by
  the kept channels of the roles feeding it. Kept channels whose own gate is off (a stream
  channel another gate keeps) get zero parameters in that gate's modules, so they add exactly
  0 (zero conv weights and bias under affine-free instance norm; zero scale and offset under
  batch norm). A role that keeps nothing and cannot be removed keeps one such zero channel.
  Depthwise convs (`feature_group_count` equal to the input channels, kernel (kh, kw, 1, C))
  have one output channel per input channel: under an `inputs` entry, their kernel's output
  axis and their bias are sliced by that entry's input channels and their input axis (1) is
  kept; so are the leaves of kernel-less modules (norms) under the same entry, which normalise
  the depthwise output. A separable conv (GAN Compression's `SeparableConv2d`: depthwise conv,
  norm, pointwise conv) is declared by its path in `inputs`, its pointwise conv as the gate's
  module. A dropped input channel is 0 in the masked model, so its depthwise output is a
  constant (the bias), which the norm must send to 0 for the masked model to equal the pruned
  one: true of affine-free instance norm (the mobile generator, SJLeo/DMAD) and of batch norm
  without offset in training mode, not of a norm with an offset or with running statistics
  (the pruned model would lose that constant's share of the pointwise output).
  Shapes are checked against `jax.eval_shape` of the new model's init.

  Args:
    model: the (gated or plain) model, with `layer_widths()` and `prune_spec()`.
    params: its variables ({"params": ..., "batch_stats": ...}) or just its params; gate
      parameters in them are dropped.
    masks: gate module path ("stem_gate", "block0/gate1", ...) -> mask values of shape (C,)
      (after DMAD's early stop they are +-1); `jaxcompress.prune.mask_params(params)` gives
      it. Gates left out keep all their channels.
    threshold: DMAD's residual-group threshold (SJLeo/DMAD `--threshold`, default 0).
    example_input: an input the model accepts (array or `jax.ShapeDtypeStruct`) to trace it
      with; None: the spec's input size with the input layer's channels.

  Returns:
    (new_model, new_variables), the variables in the form `params` was given in. The output
    equals that of the model gated by `effective_masks(model, masks, threshold)` (with
    threshold 0: by 1[m > 0]).

  Raises:
    ConfigError: for unknown gates, masks of the wrong length, a negative threshold, or a spec
      that does not match the model's modules or parameters.
  """
  spec, widths, keep, effective = _plan(model, masks, threshold)
  name = type(model).__name__
  for role, r in spec.roles.items():
    if not len(keep[role]) and not r.removable:
      keep[role] = np.zeros(1, np.int64)  # a zero channel (effective mask off: zeroed below)
  new_widths = dict(widths)
  new_widths.update({role: len(k) for role, k in keep.items()})
  new_model = model.clone(widths=new_widths, layers=model.layers.replace(gate=None))

  wrapped = hasattr(params, "items") and _PARAMS in params and hasattr(params[_PARAMS], "items")
  variables = params if wrapped else {_PARAMS: params}
  flat_old = traverse_util.flatten_dict(jax.tree.map(np.asarray, dict(variables)), sep="/")
  if example_input is None:
    kernel = flat_old.get(f"{_PARAMS}/{spec.input_layer}/kernel")
    if kernel is None:
      raise ConfigError(f"{name}.prune_spec(): input layer {spec.input_layer!r} has no kernel "
                        "in params; pass example_input.")
    example_input = jax.ShapeDtypeStruct((1, *spec.input_size, kernel.shape[-2]), kernel.dtype)

  modules = _trace(model.clone(layers=model.layers.replace(gate=factory.ChannelGate)),
                   example_input)
  producer: dict[str, tuple[str, str]] = {}
  for role, r in spec.roles.items():
    for g, mods in r.gates.items():
      producer.update({m: (role, g) for m in mods})
  declared = [*producer, *spec.inputs, *(g for r in spec.roles.values() for g in r.gates),
              spec.input_layer]
  missing = sorted({p for p in declared if p not in modules})
  if missing:
    raise ConfigError(f"{name}.prune_spec() names modules the model does not have: {missing}.")
  for path, roles in spec.inputs.items():
    unknown = [r for r in roles if r not in widths]
    if unknown:
      raise ConfigError(f"{name}.prune_spec().inputs[{path!r}] names unknown roles {unknown}.")

  def in_index(path: str) -> np.ndarray:
    parts, offset = [], 0
    for role in spec.inputs[path]:
      parts.append(keep.get(role, np.arange(widths[role])) + offset)
      offset += widths[role]
    return np.concatenate(parts)

  # Modules whose channels are their input's: depthwise convs and the kernel-less modules
  # (norms) of the same `inputs` entry; path -> that entry.
  with_kernel = {k.split("/", 1)[1].rsplit("/", 1)[0] for k in flat_old if k.endswith("/kernel")}
  follow: dict[str, str] = {}
  for path, module in modules.items():
    if not _is_depthwise(module) or _owner(path, spec.inputs) is None:
      continue
    if _owner(path, producer) is not None:
      raise ConfigError(f"{name}.prune_spec(): {path!r} is a depthwise conv, whose channels are "
                        "its input's; list the conv after it (the pointwise conv) as the gate's "
                        "module and the separable conv's path in inputs.")
    follow[path] = entry = _owner(path, spec.inputs)
    follow.update({p: entry for p in modules if _owner(p, {entry: ()}) == entry
                   and p not in with_kernel and _owner(p, producer) is None})

  target = jax.eval_shape(new_model.init, {"params": jax.random.key(0),
                                           "dropout": jax.random.key(1)}, example_input)
  out: dict[str, Any] = {}
  for key, want in traverse_util.flatten_dict(dict(target), sep="/").items():
    if key not in flat_old:
      raise ConfigError(f"{name}: the pruned model has {key!r} {want.shape}, which the given "
                        "variables lack; pass the model's full variables.")
    leaf = flat_old[key]
    collection, *module_path, _ = key.split("/")
    path = "/".join(module_path)
    module = modules.get(path)
    transposed = bool(getattr(module, "transpose_kernel", False))
    out_axis = in_axis = None
    if leaf.ndim >= 2:
      out_axis, in_axis = (-2, -1) if transposed else (-1, -2)
    elif leaf.ndim == 1:
      out_axis = -1
    if path in follow and out_axis is not None:  # one channel per kept input channel
      if _is_depthwise(module) and leaf.ndim >= 2 and (
          leaf.shape[in_axis] != 1 or leaf.shape[out_axis] != module.feature_group_count):
        raise ConfigError(f"{name}: {path!r} is a grouped conv with kernel {leaf.shape}; "
                          "materialize slices depthwise convs, kernel (kh, kw, 1, C) with "
                          "feature_group_count C.")
      leaf = np.take(leaf, in_index(follow[path]), axis=out_axis)
      in_axis = out_axis = None
    owner = _owner(path, producer)
    if owner is not None and out_axis is not None:
      role, g = producer[owner]
      leaf = np.take(leaf, keep[role], axis=out_axis)
      if collection == _PARAMS:  # kept channels this gate switches off contribute exactly 0
        off = ~effective[g][keep[role]]
        if off.any():
          leaf = leaf.copy()
          index = [slice(None)] * leaf.ndim
          index[out_axis] = off
          leaf[tuple(index)] = 0
    owner = _owner(path, spec.inputs)
    if owner is not None and in_axis is not None:
      leaf = np.take(leaf, in_index(owner), axis=in_axis)
    if leaf.shape != tuple(want.shape):
      raise ConfigError(f"{name}.prune_spec() does not match the model: {key!r} sliced to "
                        f"{leaf.shape}, the pruned model has {tuple(want.shape)}.")
    out[key] = jnp.asarray(leaf, want.dtype)
  new_variables = traverse_util.unflatten_dict(out, sep="/")
  return new_model, (new_variables if wrapped else new_variables[_PARAMS])


def pruned_widths(model: nn.Module, masks: Mapping[str, Any], threshold: float = 0
                  ) -> dict[str, int]:
  """The widths of the model `materialize` would return, without building it.

  DMAD's early stop counts the MACs of this narrowed model at each bound update (SJLeo/DMAD
  `models/MaskCycleGAN.py`, `get_cfg_residual_mask` and `early_stop_mask`, which keep m > -b:
  pass masks shifted by the bound).

  Args:
    model: a model with `prune_spec()` (see `materialize`).
    masks: gate module path -> mask values (C,); channels with m > 0 are kept.
    threshold: the residual-group threshold.

  Returns:
    Every width role of `model.layer_widths()` with its new width (0 for a removed block; one
    channel for a role that keeps nothing and cannot be removed, as `materialize`).
  """
  spec, widths, keep, _ = _plan(model, masks, threshold)
  out = dict(widths)
  for role, r in spec.roles.items():
    out[role] = max(len(keep[role]), 0 if r.removable else 1)
  return out
