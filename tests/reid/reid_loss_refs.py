"""NumPy loop references of the re-identification losses, shared by the reid loss tests.

Written from the formulas, per anchor / per row with explicit loops and float64, independently of
the vectorised JAX code; plus PyTorch transcriptions of the official MEB-Net and DDAN modules
(https://github.com/YunpengZhai/MEB-Net `mebnet/loss/{triplet,crossentropy}.py`,
https://github.com/PeixianChen/DDAN `reid/loss/tripletloss.py`) used as a second reference.
"""
from __future__ import annotations

import math

import numpy as np


def np_dist(x):
  """sqrt(max(||x_i - x_j||**2, 1e-12)) by direct differences."""
  x = np.asarray(x, np.float64)
  n = x.shape[0]
  d = np.zeros((n, n))
  for i in range(n):
    for j in range(n):
      d[i, j] = math.sqrt(max(float(np.sum((x[i] - x[j]) ** 2)), 1e-12))
  return d


def np_mine(dist, labels):
  """Hardest positive (i included) / negative per anchor; strict comparisons keep the first."""
  dist = np.asarray(dist, np.float64)
  n = dist.shape[0]
  pos = np.zeros(n, np.int64)
  neg = np.zeros(n, np.int64)
  for i in range(n):
    best_p, best_n = None, None
    for j in range(n):
      if labels[j] == labels[i]:
        if best_p is None or dist[i, j] > dist[i, best_p]:
          best_p = j
      elif best_n is None or dist[i, j] < dist[i, best_n]:
        best_n = j
    pos[i], neg[i] = best_p, best_n
  return pos, neg


def np_log_softmax_row(v):
  v = np.asarray(v, np.float64)
  m = max(v)
  return v - (m + math.log(sum(math.exp(a - m) for a in v)))


def np_triplet(feat, labels, margin, normalize):
  x = np.asarray(feat, np.float64)
  if normalize:
    x = np.stack([r / (math.sqrt(float(r @ r)) + 1e-12) for r in x])
  d = np_dist(x)
  pos, neg = np_mine(d, labels)
  terms = []
  for i in range(len(x)):
    z = d[i, pos[i]] - d[i, neg[i]]
    terms.append(math.log1p(math.exp(z)) if margin is None else max(0.0, z + margin))
  return float(np.mean(terms))


def np_soft_triplet(feat, labels, teacher=None, margin=0.0):
  d = np_dist(feat)
  pos, neg = np_mine(d, labels)
  dt = None if teacher is None else np_dist(teacher)
  terms = []
  for i in range(d.shape[0]):
    lp = np_log_softmax_row([d[i, pos[i]], d[i, neg[i]]])
    if dt is None:
      terms.append(-margin * lp[0] - (1 - margin) * lp[1])
    else:
      t = np.exp(np_log_softmax_row([dt[i, pos[i]], dt[i, neg[i]]]))
      terms.append(-(t[0] * lp[0] + t[1] * lp[1]))
  return float(np.mean(terms))


def np_ce_label_smooth(logits, labels, eps):
  z = np.asarray(logits, np.float64)
  k = z.shape[1]
  total = 0.0
  for b in range(z.shape[0]):
    lp = np_log_softmax_row(z[b])
    for c in range(k):
      target = (1 - eps) * (c == labels[b]) + eps / k
      total -= target * lp[c]
  return total / z.shape[0]


def np_soft_ce(logits, teacher):
  z = np.asarray(logits, np.float64)
  total = 0.0
  for b in range(z.shape[0]):
    lp = np_log_softmax_row(z[b])
    pt = np.exp(np_log_softmax_row(teacher[b]))
    total -= float(pt @ lp)
  return total / z.shape[0]


def np_softmax(z):
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


def fd_grad(f, x, h=1e-6):
  """Central finite differences of a scalar function of a float64 array."""
  x = np.array(x, np.float64)
  g = np.zeros_like(x)
  for idx in np.ndindex(x.shape):
    xp, xm = x.copy(), x.copy()
    xp[idx] += h
    xm[idx] -= h
    g[idx] = (f(xp) - f(xm)) / (2 * h)
  return g


def mining_margin(feat, labels, normalize=False):
  """Smallest gap between the selected and the runner-up candidate of any anchor.

  Finite differences are only valid where a perturbation of size h cannot change the selection.
  """
  x = np.asarray(feat, np.float64)
  if normalize:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
  d = np_dist(x)
  gap = np.inf
  for i in range(len(x)):
    same = np.asarray(labels) == labels[i]
    for mask in (same, ~same):
      v = np.sort(d[i, mask])
      if v.size > 1:
        gap = min(gap, v[-1] - v[-2] if mask is same else v[1] - v[0])
  return gap


# --- PyTorch transcriptions of the official modules (a second, independent reference) ---------


def torch_euclidean_dist(torch, x, y):
  m, n = x.size(0), y.size(0)
  xx = torch.pow(x, 2).sum(1, keepdim=True).expand(m, n)
  yy = torch.pow(y, 2).sum(1, keepdim=True).expand(n, m).t()
  return (xx + yy - 2 * x @ y.t()).clamp(min=1e-12).sqrt()


def torch_batch_hard(torch, dist, labels):
  n = dist.size(0)
  sim = labels.expand(n, n).eq(labels.expand(n, n).t()).to(dist.dtype)
  sp, pi = torch.sort(dist + (-9999999.) * (1 - sim), dim=1, descending=True)
  sn, ni = torch.sort(dist + 9999999. * sim, dim=1, descending=False)
  return sp[:, 0], sn[:, 0], pi[:, 0], ni[:, 0]


def torch_soft_triplet(torch, emb1, emb2, labels, margin):
  """MEB-Net `SoftTripletLoss.forward` (normalize_feature=False)."""
  f = torch.nn.functional
  dist = torch_euclidean_dist(torch, emb1, emb1)
  n = dist.size(0)
  ap, an, ap_idx, an_idx = torch_batch_hard(torch, dist, labels)
  triple = f.log_softmax(torch.stack((ap, an), dim=1), dim=1)
  if margin is not None:
    return (-margin * triple[:, 0] - (1 - margin) * triple[:, 1]).mean()
  ref = torch_euclidean_dist(torch, emb2, emb2)
  ap_ref = torch.gather(ref, 1, ap_idx.view(n, 1).expand(n, n))[:, 0]
  an_ref = torch.gather(ref, 1, an_idx.view(n, 1).expand(n, n))[:, 0]
  t = f.softmax(torch.stack((ap_ref, an_ref), dim=1), dim=1).detach()
  return (-t * triple).mean(0).sum()


def torch_ce_label_smooth(torch, inputs, targets, num_classes, epsilon):
  """MEB-Net `CrossEntropyLabelSmooth.forward`."""
  log_probs = torch.nn.functional.log_softmax(inputs, dim=1)
  t = torch.zeros_like(log_probs).scatter_(1, targets.unsqueeze(1), 1)
  t = (1 - epsilon) * t + epsilon / num_classes
  return (-t * log_probs).mean(0).sum()


def torch_soft_entropy(torch, inputs, targets):
  """MEB-Net `SoftEntropy.forward`."""
  f = torch.nn.functional
  return (-f.softmax(targets, dim=1).detach() * f.log_softmax(inputs, dim=1)).mean(0).sum()


def torch_ddan_triplet(torch, feat, labels, margin):
  """DDAN `TripletLoss.__call__` (always normalises; MarginRankingLoss or SoftMarginLoss)."""
  x = feat / (torch.norm(feat, 2, -1, keepdim=True).expand_as(feat) + 1e-12)
  ap, an, _, _ = torch_batch_hard(torch, torch_euclidean_dist(torch, x, x), labels)
  y = torch.ones_like(an)
  if margin is None:
    return torch.nn.SoftMarginLoss()(an - ap, y)
  return torch.nn.MarginRankingLoss(margin=margin)(an, ap, y)
