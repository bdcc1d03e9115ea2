"""The official GAN weight initialisation, applied to a flax parameter tree.

`init_weights(net, 'normal', 0.02)` of junyanz/pytorch-CycleGAN-and-pix2pix (`models/
networks.py`; SJLeo/DMAD `utils/util.py`), which every CycleGAN / Pix2Pix network gets: the weight
of every Conv / ConvTranspose / Linear ~ N(0, gain^2) and its bias 0; a BatchNorm scale ~
N(1, gain^2) and its bias 0. In flax those are the leaves named "kernel", "bias" and "scale";
other parameters (e.g. DMAD's channel masks) keep their own initialisers.

DMAD's copy draws the BatchNorm bias from N(0, 1) (`init.normal_(m.bias.data, 0.0)`); the
CycleGAN/pix2pix code sets it to 0, which is what this module does.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util


def init_weights(params: Any, rng: jax.Array, gain: float = 0.02) -> Any:
  """`params` re-initialised as the official `init_weights(net, 'normal', gain)`.

  Args:
    params: a flax parameter tree.
    rng: a PRNG key.
    gain: the standard deviation (official `--init_gain`, 0.02).

  Returns:
    A tree of the same structure: "kernel" ~ N(0, gain^2), "scale" ~ N(1, gain^2), "bias" = 0,
    every other leaf unchanged.
  """
  flat = traverse_util.flatten_dict(params)
  out = {}
  for i, (path, value) in enumerate(sorted(flat.items())):
    key = jax.random.fold_in(rng, i)
    leaf = path[-1]
    if leaf == "kernel":
      value = gain * jax.random.normal(key, value.shape, jnp.float32).astype(value.dtype)
    elif leaf == "scale":
      value = (1.0 + gain * jax.random.normal(key, value.shape, jnp.float32)).astype(value.dtype)
    elif leaf == "bias":
      value = jnp.zeros_like(value)
    out[path] = value
  return traverse_util.unflatten_dict(out)
