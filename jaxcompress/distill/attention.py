"""Spatial attention maps and the PAMS structured knowledge transfer (SKT) loss.

PAMS (ECCV 2020, arXiv 2011.04212), SKT loss: the quantized student matches the spatial
attention map of its full-precision teacher on the body feature (after the global skip, before the
upsampler). The map is the attention-transfer map of Zagoruyko & Komodakis (2017) with p = 2.

Example:
  >>> f = jnp.ones((2, 4, 4, 8))
  >>> skt_loss(f, f)   # 0.0
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

_EPS = 1e-12  # F.normalize's default epsilon


def attention_map(f: jax.typing.ArrayLike) -> Array:
  """Spatial attention map of an NHWC feature (PAMS SKT; official `utils/common.py` `at`).

  `a = mean_c f**2`, flattened per sample row-major over (H, W), divided by
  `max(||a||_2, 1e-12)` (as `torch.nn.functional.normalize`).

  Args:
    f: features of shape (N, H, W, C).

  Returns:
    Maps of shape (N, H*W) with unit L2 norm per sample (zero rows stay zero), dtype of `f`.
  """
  f = jnp.asarray(f)
  return normalize_rows(jnp.mean(jnp.square(f), axis=-1))


def normalize_rows(a: jax.typing.ArrayLike) -> Array:
  """Flattens each sample of `a` (row-major) and divides it by `max(||row||_2, 1e-12)`.

  The normalisation of `attention_map`, for maps computed elsewhere (DMAD's co-attention target
  mixes two maps before normalising). `torch.nn.functional.normalize(a.view(N, -1))`.

  Args:
    a: maps of shape (N, ...).

  Returns:
    Rows of shape (N, prod(...)), dtype of `a`; an all-zero row stays zero with a zero gradient.
  """
  a = jnp.asarray(a)
  a = a.reshape(a.shape[0], -1)
  sq = jnp.sum(jnp.square(a), axis=-1, keepdims=True)
  # sqrt has an infinite slope at 0: an all-zero sample would give 0 * inf = NaN gradients.
  # torch's norm backward gives 0 there; the double where does the same (values unchanged).
  positive = sq > 0
  norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1)), 0)
  return a / jnp.maximum(norm, jnp.asarray(_EPS, a.dtype))


def skt_loss(student_f: jax.typing.ArrayLike, teacher_f: jax.typing.ArrayLike) -> Array:
  """Structured knowledge transfer loss (PAMS SKT): mean over N and positions of the squared
  difference of the two attention maps (the official `(at(x) - at(y)).pow(2).mean()`).

  The PAMS trainer weights it by beta = 1e3 and gives the teacher no gradient; callers pass
  `jax.lax.stop_gradient(teacher_f)` when the teacher's params are being differentiated.

  Args:
    student_f: student body features (N, H, W, C).
    teacher_f: teacher body features (N, H, W, C'); channel counts may differ.

  Returns:
    A scalar in the features' dtype.
  """
  return jnp.mean(jnp.square(attention_map(student_f) - attention_map(teacher_f)))
