"""Sub-steps of FFCSC, the Fourier-domain ADMM for convolutional sparse coding.

Heide, Heidrich, Wetzstein, "Fast and Flexible Convolutional Sparse Coding", CVPR 2015, as
released with CoGD (Zhuo et al., CVPR 2020, arXiv 2006.09142; github.com/bczhangbczhang/CoGD,
`CoGD-master.zip`, `CSC/admm_learn_conv2D_weighted.m` and `..._sparse.m`). The model is
`min_{d, z} lambda_residual / 2 ||M (crop(sum_k d_k * z_k) - b)||^2 + lambda ||z||_1` with
circular convolution `*` on the padded grid (image size + 2 r, r = filter_size // 2), filters
centred on the origin of that grid and constrained to norm <= 1 on their
(2 r + 1) x (2 r + 1) support.

Layouts: filters (K, H, W), codes (N, K, H, W), images on the grid (N, H, W). Spectra are
`rfft2` over the last two axes: the ADMM variables are real, so the half spectrum carries the
same per-frequency solves as the full `fft2` of the released code.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcompress.optim import cogd


def rfft2(x: jax.Array) -> jax.Array:
  return jnp.fft.rfft2(x)


def irfft2(x_hat: jax.Array, shape: tuple[int, int]) -> jax.Array:
  return jnp.fft.irfft2(x_hat, s=shape)


def reconstruct_hat(d_hat: jax.Array, z_hat: jax.Array) -> jax.Array:
  """Spectrum of `sum_k d_k * z_k` per image: (K, H, Wr), (N, K, H, Wr) -> (N, H, Wr)."""
  return jnp.sum(d_hat[None] * z_hat, axis=1)


def by_frequency(z_hat: jax.Array) -> jax.Array:
  """(N, K, H, Wr) code spectra -> (H, Wr, N, K): one N x K matrix Z per frequency."""
  return jnp.transpose(z_hat, (2, 3, 0, 1))


def reconstruct_hat_by_frequency(d_hat: jax.Array, zf: jax.Array) -> jax.Array:
  """`reconstruct_hat` with the codes as `by_frequency(z_hat)` (batched Z d products)."""
  return jnp.transpose((zf @ jnp.transpose(d_hat, (1, 2, 0))[..., None])[..., 0], (2, 0, 1))


def kernel_constraint_proj(u: jax.Array, radius: int) -> jax.Array:
  """`KernelConstraintProj`: zero outside the support, project onto the unit ball on it.

  Filters whose support has squared norm >= 1 are divided by the norm; smaller ones are kept.

  Args:
    u: (K, H, W) filters on the grid, centred on the origin.
    radius: r, the support is (2 r + 1) x (2 r + 1) around the origin.

  Returns:
    (K, H, W) projected filters.
  """
  s = 2 * radius + 1
  sup = jnp.roll(u, (radius, radius), axis=(1, 2))[:, :s, :s]
  norm2 = jnp.sum(sup * sup, axis=(1, 2), keepdims=True)
  sup = jnp.where(norm2 >= 1, sup / jnp.sqrt(jnp.where(norm2 >= 1, norm2, 1)), sup)
  out = jnp.zeros_like(u).at[:, :s, :s].set(sup)
  return jnp.roll(out, (-radius, -radius), axis=(1, 2))


def data_prox(u: jax.Array, m: jax.Array, mtb: jax.Array, theta) -> jax.Array:
  """`ProxDataMasked`: `argmin_v 1/2 ||M v - M b||^2 + 1/(2 theta) ||v - u||^2`.

  Args:
    u: (N, H, W) point; m: (N, H, W) padded mask (0 on the padding); mtb: padded `M b`.
    theta: step (`lambda_residual / gamma`).

  Returns:
    `(M b + u / theta) / (M + 1 / theta)`.
  """
  return (mtb + u / theta) / (m + 1 / theta)


def sparse_prox(u: jax.Array, theta) -> jax.Array:
  """`ProxSparse`: `max(0, 1 - theta / |u|) u`, the soft threshold."""
  return cogd.soft_threshold(u, theta)


def filter_solve_factor(zf: jax.Array, rho) -> jax.Array:
  """`precompute_H_hat_D`: per frequency `(rho I_N + Z Z^H)^-1`, Z the (N, K) code spectrum.

  Args:
    zf: (H, Wr, N, K) code spectra `by_frequency(z_hat)`; rho: `gamma_D[1] / gamma_D[0]`.

  Returns:
    (H, Wr, N, N) inverses used by `filter_solve` (Woodbury: N x N instead of K x K).
  """
  n = zf.shape[-2]
  zzh = zf @ jnp.conj(jnp.swapaxes(zf, -1, -2))
  return jnp.linalg.inv(rho * jnp.eye(n, dtype=zf.dtype) + zzh)


def filter_solve(zf: jax.Array, factor: jax.Array, xi1_hat: jax.Array, xi2_hat: jax.Array,
                 rho) -> jax.Array:
  """`solve_conv_term_D`: `argmin_d 1/2 ||Z d - xi1||^2 + rho/2 ||d - xi2||^2` per frequency.

  `d = (Z^H Z + rho I)^-1 (Z^H xi1 + rho xi2)` through
  `(Z^H Z + rho I)^-1 = (I - Z^H (rho I + Z Z^H)^-1 Z) / rho`.

  Args:
    zf: (H, Wr, N, K) code spectra `by_frequency(z_hat)`; factor: `filter_solve_factor`.
    xi1_hat: (N, H, Wr); xi2_hat: (K, H, Wr); rho: `gamma_D[1] / gamma_D[0]`.

  Returns:
    (K, H, Wr) filter spectra.
  """
  zh = jnp.conj(jnp.swapaxes(zf, -1, -2))
  x1 = jnp.transpose(xi1_hat, (1, 2, 0))[..., None]
  w = zh @ x1 + rho * jnp.transpose(xi2_hat, (1, 2, 0))[..., None]
  out = (w - zh @ (factor @ (zf @ w))) / rho
  return jnp.transpose(out[..., 0], (2, 0, 1))


def code_solve(d_hat: jax.Array, xi1_hat: jax.Array, xi2_hat: jax.Array, rho) -> jax.Array:
  """`solve_conv_term_Z`: `argmin_z 1/2 ||D z - xi1||^2 + rho/2 ||z - xi2||^2` per frequency.

  D is the rank-one (1, K) row of filter spectra, so Sherman-Morrison gives
  `z = (c - conj(d) (d^T c) / (rho + ||d||^2)) / rho` with `c = conj(d) xi1 + rho xi2`.

  Args:
    d_hat: (K, H, Wr); xi1_hat: (N, H, Wr); xi2_hat: (N, K, H, Wr);
    rho: `gamma_Z[1] / gamma_Z[0]`.

  Returns:
    (N, K, H, Wr) code spectra.
  """
  dc = jnp.conj(d_hat)
  c = dc[None] * xi1_hat[:, None] + rho * xi2_hat
  dtd = jnp.sum(jnp.real(dc * d_hat), 0)
  s = jnp.sum(d_hat[None] * c, axis=1) / (rho + dtd)
  return (c - dc[None] * s[:, None]) / rho


def crop(x: jax.Array, radius: int) -> jax.Array:
  """Removes the `radius` padding of the last two axes."""
  return x[..., radius:x.shape[-2] - radius, radius:x.shape[-1] - radius]


def residual(d_hat: jax.Array, z_hat: jax.Array, b: jax.Array, mask, radius: int,
             shape: tuple[int, int]) -> jax.Array:
  """`objectiveFunction_bt`: `mask * crop(D z) - mask * b` (no mask: `crop(D z) - b`)."""
  dz = crop(irfft2(reconstruct_hat(d_hat, z_hat), shape), radius)
  if mask is None:
    return dz - b
  return mask * dz - mask * b


def objective(d_hat: jax.Array, z_hat: jax.Array, z: jax.Array, b: jax.Array, mask,
              lambda_residual, lambda_prior, radius: int) -> jax.Array:
  """`objectiveFunction`: `lambda_residual/2 ||mask (crop(D z) - b)||^2 + lambda ||z||_1`.

  Args:
    d_hat: (K, H, Wr) filter spectra; z_hat: (N, K, H, Wr) code spectra; z: the codes.
    b: (N, h, w) observed images (zero where unobserved); mask: (N, h, w) or None.
    lambda_residual, lambda_prior: weights; radius: grid padding r.

  Returns:
    Scalar objective.
  """
  res = residual(d_hat, z_hat, b, mask, radius, z.shape[-2:])
  return lambda_residual / 2 * jnp.sum(res * res) + lambda_prior * jnp.sum(jnp.abs(z))


def init_filters(key: jax.Array, num_filters: int, filter_size: int,
                 shape: tuple[int, int], dtype) -> jax.Array:
  """Gaussian filters on the support, padded and shifted so that they centre on the origin."""
  r = filter_size // 2
  k = jax.random.normal(key, (num_filters, filter_size, filter_size), dtype)
  d = jnp.zeros((num_filters,) + tuple(shape), dtype).at[:, :filter_size, :filter_size].set(k)
  return jnp.roll(d, (-r, -r), axis=(1, 2))
