"""Helpers shared by the `prune.materialize` tests: gated reference models, masks, variables.

The reference of every materialize test is the unpruned model gated by `factory.ChannelGate`
with masks 1[m > 0]; variables are drawn in NumPy (no compiled initializers).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxcompress import prune
from jaxcompress.models import factory


def gated(model: nn.Module) -> nn.Module:
  return model.clone(layers=model.layers.replace(gate=factory.ChannelGate))


def with_masks(variables, masks):
  """`variables` of the gated model with each gate's mask set to `masks[gate]`."""
  flat = traverse_util.flatten_dict(variables, sep="/")
  for g, m in masks.items():
    key = f"params/{g}/mask"
    assert key in flat, key
    flat[key] = jnp.asarray(m, jnp.float32)
  return traverse_util.unflatten_dict(flat, sep="/")


def binary(masks):
  return {g: (np.asarray(m) > 0).astype(np.float32) for g, m in masks.items()}


def random_masks(rng, variables, p_on=0.6):
  """+-1 masks (DMAD's binarised masks after early stop) for every gate of `variables`."""
  return {g: np.where(rng.random(m.shape) < p_on, 1.0, -1.0).astype(np.float32)
          for g, m in prune.mask_params(variables).items()}


def random_variables(model: nn.Module, x: jax.Array, seed: int):
  """Variables of `model` with random values, drawn in NumPy (`model.init` compiles every
  initializer, which costs more than the whole test on a small CPU)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  rng = np.random.default_rng(seed)
  flat = traverse_util.flatten_dict(shapes, sep="/")
  for key, leaf in flat.items():
    n = leaf.shape
    if key.endswith("/kernel"):
      value = rng.normal(0.0, 1.0 / np.sqrt(np.prod(n[:-1])), n)
    elif key.endswith("/mean") or key.endswith("/bias"):
      value = rng.normal(0.0, 0.2, n)
    elif key.endswith("/var") or key.endswith("/scale"):  # non-trivial batch-norm statistics
      value = rng.uniform(0.5, 2.0, n)
    else:
      value = np.ones(n)
    flat[key] = jnp.asarray(value, leaf.dtype)
  return traverse_util.unflatten_dict(flat, sep="/")


_JITTED: dict[str, object] = {}


def run(model: nn.Module, variables, x: jax.Array) -> jax.Array:
  """`model.apply(variables, x)`, jitted once per model (faster than eager ops here)."""
  key = repr(model)
  if key not in _JITTED:
    _JITTED[key] = jax.jit(model.apply)
  return _JITTED[key](variables, x)


def n_leaves(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))
