"""NumPy references for the sparse-coding tests, shared by the test files of this folder.

Spatial-domain references with explicit loops (circular convolution, dense normal equations) and
a transcription of the released FFCSC loop (`CSC/admm_learn_conv2D_weighted*.m` of
github.com/bczhangbczhang/CoGD) with full `fft2` spectra and one matrix solve per frequency
(`pinv` as released), independent of the package's rfft / Woodbury / Sherman-Morrison code.
"""
from __future__ import annotations

import numpy as np


def circ_conv(d, z):
  """(H, W) circular convolution `sum_{a,b} d[a, b] z[i - a, j - b]` by explicit loops."""
  h, w = d.shape
  out = np.zeros((h, w))
  for a in range(h):
    for b in range(w):
      if d[a, b] != 0:
        out += d[a, b] * np.roll(z, (a, b), axis=(0, 1))
  return out


def conv_matrix(z):
  """Matrix of `d -> circ_conv(d, z)` on (H, W) images, (HW, HW), column per delta."""
  h, w = z.shape
  cols = []
  for a in range(h):
    for b in range(w):
      e = np.zeros((h, w))
      e[a, b] = 1
      cols.append(circ_conv(e, z).ravel())
  return np.stack(cols, 1)


def dense_filter_solve(z, xi1, xi2, rho):
  """argmin_d 1/2 sum_n ||sum_k z_nk * d_k - xi1_n||^2 + rho/2 ||d - xi2||^2 (normal eqs)."""
  n, k, h, w = z.shape
  big = np.block([[conv_matrix(z[i, j]) for j in range(k)] for i in range(n)])
  lhs = big.T @ big + rho * np.eye(k * h * w)
  rhs = big.T @ xi1.ravel() + rho * xi2.ravel()
  return np.linalg.solve(lhs, rhs).reshape(k, h, w)


def dense_code_solve(d, xi1, xi2, rho):
  """argmin_z 1/2 ||sum_k d_k * z_nk - xi1_n||^2 + rho/2 ||z - xi2||^2 per image n."""
  k, h, w = d.shape
  row = np.concatenate([conv_matrix(d[j]) for j in range(k)], 1)  # z_k * d_k == d_k * z_k
  lhs = row.T @ row + rho * np.eye(k * h * w)
  return np.stack([np.linalg.solve(lhs, row.T @ xi1[i].ravel() + rho * xi2[i].ravel())
                   .reshape(k, h, w) for i in range(xi1.shape[0])])


def kernel_proj(u, radius):
  """KernelConstraintProj by explicit support indices."""
  kk, h, w = u.shape
  out = np.zeros_like(u)
  idx = [(a % h, b % w) for a in range(-radius, radius + 1) for b in range(-radius, radius + 1)]
  for k in range(kk):
    vals = np.array([u[k, a, b] for a, b in idx])
    nrm2 = np.sum(vals ** 2)
    if nrm2 >= 1:
      vals = vals / np.sqrt(nrm2)
    for (a, b), v in zip(idx, vals):
      out[k, a, b] = v
  return out


def objective(d, z, b, mask, lam_res, lam):
  """lam_res/2 ||mask (crop(sum_k d_k * z_k) - b)||^2 + lam ||z||_1, spatial loops."""
  n, k, hh, ww = z.shape
  r = (hh - b.shape[1]) // 2
  total = 0.0
  for i in range(n):
    dz = sum(circ_conv(d[j], z[i, j]) for j in range(k))[r:hh - r, r:ww - r]
    m = 1.0 if mask is None else mask[i]
    total += np.sum((m * dz - m * b[i]) ** 2)
  return lam_res / 2 * total + lam * np.abs(z).sum()


def ffcsc(b, mask, d0, z0, num_iters, it_d, it_z, hook, lam_res=1.0, lam=1.0):
  """Transcription of the released outer loop; hook(d, d_old, z, z_old, res, t, T) -> d.

  Returns:
    (d, z, objective after each outer iteration, roll-back flags).
  """
  n, h, w = b.shape
  kk, hh, ww = d0.shape
  r = (hh - h) // 2
  pad = lambda x: np.pad(x, ((0, 0), (r, r), (r, r)))  # noqa: E731
  m = pad(np.ones_like(b) if mask is None else mask)
  mtb = pad(b) * m
  g = 60 * lam / b.max()
  gd, gz = (g / 5000, g), (g / 500, g)
  fft2 = lambda x: np.fft.fft2(x)  # noqa: E731
  ifft2 = lambda x: np.real(np.fft.ifft2(x))  # noqa: E731
  prox_data = lambda u, th: (mtb + 1 / th * u) / (m + 1 / th)  # noqa: E731
  recon = lambda dh, zh: ifft2(np.sum(dh[None] * zh, 1))  # noqa: E731

  def obj_fn(z, d_hat):
    dz = recon(d_hat, fft2(z))[:, r:hh - r, r:ww - r]
    mm = 1.0 if mask is None else mask
    return lam_res / 2 * np.sum((mm * dz - mm * b) ** 2) + lam * np.abs(z).sum()

  def res_fn(z, d_hat):
    dz = recon(d_hat, fft2(z))[:, r:hh - r, r:ww - r]
    return dz - b if mask is None else mask * dz - mask * b

  d, z = d0.copy(), z0.copy()
  d_hat, z_hat = fft2(d), fft2(z)
  dual_d = [np.zeros((n, hh, ww)), np.zeros((kk, hh, ww))]
  dual_z = [np.zeros((n, hh, ww)), np.zeros((n, kk, hh, ww))]
  obj = obj_fn(z, d_hat)
  obj_f = obj_z = obj
  z_old = z.copy()
  hist, rbs = [], []
  for i in range(1, num_iters + 1):
    rho = gd[1] / gd[0]
    sinv = np.empty((hh, ww, kk, kk), complex)
    for p in range(hh):
      for q in range(ww):
        a = z_hat[:, :, p, q]  # n x k
        ah = a.conj().T
        sinv[p, q] = np.eye(kk) / rho - ah @ np.linalg.pinv(rho * np.eye(n) + a @ ah) @ a / rho
    obj_min = min(obj_f, obj_z)
    d_old, d_hat_old = d.copy(), d_hat.copy()
    for _ in range(it_d):
      v = [recon(d_hat, z_hat), d]
      u = [prox_data(v[0] - dual_d[0], lam_res / gd[0]), kernel_proj(v[1] - dual_d[1], r)]
      xi_hat = []
      for c in range(2):
        dual_d[c] = dual_d[c] - (v[c] - u[c])
        xi_hat.append(fft2(u[c] + dual_d[c]))
      for p in range(hh):
        for q in range(ww):
          a = z_hat[:, :, p, q]
          d_hat[:, p, q] = sinv[p, q] @ (a.conj().T @ xi_hat[0][:, p, q] + rho * xi_hat[1][:, p, q])
      d = ifft2(d_hat)
      obj = obj_fn(z, d_hat)
    obj_f = obj
    d = hook(d, d_old, z, z_old, res_fn(z, d_hat), i, num_iters)
    d_hat = fft2(d)
    z_old, z_hat_old = z.copy(), z_hat.copy()
    rho = gz[1] / gz[0]
    for _ in range(it_z):
      v = [recon(d_hat, z_hat), z]
      th = lam / gz[1]
      uz = v[1] - dual_z[1]
      with np.errstate(divide="ignore", invalid="ignore"):
        sparse = np.nan_to_num(np.maximum(0, 1 - th / np.abs(uz)) * uz)
      u = [prox_data(v[0] - dual_z[0], lam_res / gz[0]), sparse]
      xi_hat = []
      for c in range(2):
        dual_z[c] = dual_z[c] - (v[c] - u[c])
        xi_hat.append(fft2(u[c] + dual_z[c]))
      for p in range(hh):
        for q in range(ww):
          dv = d_hat[:, p, q]
          lhs = np.outer(dv.conj(), dv) + rho * np.eye(kk)
          for j in range(n):
            z_hat[j, :, p, q] = np.linalg.solve(
                lhs, dv.conj() * xi_hat[0][j, p, q] + rho * xi_hat[1][j, :, p, q])
      z = ifft2(z_hat)
      obj = obj_fn(z, d_hat)
    obj_z = obj
    rb = obj_min <= obj_f and obj_min <= obj_z
    if rb:
      z_hat = z_hat_old
      z = ifft2(z_hat)
      d_hat = d_hat_old
      d = ifft2(d_hat)
      obj = obj_fn(z, d_hat)
    hist.append(obj)
    rbs.append(rb)
  return d, z, np.array(hist), np.array(rbs)
