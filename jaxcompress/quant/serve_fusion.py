"""Folds the elementwise tail of each native binary convolution into the kernel's epilogue.

A binary residual network serves every conv through `ops.binary_conv.xnor_conv`, but the model's
own code then adds the shortcut and applies the activation (`act(bn(conv(x)) + shortcut)`, the
BatchNorm folded into the conv): separate XLA loops that each read and write a whole activation
map, as much memory traffic as the popcount convolution itself. `fuse_epilogues` rewrites the
traced serve function so that the kernel does them while it stores its output:

    y = xnor_conv(...);  z = y + r;  out = hard_tanh(z)   ->   out = xnor_conv(..., residual=r,
                                                                            activation="hard_tanh")

(also `y + r` alone and `hard_tanh(y)` alone), wherever the intermediate values have no other
use. Then a conv whose only reader is another binary conv hands it packed sign bits instead of
floats (`_chain_bits`). The kernel applies the same float operations in the same order (scale, shift, add, then
`jax.nn.hard_tanh`'s comparisons), so the outputs are unchanged. Anything else in the program
is left as it is; a program without native binary convs is returned unchanged.
"""
from __future__ import annotations

import collections
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jex_core

from jaxcompress.ops import binary_conv


def _is_hard_tanh(eqn: Any) -> bool:
  return (eqn.primitive.name in ("jit", "pjit") and eqn.params.get("name") == "hard_tanh"
          and len(eqn.invars) == 1 and len(eqn.outvars) == 1)


def _sole_readers(eqns: list[Any], outvars: list[Any]) -> Callable[[Any], int | None]:
  """var -> index of the one equation that reads it, or None (read twice, or an output)."""
  uses: collections.Counter = collections.Counter(
      v for eqn in eqns for v in eqn.invars if isinstance(v, jex_core.Var))
  uses.update(v for v in outvars if isinstance(v, jex_core.Var))
  reader = {v: i for i, eqn in enumerate(eqns) for v in eqn.invars
            if isinstance(v, jex_core.Var)}
  return lambda var: reader[var] if uses[var] == 1 and var in reader else None


def fuse_epilogues(closed: jex_core.ClosedJaxpr) -> jex_core.ClosedJaxpr:
  """`closed` with residual adds and hard_tanh activations folded into binary conv epilogues.

  Args:
    closed: a traced program (e.g. `jax.make_jaxpr` of `quant.serve_apply`).

  Returns:
    The rewritten program: same inputs, outputs and values (module docstring).
  """
  jaxpr = closed.jaxpr
  eqns = list(jaxpr.eqns)
  sole_consumer = _sole_readers(eqns, jaxpr.outvars)

  placed: dict[int, Any] = {}
  dropped: set[int] = set()
  for i, eqn in enumerate(eqns):
    if (eqn.primitive is not binary_conv.binary_conv_p or eqn.params["activation"] is not None
        or eqn.invars[5].aval.shape == eqn.outvars[0].aval.shape):
      continue
    y = eqn.outvars[0]
    residual, activation, chain = eqn.invars[5], None, [i]
    j = sole_consumer(y)
    if j is not None and eqns[j].primitive is lax.add_p:
      other = [v for v in eqns[j].invars if v is not y]
      if (len(other) == 1 and isinstance(other[0], jex_core.Var)
          and other[0].aval.shape == y.aval.shape and other[0].aval.dtype == y.aval.dtype):
        residual = other[0]
        chain.append(j)
        j = sole_consumer(eqns[j].outvars[0])
    if j is not None and _is_hard_tanh(eqns[j]):
      activation = "hard_tanh"
      chain.append(j)
    if len(chain) == 1:
      continue
    last = chain[-1]  # every input of the chain is defined before it
    placed[last] = eqn.replace(invars=[*eqn.invars[:5], residual],
                               outvars=list(eqns[last].outvars),
                               params={**eqn.params, "activation": activation})
    dropped.update(chain)
  new_eqns = [placed.get(k, e) for k, e in enumerate(eqns) if k in placed or k not in dropped]
  new_eqns = _chain_bits(new_eqns, jaxpr, dict(zip(jaxpr.constvars, closed.consts)))
  if new_eqns == eqns:
    return closed
  return jex_core.ClosedJaxpr(jaxpr.replace(eqns=new_eqns), closed.consts)


def _is_zero(var: Any, consts: dict[Any, Any]) -> bool:
  if isinstance(var, jex_core.Literal):
    value = var.val
  elif var in consts:
    value = consts[var]
  else:
    return False
  return bool(np.all(np.asarray(value) == 0))


def _chain_bits(eqns: list[Any], jaxpr: Any, consts: dict[Any, Any]) -> list[Any]:
  """Binary convs whose only reader is another binary conv's larq sign pass it packed bits.

  The reader binarises its input as `x >= 0` (rule "ge", threshold 0, no exact zeros); the writer
  computes exactly those bits from its output and stores them packed, 32 channels per word,
  instead of the floats (32x less memory traffic, and no packing pass in the reader).
  """
  eqns = list(eqns)
  sole_consumer = _sole_readers(eqns, jaxpr.outvars)
  new_var = jex_core.gensym()
  conv = binary_conv.binary_conv_p
  for i in range(len(eqns)):
    eqn = eqns[i]
    if eqn.primitive is not conv or eqn.params["packed_output"]:
      continue
    y = eqn.outvars[0]
    o = eqn.invars[3].aval.shape[0]
    j = sole_consumer(y)
    if o % 16 or j is None:
      continue
    reader = eqns[j]
    if (reader.primitive is not conv or reader.invars[0] is not y or reader.params["rule"] != "ge"
        or reader.params["exact_zeros"] or not _is_zero(reader.invars[1], consts)):
      continue
    n, ho, wo, _ = y.aval.shape
    bits = new_var(jax.core.ShapedArray((n, ho, wo, -(-o // 32)), jnp.uint32))
    eqns[i] = eqn.replace(outvars=[bits], params={**eqn.params, "packed_output": True})
    eqns[j] = reader.replace(invars=[bits, *reader.invars[1:]])
  return eqns


def fused(fn: Callable[..., Any]) -> Callable[..., Any]:
  """`fn` traced, passed through `fuse_epilogues` and evaluated (to be wrapped in `jax.jit`)."""
  def run(*args):
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    closed = fuse_epilogues(closed)
    flat = jex_core.jaxpr_as_fun(closed)(*jax.tree_util.tree_leaves(args))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), flat)
  return run
