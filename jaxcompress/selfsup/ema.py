"""Exponential moving average of parameters (MoCo key encoder, mean teachers).

MoCo (He et al., arXiv 1911.05722, Eq. 2) updates the key encoder as
`theta_k <- m * theta_k + (1 - m) * theta_q`; DSM (Wang et al., arXiv 2009.05757) uses m = 0.999
after every step, MEB-Net (Zhai et al., arXiv 2007.01546, Eq. 7) the same rule for its mean
teachers with `reid.mean_teacher_decay`.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def ema_update(ema_params: Any, params: Any, momentum: float | jax.Array) -> Any:
  """Moves every leaf of `ema_params` towards `params`: `momentum * e + (1 - momentum) * p`.

  Args:
    ema_params: pytree of the averaged parameters (the key encoder / teacher).
    params: pytree of the same structure (the query encoder / student); held constant.
    momentum: Python number or 0-d array (traced without recompiling).

  Returns:
    The updated pytree, each leaf in the dtype of its `ema_params` leaf.
  """
  params = jax.lax.stop_gradient(params)

  def one(e, p):
    m = jnp.asarray(momentum, e.dtype)
    return (m * e + (1 - m) * p).astype(e.dtype)

  return jax.tree.map(one, ema_params, params)
