"""FFCSC filter learning with the CoGD correction hook, as released with CoGD.

Zhuo et al., "Cogradient Descent for Bilinear Optimization", CVPR 2020, arXiv 2006.09142; official
code github.com/bczhangbczhang/CoGD (`CoGD-master.zip`, `CSC/admm_learn_conv2D_weighted.m` for
reconstruction, `CSC/admm_learn_conv2D_weighted_sparse.m` for inpainting). One outer iteration t:

1. `num_iters_d` ADMM iterations on the filters d (data prox, projection onto the unit ball on
   the support, Fourier-domain solve with `rho = gamma_D[1] / gamma_D[0]`), duals kept across
   outer iterations;
2. the correction hook (`optim.cogd.csc_correction`) on the filters;
3. `num_iters_z` ADMM iterations on the codes z (data prox, soft threshold, solve);
4. roll-back: if neither the objective after step 1 nor the one after step 3 is below the
   smaller of the previous iteration's two, the filters and codes of the start of the iteration
   are restored (duals are not).

`gamma = 60 lambda / max(b)`, `gamma_D = (gamma / 5000, gamma)`, `gamma_Z = (gamma / 500, gamma)`.
The released routine overrides its `max_it` argument with 20 outer iterations. Everything runs
inside one jit (`lax.fori_loop`) and in the dtype of b (float64 under `jax.enable_x64`).
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxcompress.optim import cogd
from jaxcompress.sparse_coding import admm, metrics

ROLLBACKS = ("released", "monotone", "off")


class CscHistory(NamedTuple):
  """Per outer iteration (arrays of length T)."""
  objective: jax.Array          # after roll-back
  objective_filters: jax.Array  # after the filter ADMM, before the correction
  objective_codes: jax.Array    # after the code ADMM
  rolled_back: jax.Array
  filter_change: jax.Array      # ||d_t - d_{t-1}|| / ||d_t||
  code_change: jax.Array        # ||z_t - z_{t-1}|| / ||z_t||
  psnr: jax.Array               # mean psnr_bt of the reconstruction against `clean`


class CscResult(NamedTuple):
  filters: jax.Array         # (K, s, s) filters on their support
  filters_grid: jax.Array    # (K, H, W) filters on the padded grid
  codes: jax.Array           # (N, K, H, W)
  reconstruction: jax.Array  # (N, H, W) sum_k d_k * z_k on the padded grid
  history: CscHistory


class _State(NamedTuple):
  d: jax.Array
  z: jax.Array
  z_old: jax.Array
  dual_d: tuple
  dual_z: tuple
  obj: jax.Array
  obj_filters: jax.Array
  obj_codes: jax.Array


def penalties(b: jax.Array, lambda_prior):
  """`gamma_heuristic = 60 lambda / max(b)` -> (gamma_D, gamma_Z)."""
  g = 60 * lambda_prior / jnp.max(b)
  return (g / 5000, g), (g / 500, g)


def _check(b, mask, clean, num_filters, filter_size):
  if b.ndim != 3:
    raise ValueError(f"learn_filters expects images (N, h, w), got shape {b.shape}; stack "
                     "grayscale images along the first axis.")
  for name, v in (("mask", mask), ("clean", clean)):
    if v is not None and v.shape != b.shape:
      raise ValueError(f"{name} has shape {v.shape} but the images {b.shape}; pass one "
                       f"{name} value per pixel.")
  if filter_size % 2 != 1 or filter_size < 1 or num_filters < 1:
    raise ValueError(f"filter_size must be odd and positive and num_filters positive, got "
                     f"{filter_size} and {num_filters}; the released setting is 11 and 100.")
  if not jnp.issubdtype(b.dtype, jnp.floating):
    raise ValueError(f"images must be floating point, got {b.dtype}; prepare them with "
                     "sparse_coding.data.")


def learn_filters(b: jax.Array, key: jax.Array, *, mask: Optional[jax.Array] = None,
                  clean: Optional[jax.Array] = None, num_filters: int = 100,
                  filter_size: int = 11, lambda_residual: float = 1.0,
                  lambda_prior: float = 1.0, num_iters: int = 20, num_iters_d: int = 10,
                  num_iters_z: int = 10, correction: str | Callable = "none",
                  saturate: bool = True, released_decoding: bool = True,
                  rollback: str = "released", init=None) -> CscResult:
  """Learns convolutional filters and codes for images b (reconstruction or inpainting).

  Args:
    b: (N, h, w) prepared images (`data.prepare_images`); for inpainting, zero where unobserved.
    key: PRNG key of the Gaussian initial filters and codes.
    mask: (N, h, w) 1 where observed (inpainting, `..._sparse.m`), None for reconstruction.
    clean: (N, h, w) reference of the per-iteration PSNR history (default b).
    num_filters, filter_size: K and s (100, 11 as released); the grid is (h + s - 1) squared.
    lambda_residual, lambda_prior: objective weights (1, 1 as released).
    num_iters, num_iters_d, num_iters_z: outer and inner iterations (20, 10, 10 as released).
    correction: CoGD variant name ("none", "matlab_heuristic"; "paper" raises) or a callable
      `fn(d, d_old, z, z_old, residual, t, num_iters) -> d` (see `optim.cogd`).
    saturate, released_decoding: sub-flags of "matlab_heuristic".
    rollback: "released" (the rule above), "monotone" (restore whenever the objective after the
      code ADMM exceeds the one at the start of the iteration; not in the released code) or
      "off".
    init: optional (filters (K, H, W) on the grid, codes (N, K, H, W)) replacing the Gaussian
      initialisation (the released routine's `init.d`, `init.z`).

  Returns:
    CscResult.
  """
  b = jnp.asarray(b)
  _check(b, mask, clean, num_filters, filter_size)
  if rollback not in ROLLBACKS:
    raise ValueError(f"unknown rollback {rollback!r}; use one of {ROLLBACKS}.")
  if isinstance(correction, str):
    correction = cogd.csc_correction(
        correction, "reconstruction" if mask is None else "inpainting", saturate=saturate,
        released_decoding=released_decoding)
  mask = None if mask is None else jnp.asarray(mask, b.dtype)
  clean = b if clean is None else jnp.asarray(clean, b.dtype)
  if init is not None:
    d0, z0 = (jnp.asarray(v, b.dtype) for v in init)
    grid = tuple(v + filter_size - 1 for v in b.shape[1:])
    if d0.shape != (num_filters,) + grid or z0.shape != (b.shape[0], num_filters) + grid:
      raise ValueError(f"init shapes {d0.shape}, {z0.shape} do not match filters "
                       f"{(num_filters,) + grid} and codes {(b.shape[0], num_filters) + grid}; "
                       "give them on the padded grid.")
    init = (d0, z0)
  return _learn(b, mask, clean, key, init, num_filters=num_filters, filter_size=filter_size,
                lambdas=(float(lambda_residual), float(lambda_prior)), num_iters=num_iters,
                inner=(num_iters_d, num_iters_z), correction=correction, rollback=rollback)


@functools.partial(jax.jit, static_argnames=("num_filters", "filter_size", "lambdas",
                                             "num_iters", "inner", "correction", "rollback"))
def _learn(b, mask, clean, key, init, *, num_filters, filter_size, lambdas, num_iters, inner,
           correction, rollback):
  b = jax.lax.stop_gradient(b)
  r = filter_size // 2
  n, h, w = b.shape
  shape = (h + 2 * r, w + 2 * r)
  pad = lambda x: jnp.pad(x, ((0, 0), (r, r), (r, r)))  # noqa: E731
  m = pad(jnp.ones_like(b) if mask is None else mask)
  mtb = pad(b) * m
  if init is None:
    kd, kz = jax.random.split(key)
    d0 = admm.init_filters(kd, num_filters, filter_size, shape, b.dtype)
    z0 = jax.random.normal(kz, (n, num_filters) + shape, b.dtype)
  else:
    d0, z0 = init
  consts = dict(b=b, mask=mask, m=m, mtb=mtb, radius=r, shape=shape, lambdas=lambdas,
                gammas=penalties(b, lambdas[1]), inner=inner, correction=correction,
                rollback=rollback, num_iters=num_iters)
  obj0 = admm.objective(admm.rfft2(d0), admm.rfft2(z0), z0, b, mask, *lambdas, r)
  zeros = lambda x: jnp.zeros_like(x)  # noqa: E731
  state = _State(d0, z0, z0, (zeros(m), zeros(d0)), (zeros(m), zeros(z0)), obj0, obj0, obj0)
  hist = CscHistory(*(jnp.zeros((num_iters,), b.dtype) for _ in CscHistory._fields))

  def body(i, carry):
    state, hist = carry
    state, rec, rb = outer_iteration(state, i + 1, **consts)
    d_old_norm = jnp.linalg.norm(state.d)
    vals = (state.obj, state.obj_filters, state.obj_codes, rb.astype(b.dtype),
            jnp.linalg.norm(state.d - carry[0].d) / d_old_norm,
            jnp.linalg.norm(state.z - carry[0].z) / jnp.linalg.norm(state.z),
            jnp.mean(metrics.psnr_bt(clean, rec)))
    return state, CscHistory(*(a.at[i].set(v) for a, v in zip(hist, vals)))

  state, hist = jax.lax.fori_loop(0, num_iters, body, (state, hist))
  rec = admm.irfft2(admm.reconstruct_hat(admm.rfft2(state.d), admm.rfft2(state.z)), shape)
  s = filter_size
  support = jnp.roll(state.d, (r, r), axis=(1, 2))[:, :s, :s]
  return CscResult(support, state.d, state.z, rec, hist)


def outer_iteration(state: _State, t, *, b, mask, m, mtb, radius, shape, lambdas, gammas, inner,
                    correction, rollback, num_iters):
  """One outer iteration of the released loop (filters, correction, codes, roll-back).

  Returns:
    (new state, spectrum-domain reconstruction of the new state on the grid, rolled-back flag).
  """
  lam_res, lam = lambdas
  (gd0, gd1), (gz0, gz1) = gammas
  rho_d, rho_z = gd1 / gd0, gz1 / gz0
  z_hat = admm.rfft2(state.z)
  zf = admm.by_frequency(z_hat)
  factor = admm.filter_solve_factor(zf, rho_d)
  obj_min = jnp.minimum(state.obj_filters, state.obj_codes)
  d_old, d_hat_old = state.d, admm.rfft2(state.d)

  def d_body(_, c):
    d, d_hat, (y1, y2) = c
    v1 = admm.irfft2(admm.reconstruct_hat_by_frequency(d_hat, zf), shape)
    u1 = admm.data_prox(v1 - y1, m, mtb, lam_res / gd0)
    u2 = admm.kernel_constraint_proj(d - y2, radius)
    y1, y2 = y1 - (v1 - u1), y2 - (d - u2)
    d_hat = admm.filter_solve(zf, factor, admm.rfft2(u1 + y1), admm.rfft2(u2 + y2), rho_d)
    return admm.irfft2(d_hat, shape), d_hat, (y1, y2)

  d, d_hat, dual_d = jax.lax.fori_loop(0, inner[0], d_body, (d_old, d_hat_old, state.dual_d))
  obj_filters = admm.objective(d_hat, z_hat, state.z, b, mask, lam_res, lam, radius)
  res = admm.residual(d_hat, z_hat, b, mask, radius, shape)
  d = correction(d, d_old, state.z, state.z_old, res, t, num_iters)
  d_hat = admm.rfft2(d)

  def z_body(_, c):
    z, zh, (y1, y2) = c
    v1 = admm.irfft2(admm.reconstruct_hat(d_hat, zh), shape)
    u1 = admm.data_prox(v1 - y1, m, mtb, lam_res / gz0)
    u2 = admm.sparse_prox(z - y2, lam / gz1)
    y1, y2 = y1 - (v1 - u1), y2 - (z - u2)
    zh = admm.code_solve(d_hat, admm.rfft2(u1 + y1), admm.rfft2(u2 + y2), rho_z)
    return admm.irfft2(zh, shape), zh, (y1, y2)

  z, z_hat_new, dual_z = jax.lax.fori_loop(0, inner[1], z_body,
                                           (state.z, z_hat, state.dual_z))
  obj_codes = admm.objective(d_hat, z_hat_new, z, b, mask, lam_res, lam, radius)
  if rollback == "released":
    rb = (obj_min <= obj_filters) & (obj_min <= obj_codes)
  elif rollback == "monotone":
    rb = obj_codes > state.obj
  else:
    rb = jnp.zeros((), bool)
  rec_hat = jnp.where(rb, admm.reconstruct_hat(d_hat_old, z_hat),
                      admm.reconstruct_hat(d_hat, z_hat_new))
  new = _State(d=jnp.where(rb, d_old, d), z=jnp.where(rb, state.z, z), z_old=state.z,
               dual_d=dual_d, dual_z=dual_z, obj=jnp.where(rb, state.obj, obj_codes),
               obj_filters=obj_filters, obj_codes=obj_codes)
  return new, admm.irfft2(rec_hat, shape), rb
