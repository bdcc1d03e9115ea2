"""Fréchet distance between Gaussians fitted to features (FID, Heusel et al. 2017).

`frechet_distance` follows Eq. 6 of arXiv:1706.08500,
  d^2 = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr(sqrtm(S1 S2)),
and the reference implementation pytorch-fid (https://github.com/mseitzer/pytorch-fid,
`fid_score.calculate_frechet_distance`): scipy's `linalg.sqrtm` of the product, eps * I added to
both covariances when the product is singular (sqrtm not finite), and a numerically tiny
imaginary part dropped. `feature_statistics` matches its `calculate_activation_statistics`
(mean and `np.cov(rowvar=False)`, the unbiased covariance).

Plain NumPy / SciPy in float64: the inputs are (N, 2048) Inception pool features on host.
`save_statistics` / `load_statistics` keep (mu, sigma) in the `.npz` layout of pytorch-fid's
`--save-stats` (keys "mu" and "sigma"), the precomputed real statistics FIDs are reported
against.

Example:
  >>> mu1, s1 = feature_statistics(real_feats)
  >>> mu2, s2 = feature_statistics(fake_feats)
  >>> fid = frechet_distance(mu1, s1, mu2, s2)
"""
from __future__ import annotations

import os
import warnings

import numpy as np
from scipy import linalg

# pytorch-fid's bound on the imaginary part of diag(sqrtm(S1 S2)) attributed to rounding.
_IMAG_ATOL = 1e-3


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and unbiased covariance of a set of feature vectors.

  Args:
    features: (N, D) array, one feature vector per row, N >= 2.

  Returns:
    (mu, sigma): float64 arrays of shapes (D,) and (D, D); sigma = np.cov(features,
    rowvar=False) (normalised by N - 1).
  """
  features = np.asarray(features, np.float64)
  if features.ndim != 2:
    raise ValueError(
        f"feature_statistics expects (num_samples, dim) features, got shape {features.shape}; "
        "flatten the features to one row per sample.")
  if features.shape[0] < 2:
    raise ValueError(
        f"feature_statistics needs at least 2 samples for a covariance, got {features.shape[0]}.")
  mu = features.mean(axis=0)
  sigma = np.atleast_2d(np.cov(features, rowvar=False))
  return mu, sigma


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
  """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

  `||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 sigma2))` (arXiv:1706.08500,
  Eq. 6), computed as pytorch-fid's `calculate_frechet_distance`.

  Args:
    mu1: (D,) mean of the first set.
    sigma1: (D, D) covariance of the first set.
    mu2: (D,) mean of the second set.
    sigma2: (D, D) covariance of the second set.
    eps: added to the diagonal of both covariances when sqrtm of their product is not finite.

  Returns:
    The distance as a Python float (FID when the statistics are of Inception pool features).

  Raises:
    ValueError: the shapes disagree, or sqrtm has an imaginary part too large to be rounding.
  """
  mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
  mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.ndim != 1 or mu1.shape != mu2.shape:
    raise ValueError(
        f"frechet_distance: the means must be vectors of the same length, got shapes "
        f"{mu1.shape} and {mu2.shape}; compute both statistics on the same feature layer.")
  d = mu1.shape[0]
  if sigma1.shape != (d, d) or sigma2.shape != (d, d):
    raise ValueError(
        f"frechet_distance: the covariances must be ({d}, {d}) to match the means, got "
        f"{sigma1.shape} and {sigma2.shape}.")

  diff = mu1 - mu2
  # sqrtm of a (near-)singular product can come back with inf/nan; pytorch-fid then retries with
  # eps * I on both covariances. SciPy's warnings about the singular case are expected there.
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", linalg.LinAlgWarning)
    warnings.simplefilter("ignore", RuntimeWarning)
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    singular = not np.isfinite(covmean).all()
    if singular:
      offset = np.eye(d) * eps
      covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if singular:
    warnings.warn(f"frechet_distance: the covariance product is singular; added {eps} to the "
                  "diagonal of both covariances (as pytorch-fid does).", RuntimeWarning,
                  stacklevel=2)
  if not np.isfinite(covmean).all():
    raise ValueError(
        "frechet_distance: sqrtm(sigma1 @ sigma2) is not finite even with eps added to the "
        "covariances; check the statistics for NaN/inf or raise eps.")
  # The product of two PSD matrices has real non-negative eigenvalues; an imaginary part can only
  # come from rounding, and a large one means the inputs are not covariances.
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=_IMAG_ATOL):
      raise ValueError(
          f"frechet_distance: sqrtm(sigma1 @ sigma2) has an imaginary part of "
          f"{np.max(np.abs(covmean.imag)):.3g}; the covariances are not positive semi-definite.")
    covmean = covmean.real
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def save_statistics(path: str | os.PathLike[str], mu: np.ndarray, sigma: np.ndarray) -> None:
  """Writes (mu, sigma) to a compressed `.npz` with keys "mu" and "sigma" (pytorch-fid's layout).

  Args:
    path: the file; NumPy appends ".npz" when the name does not end with it.
    mu: (D,) mean.
    sigma: (D, D) covariance.

  Raises:
    ValueError: the shapes are not a (D,) mean and a (D, D) covariance.
  """
  mu = np.asarray(mu, np.float64)
  sigma = np.asarray(sigma, np.float64)
  if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
    raise ValueError(f"save_statistics expects a (D,) mean and a (D, D) covariance, got shapes "
                     f"{mu.shape} and {sigma.shape}; pass feature_statistics(features).")
  directory = os.path.dirname(os.fspath(path))
  if directory:
    os.makedirs(directory, exist_ok=True)
  np.savez_compressed(path, mu=mu, sigma=sigma)


def load_statistics(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
  """Reads (mu, sigma) from an `.npz` with keys "mu" and "sigma" (pytorch-fid's `--save-stats`,
  GAN-Compression's real statistics, or `save_statistics`).

  Returns:
    float64 arrays (D,) and (D, D).

  Raises:
    ValueError: the file is missing, lacks a key, or the shapes do not fit (the message says
      which).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ValueError(f"FID statistics file {path!r} does not exist; write it with "
                     "jaxcompress.metrics.fid.save_statistics or pytorch-fid --save-stats.")
  with np.load(path) as f:
    missing = [k for k in ("mu", "sigma") if k not in f.files]
    if missing:
      raise ValueError(f"FID statistics file {path!r} lacks {missing} (it has {f.files}); "
                       "it must hold the mean as 'mu' and the covariance as 'sigma'.")
    mu = np.asarray(f["mu"], np.float64)
    sigma = np.atleast_2d(np.asarray(f["sigma"], np.float64))
  if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
    raise ValueError(f"FID statistics file {path!r} holds mu of shape {mu.shape} and sigma of "
                     f"shape {sigma.shape}; expected (D,) and (D, D).")
  return mu, sigma
