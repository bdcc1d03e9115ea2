"""DMAD mask gate for the layer factory's gate slot, and helpers on its variables.

`MaskGate` is the official `Mask` layer (`SJLeo/DMAD`, `models/MaskLayer.py`; DMAD, arXiv
2011.08382): one real parameter per channel, `y = x * dmad_mask(m, bound)` over the last axis of
NHWC `x`, placed after every normalisation and before the activation. Use it as
`factory.Layers(gate=MaskGate)` (or `functools.partial(MaskGate, official_clamp=True)`); without
a gate the float model keeps exactly its parameters.

The bound is a variable of the non-parameter collection `BOUND_COLLECTION` ("mask_bound",
variable "bound", a scalar initialised to 1.0, the official `Mask.update(bound=1.0)`), so a
jitted step receives it as data: `set_bound(variables, b)` changes it every step without
recompiling, and gradients never reach it.

Example:
  >>> layers = factory.Layers(gate=MaskGate)
  >>> g = cyclegan.ResnetGenerator(ngf=8, layers=layers)
  >>> variables = g.init(key, x)                  # {"params": ..., "mask_bound": ...}
  >>> variables = set_bound(variables, dmad_bound(it, total))
  >>> y = g.apply(variables, x)
  >>> masks = mask_params(variables["params"])    # {"block0/gate1": m, ...}
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcompress.prune.masks import dmad_mask

Array = jax.Array

BOUND_COLLECTION = "mask_bound"
_BOUND = "bound"
_MASK = "mask"
_PARAMS = "params"


class MaskGate(nn.Module):
  """DMAD differentiable channel mask: `x * dmad_mask(m, bound)` over the last axis.

  Attributes:
    features: mask length (channels of the last axis).
    official_clamp: clamp the quadratics' scale to 0.005 as the official code (`dmad_mask`).
    init_std: standard deviation of the N(0, init_std^2) init of `mask` (official 0.2).
    param_dtype: dtype of `mask` and of the bound; the mask values are computed in it.
  """
  features: int
  official_clamp: bool = False
  init_std: float = 0.2
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.shape[-1] != self.features:
      raise ValueError(f"MaskGate {self.name!r} has {self.features} channels, input has "
                       f"{x.shape[-1]}.")
    m = self.param(_MASK, nn.initializers.normal(self.init_std), (self.features,),
                   self.param_dtype)
    if not self.is_initializing() and not self.has_variable(BOUND_COLLECTION, _BOUND):
      raise ValueError(f"MaskGate {self.name!r}: no {BOUND_COLLECTION!r} collection in the "
                       "variables. Apply the model with every collection `init` returned "
                       "(e.g. `set_bound(variables, b)`), not with the params alone.")
    bound = self.variable(BOUND_COLLECTION, _BOUND, lambda: jnp.ones((), self.param_dtype))
    return x * dmad_mask(m, bound.value, self.official_clamp).astype(x.dtype)


def _key(entry: Any) -> Any:
  return getattr(entry, "key", getattr(entry, "name", entry))


def _has(tree: Any, key: str) -> bool:
  return isinstance(tree, Mapping) and key in tree


def set_bound(variables_or_collection: Any, bound: ArrayLike) -> Any:
  """Returns the tree with every mask bound replaced by `bound` (traced values work).

  Args:
    variables_or_collection: a model's variables (with a `BOUND_COLLECTION` entry; other
      collections are returned unchanged) or the bound collection itself.
    bound: the new bound, a Python number or a (traced) 0-d array; cast to each leaf's dtype.

  Returns:
    A tree of the same structure (and container types); unchanged when it holds no bound.
  """
  only_collection = _has(variables_or_collection, BOUND_COLLECTION)

  def replace(path: tuple[Any, ...], leaf: Any) -> Any:
    keys = [_key(p) for p in path]
    if not keys or keys[-1] != _BOUND or (only_collection and keys[0] != BOUND_COLLECTION):
      return leaf
    leaf = jnp.asarray(leaf)
    return jnp.broadcast_to(jnp.asarray(bound).astype(leaf.dtype), leaf.shape)

  return jax.tree_util.tree_map_with_path(replace, variables_or_collection)


def _params(params: Any) -> Any:
  return params[_PARAMS] if _has(params, _PARAMS) else params


def mask_params(params: Any) -> dict[str, Array]:
  """The mask parameters of every gate, by module path.

  Args:
    params: the "params" collection, or the model's variables holding it.

  Returns:
    {"block0/gate1": m, "stem_gate": m, ...}: each gate's module path (joined with "/") to its
    mask vector, in the tree's flattening order.
  """
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(_params(params))[0]:
    keys = [str(_key(p)) for p in path]
    if keys and keys[-1] == _MASK:
      out["/".join(keys[:-1])] = leaf
  return out


def binarize_masks(params: Any, bound: ArrayLike) -> Any:
  """The official early stop (`MaskCycleGANModel.binary`): m > -bound -> +1, else -1.

  Once a generator meets its MACs target the official method binarises its masks this way and
  pins its bound to 0, so the mask becomes the hard step 1[m > 0] with a zero gradient.

  Args:
    params: the "params" collection, or the model's variables (other collections unchanged).
    bound: the bound in force, Python number or traced 0-d array.

  Returns:
    A tree of the same structure with every gate's `mask` replaced (same dtype).
  """
  only_params = _has(params, _PARAMS)

  def binarize(path: tuple[Any, ...], leaf: Any) -> Any:
    keys = [_key(p) for p in path]
    if not keys or keys[-1] != _MASK or (only_params and keys[0] != _PARAMS):
      return leaf
    leaf = jnp.asarray(leaf)
    threshold = -jnp.asarray(bound).astype(leaf.dtype)
    return jnp.where(leaf > threshold, 1, -1).astype(leaf.dtype)

  return jax.tree_util.tree_map_with_path(binarize, params)
