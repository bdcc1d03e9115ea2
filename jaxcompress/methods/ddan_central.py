"""DDAN's central domain: the source closest to all others in (entropic) Wasserstein distance.

"Dual Distribution Alignment Network for Generalizable Person Re-Identification" (Chen et al.,
AAAI 2021, arXiv 2007.13249): peripheral source domains are aligned toward a central domain,
the source whose feature distribution has the smallest summed Wasserstein distance to the other
sources. The release (https://github.com/PeixianChen/DDAN) hard-wires CUHK-SYSU instead and
leaves its Sinkhorn code (`reid/loss/wassdistance.py`, adapted from gpeyre/SinkhornAutoDiff)
uncalled; `sinkhorn_distance` follows that code: squared Euclidean cost, uniform marginals,
log-domain updates with eps = 0.1, at most 100 iterations, stopping when the mean absolute
change of u falls below 0.1, cost = sum(pi * C).

Host NumPy (float64), run once at the start of training on a sample of features per domain.
"""
from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from jaxcompress.errors import ConfigError


def sinkhorn_distance(x: np.ndarray, y: np.ndarray, eps: float = 0.1, max_iter: int = 100,
                      thresh: float = 0.1) -> float:
  """Entropic optimal-transport cost between two point clouds with uniform weights.

  With C_ij = ||x_i - y_j||^2, mu = 1/n, nu = 1/m and M(u, v)_ij = (-C_ij + u_i + v_j) / eps:
  u <- eps (log(mu + 1e-8) - logsumexp_j M) + u; v <- eps (log(nu + 1e-8) - logsumexp_i M) + v;
  stop after `max_iter` or when sum_i |u_i - u_prev_i| < thresh; pi = exp(M(u, v)).

  Args:
    x: (n, D) features of one domain.
    y: (m, D) features of another.
    eps: entropic regularisation.
    max_iter: most Sinkhorn iterations.
    thresh: stopping threshold on the L1 change of u.

  Returns:
    sum_ij pi_ij C_ij as a Python float.
  """
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or not len(x) or not len(y):
    raise ValueError(f"sinkhorn_distance expects two non-empty (n, D) feature matrices of the "
                     f"same width, got {x.shape} and {y.shape}; pass one row per sample.")
  cost = (np.sum(x * x, 1)[:, None] + np.sum(y * y, 1)[None, :] - 2.0 * x @ y.T).clip(0.0)
  log_mu = np.log(np.full(len(x), 1.0 / len(x)) + 1e-8)
  log_nu = np.log(np.full(len(y), 1.0 / len(y)) + 1e-8)
  u, v = np.zeros(len(x)), np.zeros(len(y))

  def m(u, v):
    return (-cost + u[:, None] + v[None, :]) / eps

  for _ in range(int(max_iter)):
    prev = u
    u = eps * (log_mu - logsumexp(m(u, v), axis=1)) + u
    v = eps * (log_nu - logsumexp(m(u, v), axis=0)) + v
    if np.sum(np.abs(u - prev)) < thresh:
      break
  return float(np.sum(np.exp(m(u, v)) * cost))


def domain_distances(features: np.ndarray, domains: np.ndarray, num_domains: int,
                     **sinkhorn_kwargs) -> np.ndarray:
  """(num_domains, num_domains) symmetric matrix of `sinkhorn_distance` between domains.

  Args:
    features: (N, D) features.
    domains: (N,) integer domain index of each row, in [0, num_domains).
    num_domains: number of domains (each needs at least one row).
    **sinkhorn_kwargs: eps, max_iter, thresh.

  Returns:
    float64 matrix with zero diagonal; entry (a, b) = (a, b) for a < b, mirrored.
  """
  features = np.asarray(features)
  domains = np.asarray(domains)
  if domains.shape != (len(features),):
    raise ValueError(f"domain_distances expects one domain index per feature row, got "
                     f"{domains.shape} for {len(features)} rows.")
  groups = [features[domains == d] for d in range(num_domains)]
  empty = [d for d, g in enumerate(groups) if not len(g)]
  if empty:
    raise ConfigError(f"The central-domain rule found no sample of domains {empty}; every "
                      "source domain needs samples (check the DG source's domain labels).")
  out = np.zeros((num_domains, num_domains))
  for a in range(num_domains):
    for b in range(a + 1, num_domains):
      out[a, b] = out[b, a] = sinkhorn_distance(groups[a], groups[b], **sinkhorn_kwargs)
  return out


def central_domain(features: np.ndarray, domains: np.ndarray, num_domains: int,
                   normalize: bool = True, **sinkhorn_kwargs) -> tuple[int, np.ndarray]:
  """The paper's central domain: argmin over domains of the summed distance to the others.

  Args:
    features: (N, D) features of samples of every source domain.
    domains: (N,) their domain indices.
    num_domains: number of source domains.
    normalize: L2-normalise the rows first (the test features are compared L2-normalised; it
      keeps the squared costs in [0, 4], where eps = 0.1 is a mild regularisation).
    **sinkhorn_kwargs: eps, max_iter, thresh of `sinkhorn_distance`.

  Returns:
    (index of the central domain, its (num_domains,) summed distances); ties go to the lowest
    index.
  """
  x = np.asarray(features, np.float64)
  if normalize:
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  sums = domain_distances(x, domains, num_domains, **sinkhorn_kwargs).sum(1)
  return int(np.argmin(sums)), sums
