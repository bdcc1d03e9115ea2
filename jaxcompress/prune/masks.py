"""DMAD differentiable channel masks: the annealed step, its bound schedule and sparsity penalties.

DMAD (Li et al., "Learning Efficient GANs for Image Translation via Differentiable Masks and
co-Attention Distillation", arXiv 2011.08382: differentiable mask, group sparsity; official code
`SJLeo/DMAD`, `models/MaskLayer.py` and `models/MaskCycleGAN.py`) gives every output channel c of
a generator layer one real parameter m_c, placed after the normalisation and before the
activation: `y = x * dmad_mask(m, bound)` broadcast over the last axis of NHWC `x`
(`gate.MaskGate`). The mask is a piecewise-quadratic step whose band [-b, b] shrinks with the
bound b (`dmad_bound`, 1 -> 0 at 75% of training); sparsity penalties push in-band masks towards
-b, with a cross-block group coefficient for the masks that gate one residual stream.

All functions are pure and jit-able, compute in the dtype of `m` (float64 under x64), and take
the bound (and other schedule values) as Python numbers or traced 0-d arrays without recompiling.

Example:
  >>> m = jax.random.normal(key, (16,)) * 0.2
  >>> b = dmad_bound(step, total_steps)          # traced
  >>> y = x * dmad_mask(m, b)                     # x: (N, H, W, 16)
  >>> loss = task_loss + 1e-3 * dmad_penalty(m, b)
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

Array = jax.Array

# Official `Mask.update`: the quadratics use max(b, 0.005) for 0 < b < 0.005.
OFFICIAL_MIN_BOUND = 0.005
_RULES = {"cube": 1.0 / 3.0, "double": 1.0 / 2.0}
_PENALTIES = ("relu", "uprelu", "bound")


def _as_float(m: ArrayLike) -> Array:
  m = jnp.asarray(m)
  return m if jnp.issubdtype(m.dtype, jnp.floating) else m.astype(jnp.result_type(float))


def _quadratic_scale(b: Array, official_clamp: bool) -> Array:
  """q of the quadratics: b (paper) or max(b, 0.005) (official); 1 where b <= 0 (unused there)."""
  q = jnp.maximum(b, OFFICIAL_MIN_BOUND) if official_clamp else b
  return jnp.where(b > 0, q, jnp.ones_like(q))


def _mask_forward(m: Array, b: Array, official_clamp: bool) -> Array:
  q = _quadratic_scale(b, official_clamp)
  left = 0.5 * jnp.square(1 + m / q)
  right = 1 - 0.5 * jnp.square(1 - m / q)
  # Region tests use the raw b even when q is clamped (official `Step_function.forward`).
  soft = jnp.where(m < -b, 0, jnp.where(m <= 0, left, jnp.where(m <= b, right, 1)))
  hard = (m > 0).astype(m.dtype)
  return jnp.where(b > 0, soft, hard).astype(m.dtype)


def _mask_slope(m: Array, b: Array, official_clamp: bool) -> Array:
  q = _quadratic_scale(b, official_clamp)
  slope = jnp.where(m <= 0, (1 + m / q) / q, (1 - m / q) / q)
  in_band = (m >= -b) & (m <= b) & (b > 0)
  return jnp.where(in_band, slope, 0).astype(m.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _mask(m: Array, b: Array, official_clamp: bool) -> Array:
  return _mask_forward(m, b, official_clamp)


def _mask_fwd(m: Array, b: Array, official_clamp: bool) -> tuple[Array, tuple[Array, Array]]:
  return _mask_forward(m, b, official_clamp), (m, b)


def _mask_bwd(official_clamp: bool, res: tuple[Array, Array], g: Array) -> tuple[Array, Array]:
  m, b = res
  # The bound is a schedule value: zero cotangent (official backward returns None for it).
  return g * _mask_slope(m, b, official_clamp), jnp.zeros_like(b)


_mask.defvjp(_mask_fwd, _mask_bwd)


def dmad_mask(m: ArrayLike, bound: ArrayLike, official_clamp: bool = False) -> Array:
  """DMAD mask values M_b(m) (arXiv 2011.08382, differentiable mask; official
  `models/MaskLayer.py`).

  For b > 0, with q = b (paper) or q = max(b, 0.005) (`official_clamp`):
  M = 0 for m < -b; `0.5 (1 + m/q)^2` for -b <= m <= 0; `1 - 0.5 (1 - m/q)^2` for 0 < m <= b;
  1 for m > b. For b = 0 (and below): M = 1[m > 0], a hard step.

  Backward (`jax.custom_vjp`, the official `Step_function`): dM/dm = `(1 + m/q)/q` on [-b, 0],
  `(1 - m/q)/q` on (0, b], 0 elsewhere and 0 everywhere when b = 0 (the mask is frozen); the
  bound gets a zero cotangent. Through `y = x * M`, dL/dm_c sums g * x * M'(m_c) over N, H, W.

  Official differences: the official `Mask.update` fits the quadratics with b clamped to 0.005
  while its region tests use the raw b, so for 0 < b < 0.005 M jumps at +-b (b = 0.002:
  0 -> 0.18 at -b, 0.82 -> 1 at +b); `official_clamp=True` reproduces that, the default is the
  paper's continuous curve (both agree for b >= 0.005). The official layer computes M in float32
  whatever its inputs; here M has the dtype of `m`.

  Args:
    m: mask parameters, shape (C,) (any shape works elementwise).
    bound: b >= 0, a Python number or a (traced) 0-d array.
    official_clamp: static Python bool; clamp q to 0.005 as the official code.

  Returns:
    M with the shape and dtype of `m`.
  """
  m = _as_float(m)
  b = jnp.asarray(bound).astype(m.dtype)
  return _mask(m, b, bool(official_clamp))


def dmad_bound(iteration: ArrayLike, total: ArrayLike, rule: str = "cube") -> Array:
  """DMAD bound schedule (official `MaskCycleGANModel.update_masklayer`).

  With t = 0.75 total and r = iteration / t: b = 0 when iteration > t, else `1 - r**(1/3)`
  ("cube", the default) or `1 - r**(1/2)` ("double"), floored at 0, so b reaches 0 at 75% of
  training. `iteration` and `total` share a unit: the official loop counts samples (total =
  dataset size * batch size * (n_epochs + n_epochs_decay)) and updates the bound every
  `dmad_update_interval(total, batch_size)` iterations, about 150 times.

  Official differences: its "linear" rule crashes (a tuple is assigned to the bound) and any
  other rule leaves the bound undefined; both raise ValueError here. Negative iterations give
  b = 1 (the official `math.pow` raises on them).

  Args:
    iteration: samples (or steps) so far; Python number or traced array.
    total: the whole run in the same unit (> 0).
    rule: "cube" or "double".

  Returns:
    b as a 0-d array in the floating dtype of the inputs (the default float for integers).

  Raises:
    ValueError: for an unknown rule or a non-positive concrete `total`.
  """
  if rule not in _RULES:
    raise ValueError(f"dmad_bound: unknown rule {rule!r}; use one of {sorted(_RULES)} (the "
                     "official 'linear' branch crashes and is not offered).")
  if isinstance(total, (int, float)) and total <= 0:
    raise ValueError(f"dmad_bound: total must be positive, got {total}.")
  dtype = jnp.result_type(iteration, total, 1.0)
  it = jnp.asarray(iteration, dtype)
  t = 0.75 * jnp.asarray(total, dtype)
  r = jnp.maximum(it / t, 0)
  b = jnp.maximum(1 - r ** jnp.asarray(_RULES[rule], dtype), 0)
  return jnp.where(it > t, jnp.zeros_like(b), b)


def dmad_update_interval(total: int, batch_size: int, updates: int = 150) -> int:
  """Iterations between bound updates (official `train.py`: `total * 0.75 // 150 // batch`).

  The official loop updates the bound when `(iteration // batch) % interval == 0`, with
  `iteration` counted in samples. At least 1 (the official value can be 0 for tiny runs, which
  would divide by zero).

  Args:
    total: the run's length in samples (`dmad_bound`'s `total`).
    batch_size: samples per step.
    updates: bound updates over the first 75% of training (150 officially).

  Returns:
    The update period in steps, a Python int >= 1.

  Raises:
    ValueError: when an argument is not positive.
  """
  if total <= 0 or batch_size < 1 or updates < 1:
    raise ValueError(f"dmad_update_interval: total ({total}), batch_size ({batch_size}) and "
                     f"updates ({updates}) must be positive.")
  return max(1, int(total * 0.75 // updates // batch_size))


def _in_band(m: Array, b: Array) -> Array:
  """B = {c : -b < m_c < b} (strict), held constant in the gradients."""
  return jax.lax.stop_gradient((m > -b) & (m < b))


def dmad_penalty(m: ArrayLike, bound: ArrayLike, kind: str = "relu") -> Array:
  """Sparsity penalty of one mask vector (arXiv 2011.08382, mask sparsity; official
  `Mask.get_weight_decay_loss`).

  On the in-band set B = {c : -b < m_c < b} (strict): "relu" = `sum_B (m_c + b)` (a constant
  push of in-band masks toward -b); "uprelu" = `sum_B (b - m_c)`; "bound" = the L2 norm, not
  squared, `sqrt(sum_B (b - |m_c|)^2)` (used with coefficient 100 for the up/down-sampling
  masks). All are 0 when b = 0 (B is empty). Gradients are plain autodiff with B held constant;
  "bound" has a zero gradient when B is empty or every term is 0, and d|m|/dm = 0 at m = 0 (as
  torch).

  Args:
    m: mask parameters (C,).
    bound: b, Python number or traced 0-d array.
    kind: "relu", "uprelu" or "bound".

  Returns:
    A scalar in the dtype of `m`.

  Raises:
    ValueError: for another kind (the official code returns 0 for it without a warning).
  """
  if kind not in _PENALTIES:
    raise ValueError(f"dmad_penalty: unknown kind {kind!r}; use one of {list(_PENALTIES)}.")
  m = _as_float(m)
  b = jnp.asarray(bound).astype(m.dtype)
  band = _in_band(m, b)
  if kind == "relu":
    return jnp.sum(jnp.where(band, m + b, 0))
  if kind == "uprelu":
    return jnp.sum(jnp.where(band, b - m, 0))
  # |m| as m * sign(m): slope sign(m), 0 at m = 0 like torch (jnp.abs has slope 1 there).
  sq = jnp.sum(jnp.where(band, jnp.square(b - m * jnp.sign(m)), 0))
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1)), 0).astype(m.dtype)


def dmad_block_penalty(m: ArrayLike, bound: ArrayLike, coeff: ArrayLike) -> Array:
  """Group-weighted penalty of one residual-stream mask (arXiv 2011.08382, adaptive cross-block
  group sparsity; official
  `Mask.get_block_decay_loss`): `sum_{c in B} (m_c + b) * coeff_c`, coeff constant.

  Official difference: `get_block_decay_loss` returns 0 when b == 0.5 exactly (a typo for
  b == 0, where B is empty anyway); not reproduced.

  Args:
    m: mask parameters (C,).
    bound: b, Python number or traced 0-d array.
    coeff: per-channel coefficients (C,) from `dmad_group_coefficients`.

  Returns:
    A scalar in the dtype of `m`.

  Raises:
    ValueError: when `coeff` and `m` differ in shape.
  """
  m = _as_float(m)
  coeff = jnp.asarray(coeff)
  if coeff.shape != m.shape:
    raise ValueError(f"dmad_block_penalty: coeff has shape {coeff.shape}, the mask {m.shape}; "
                     "pass the group coefficients of the residual stream this mask gates.")
  b = jnp.asarray(bound).astype(m.dtype)
  c = jax.lax.stop_gradient(coeff.astype(m.dtype))
  return jnp.sum(jnp.where(_in_band(m, b), (m + b) * c, 0))


def dmad_group_coefficients(group_masks: ArrayLike | Sequence[ArrayLike], bound: ArrayLike,
                            lambda_update: ArrayLike = 1.0) -> Array:
  """Adaptive cross-block group coefficients (arXiv 2011.08382, adaptive cross-block group
  sparsity; official `models/MaskCycleGAN.py` `MaskResnetGenerator.update_sparsity_factor`).

  Per channel i of the G masks gating one residual stream: lt = #{g : m_gi < -b},
  gt = #{g : m_gi > b}, n_in = G - lt - gt (m = +-b counts as in band here);
  coeff_i = 0 if gt > 0 (some block keeps the channel) or lt == G (all have left), else
  `G / n_in * lambda_update`. The result is constant (stop_gradient).

  The official method starts from coeff = 1 everywhere and recomputes the coefficients at each
  bound update from the masks and the bound in force before that update.

  Args:
    group_masks: (G, C) array or a sequence of G mask vectors (C,).
    bound: b, Python number or traced 0-d array.
    lambda_update: the official `lambda_update_coeff` (1).

  Returns:
    coeff of shape (C,) in the dtype of the masks.

  Raises:
    ValueError: when the masks do not form a (G, C) matrix.
  """
  if isinstance(group_masks, (list, tuple)):
    group_masks = jnp.stack([jnp.asarray(g) for g in group_masks])
  masks = jax.lax.stop_gradient(_as_float(group_masks))
  if masks.ndim != 2 or masks.shape[0] < 1:
    raise ValueError(f"dmad_group_coefficients: expected (G, C) masks, got shape {masks.shape}.")
  b = jnp.asarray(bound).astype(masks.dtype)
  groups = masks.shape[0]
  lt = jnp.sum(masks < -b, axis=0)
  gt = jnp.sum(masks > b, axis=0)
  n_in = groups - lt - gt
  zero = (gt > 0) | (lt == groups)
  lam = jnp.asarray(lambda_update).astype(masks.dtype)
  coeff = groups / jnp.where(zero, 1, n_in).astype(masks.dtype) * lam
  return jax.lax.stop_gradient(jnp.where(zero, 0, coeff).astype(masks.dtype))


def dmad_mask_loss(ordinary: Sequence[ArrayLike], sampling: Sequence[ArrayLike],
                   group: Sequence[ArrayLike], bound: ArrayLike, group_coeff: ArrayLike,
                   kind: str = "relu", sampling_kind: str = "bound",
                   sampling_coeff: ArrayLike = 100.0) -> Array:
  """The generator's whole mask loss (official `MaskCycleGANModel.get_mask_weight_loss`).

  `sum_{m in ordinary} dmad_penalty(m, b, kind)
   + sampling_coeff * sum_{m in sampling} dmad_penalty(m, b, sampling_kind)
   + sum_{m in group} dmad_block_penalty(m, b, group_coeff)`; the caller multiplies it by
  lambda_mask (1e-3 CycleGAN, 1e-2 Pix2Pix).

  CycleGAN ResNet generator roles (official options upconv_bound on, upconv_coeff 100,
  lambda_update_coeff 1): sampling = the masks after the 7x7 stem conv, after the first
  stride-2 conv and after both transposed convs; group = the 10 masks gating the 4 ngf residual
  stream (after the second stride-2 conv and the second mask of every residual block);
  ordinary = the first mask of every residual block. With lambda_update_coeff = 0 the official
  code treats the group masks as ordinary: pass them in `ordinary` then.

  Args:
    ordinary: mask vectors penalised with `kind`.
    sampling: up/down-sampling mask vectors penalised with `sampling_kind` * `sampling_coeff`.
    group: residual-stream mask vectors, each of the shape of `group_coeff`.
    bound: the common bound b.
    group_coeff: `dmad_group_coefficients` of the group masks (C,).
    kind: penalty of the ordinary masks.
    sampling_kind: penalty of the sampling masks.
    sampling_coeff: weight of the sampling penalties (Python number or traced).

  Returns:
    A scalar (0 when every sequence is empty).
  """
  terms = [dmad_penalty(m, bound, kind) for m in ordinary]
  sampled = [dmad_penalty(m, bound, sampling_kind) for m in sampling]
  if sampled:
    terms.append(jnp.asarray(sampling_coeff).astype(sampled[0].dtype) * sum(sampled))
  terms += [dmad_block_penalty(m, bound, group_coeff) for m in group]
  if not terms:
    return jnp.zeros((), jnp.result_type(bound, 1.0))
  return sum(terms[1:], terms[0])
