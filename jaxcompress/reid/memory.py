"""DDAN's identity-similarity memory: per-identity feature centroids and the neighbour loss.

"Dual Distribution Alignment Network for Generalizable Person Re-Identification" (Chen, Dai,
Liu, Chen, Ji, Shao; AAAI 2021, arXiv 2007.13249), identity-wise similarity enhancement. The
behaviour follows the official `InvNet` (https://github.com/PeixianChen/DDAN,
`reid/loss/identityloss.py`) where it is more specific than the paper:

* the memory M holds, for each of the 18,530 source identities, a blend of the running mean of
  the current epoch's mapped features f_d and the previous epoch's memory row;
* each sample's candidate neighbours are the identities of the other datasets (samples of the
  central domain, CUHK-SYSU: the identities of the central domain only); the k most similar ones
  (cosine similarity from epoch 1 on) are pulled closer with a symmetric KL divergence between
  temperature softmaxes over the feature channels.

Official details kept on purpose: excluded candidates are removed by multiplying the similarity
by 0 (so an excluded identity outranks allowed ones of negative similarity); the neighbour rows
are the unnormalised memory rows; at epoch 0 the KL runs on the raw features and memory rows
instead of softmaxes. Official details not kept: a zero memory row gets similarity 0 here (the
official divides 0 by 0), and neighbour ties go to the lowest memory index (the official leaves
them to `torch.topk`).

The official memory update is a per-sample Python loop; here it is the equivalent segment mean
per identity, so a batch with repeated identities gives the same rows in one pass.

Example:
  >>> state = identity_memory_init(18530, 1280)
  >>> loss, state, nbrs = identity_memory_loss(state, f_d, pids, domains, ddan_id_domains(),
  ...                                          epoch, step)
"""
from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np

# Identities per source dataset and their global id offsets (the official `TotalData`
# concatenation order): Market-1501, DukeMTMC-reID, CUHK03, CUHK02, CUHK-SYSU.
DDAN_IDS_PER_DOMAIN = (1501, 1812, 1467, 1816, 11934)
DDAN_NUM_IDS = sum(DDAN_IDS_PER_DOMAIN)  # 18530
# The central domain of the release (CUHK-SYSU), hard-wired there instead of chosen by the
# paper's Wasserstein criterion.
DDAN_CENTRAL_DOMAIN = 4
# The block sizes the official `InvNet.domain` lays out, in the order CUHK02, CUHK03, Duke,
# Market, SYSU: they do not match the id offsets above for the first 6,596 identities.
_OFFICIAL_BLOCKS = (1816, 1467, 1812, 1501, 11934)

# Added inside both logarithms of the official symmetric KL (`torch.log(x + 1e-8)`).
_LOG_EPS = 1e-8


@flax.struct.dataclass
class IdentityMemory:
  """State of the identity memory (all zeros at the start of training).

  Attributes:
    memory: (num_ids, D) the memory rows M_y used for similarities and as neighbour features.
    last: (num_ids, D) the memory as it was at the start of the current epoch (blend source).
    current: (num_ids, D) the running mean of this epoch's features of each identity.
    count: (num_ids,) how many features of this epoch `current` averages (same dtype as memory).
  """
  memory: jax.Array
  last: jax.Array
  current: jax.Array
  count: jax.Array


def identity_memory_init(num_ids: int, dim: int, dtype=jnp.float32) -> IdentityMemory:
  """An all-zero identity memory, as the official `InvNet` starts.

  Args:
    num_ids: number of identities (18530 for DDAN's five sources).
    dim: feature width D (1280 for DDAN's MobileNetV2 mapping network).
    dtype: floating dtype of all four arrays.

  Returns:
    IdentityMemory with zero memory, last, current (num_ids, dim) and count (num_ids,).
  """
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(
        f"identity_memory_init expects a floating dtype, got {dtype}; pass e.g. jnp.float32.")
  if int(num_ids) < 1 or int(dim) < 1:
    raise ValueError(
        f"identity_memory_init expects positive num_ids and dim, got {num_ids} and {dim}; pass "
        "the number of identities and the feature width.")
  z = jnp.zeros((num_ids, dim), dtype)
  return IdentityMemory(memory=z, last=z, current=z, count=jnp.zeros((num_ids,), dtype))


def ddan_id_domains(aligned: bool = True) -> np.ndarray:
  """The dataset index of each of DDAN's 18,530 memory identities.

  Args:
    aligned: True: aligned with the global id offsets (Market 0-1500 -> 0, Duke 1501-3312 -> 1,
      CUHK03 3313-4779 -> 2, CUHK02 4780-6595 -> 3, CUHK-SYSU 6596-18529 -> 4), i.e.
      [0]*1501 + [1]*1812 + [2]*1467 + [3]*1816 + [4]*11934. False: the official `InvNet`
      layout [0]*1816 + [1]*1467 + [2]*1812 + [3]*1501 + [4]*11934, misaligned with those
      offsets for the first 6,596 identities (reproduces the release).

  Returns:
    (18530,) int32 NumPy array.
  """
  blocks = DDAN_IDS_PER_DOMAIN if aligned else _OFFICIAL_BLOCKS
  return np.concatenate([np.full(n, d, np.int32) for d, n in enumerate(blocks)])


def _xlogx(x: jax.Array) -> jax.Array:
  """x log x with 0 log 0 = 0 (and a zero gradient there instead of -inf)."""
  pos = x > 0
  return jnp.where(pos, x * jnp.log(jnp.where(pos, x, 1)), 0)


def _symmetric_kl_sum(p, log_p_self, q, log_q_self):
  """sum [q log q - q log(p + eps) + p log p - p log(q + eps)] over all elements.

  `p log p` and `q log q` are passed in (`log_*_self` are the x log x terms), so the softmax
  branch can use the exact log-softmax and the raw branch the guarded logarithm.
  """
  return jnp.sum(log_q_self - q * jnp.log(p + _LOG_EPS) + log_p_self - p * jnp.log(q + _LOG_EPS))


def _check_int_vector(x, n: int, name: str, what: str) -> jax.Array:
  x = jnp.asarray(x)
  if x.shape != (n,) or not jnp.issubdtype(x.dtype, jnp.integer):
    raise ValueError(
        f"identity_memory_loss expects {name} as an integer array of shape ({n},), {what}; got "
        f"shape {x.shape} and dtype {x.dtype}; cast with .astype(jnp.int32).")
  return x


def identity_memory_loss(
    state: IdentityMemory,
    feat: jax.Array,
    labels: jax.Array,
    domains: jax.Array,
    id_domains: jax.Array,
    epoch: int | jax.Array,
    step: int | jax.Array,
    knn: int = 8,
    beta: float | jax.Array = 0.002,
    alpha: float | jax.Array = 0.05,
    central: int = 4,
) -> tuple[jax.Array, IdentityMemory, jax.Array]:
  """DDAN's identity-similarity loss on a batch, and the memory updated with the batch.

  1. s = feat @ Mn.T, Mn = memory rows over their L2 norm when epoch > 0 (zero rows give 0), the
     raw memory at epoch 0. (The official also divides s by 0.05, which changes no ranking.)
  2. allowed[b, j] = id_domains[j] != domains[b], or id_domains[j] == central for samples of
     the central domain; neighbours = the knn largest s * allowed per row (excluded candidates
     score 0, not -inf; ties to the lowest index), listed in ascending memory index.
  3. P_b = softmax(feat_b / beta), Q_bi = softmax(memory[neighbours_bi] / beta) over channels
     when epoch > 0 (raw feat_b and memory rows at epoch 0); the neighbour rows are constants.
     loss = 1/(B knn D) sum_{b,i,c} [Q log Q - Q log(P + 1e-8) + P log P - P log(Q + 1e-8)]
     with 0 log 0 = 0: the official sum of two mean-reduced `KLDivLoss` terms.
  4. Update with feat held constant: when epoch > 0 and step == 0, first last <- memory and
     count <- 0. Then for each identity y of the batch with c_y samples: current[y] <-
     (count[y] current[y] + sum_{labels_b = y} feat_b) / (count[y] + c_y), count[y] += c_y,
     memory[y] <- a last[y] + (1 - a) current[y], a = 0 at epoch 0 and alpha after.

  At epoch 0 the gradient of P log P at a zero feature entry is unbounded (the official gets NaN
  and weights the loss 0 until epoch 3); here it is 0 there. Do not rely on it.

  Args:
    state: the IdentityMemory (constant: no gradient flows into it).
    feat: (B, D) mapped features f_d (nonnegative in DDAN: ReLU6 then average pooling).
    labels: (B,) integer global identity ids in [0, num_ids).
    domains: (B,) integer dataset index of each sample.
    id_domains: (num_ids,) integer dataset index of each memory identity (`ddan_id_domains`).
    epoch: 0-based epoch, Python int or traced int scalar.
    step: 0-based step within the epoch, Python int or traced int scalar.
    knn: number of neighbours per sample (Python int, at most num_ids).
    beta: softmax temperature over channels.
    alpha: weight of the previous epoch's memory in the blend after epoch 0.
    central: dataset index of the central domain.

  Returns:
    (loss, new_state, neighbours): scalar loss in the promoted dtype of feat and the memory, the
    updated IdentityMemory (its own dtype), and (B, knn) int32 neighbour indices.
  """
  feat = jnp.asarray(feat)
  num_ids, dim = state.memory.shape
  if feat.ndim != 2 or feat.shape[1] != dim or not jnp.issubdtype(feat.dtype, jnp.floating):
    raise ValueError(
        f"identity_memory_loss expects floating features of shape (B, {dim}) matching the "
        f"memory width, got shape {feat.shape} and dtype {feat.dtype}; pool the features to one "
        "row per sample of the memory's width.")
  batch = feat.shape[0]
  labels = _check_int_vector(labels, batch, "labels", "one identity id per sample")
  domains = _check_int_vector(domains, batch, "domains", "one dataset index per sample")
  id_domains = _check_int_vector(id_domains, num_ids, "id_domains", "one per memory row")
  if not isinstance(knn, (int, np.integer)) or not 1 <= knn <= num_ids:
    raise ValueError(
        f"identity_memory_loss expects knn as a Python int in [1, {num_ids}], got {knn!r}; use "
        "the official 8 or fewer than the number of memory rows.")

  dtype = jnp.result_type(feat.dtype, state.memory.dtype)
  epoch = jnp.asarray(epoch)
  step = jnp.asarray(step)
  after_first = epoch > 0
  memory = jax.lax.stop_gradient(state.memory).astype(dtype)

  # 1-2. Neighbour selection (discrete: no gradient).
  feat_c = jax.lax.stop_gradient(feat).astype(dtype)
  norm = jnp.sqrt(jnp.sum(memory * memory, axis=1, keepdims=True))
  nonzero = norm > 0
  keys = jnp.where(after_first & nonzero, memory / jnp.where(nonzero, norm, 1), memory)
  sim = jnp.matmul(feat_c, keys.T, precision=jax.lax.Precision.HIGHEST)
  central_sample = domains[:, None] == central
  allowed = jnp.where(central_sample, id_domains[None, :] == central,
                      id_domains[None, :] != domains[:, None])
  scores = sim * allowed.astype(dtype)
  # lax.top_k puts the lower index first among equal values (the lowest-index tie rule) but
  # orders -0.0 below +0.0, which excluding a negative similarity produces: make zeros equal.
  scores = jnp.where(scores == 0, jnp.zeros_like(scores), scores)
  _, top = jax.lax.top_k(scores, knn)
  neighbours = jnp.sort(top, axis=1).astype(jnp.int32)

  # 3. Symmetric KL over the channels, each sample against each of its neighbour rows.
  rows = memory[neighbours]  # (B, knn, D), unnormalised
  feat_x = feat.astype(dtype)[:, None, :]
  beta = jnp.asarray(beta, dtype)

  def softmax_kl(f, m):
    log_p = jax.nn.log_softmax(f / beta, axis=-1)
    log_q = jax.nn.log_softmax(m / beta, axis=-1)
    p, q = jnp.exp(log_p), jnp.exp(log_q)
    # p * log_softmax is exactly 0 where p underflows, the 0 log 0 = 0 rule with a finite
    # gradient; the temperature 0.002 makes such underflow common in float32.
    return _symmetric_kl_sum(p, p * log_p, q, q * log_q)

  def raw_kl(f, m):
    return _symmetric_kl_sum(f, _xlogx(f), m, _xlogx(m))

  # cond, not where: the branch not taken must not leak NaN gradients (raw logs of the features).
  total = jax.lax.cond(after_first, softmax_kl, raw_kl, jnp.broadcast_to(feat_x, rows.shape), rows)
  loss = total / (batch * knn * dim)

  # 4. Memory update: the per-identity running mean of the epoch, blended with the last memory.
  mdtype = state.memory.dtype
  reset = after_first & (step == 0)
  last = jnp.where(reset, state.memory, state.last)
  count = jnp.where(reset, jnp.zeros_like(state.count), state.count)
  same = labels[:, None] == labels[None, :]
  # Every sample reads its identity's sums from the identity's first sample in the batch, so
  # the duplicate rows scattered below are bit-identical whatever the scatter order.
  first = jnp.argmax(same, axis=1)
  sums = jnp.matmul(same.astype(mdtype), jax.lax.stop_gradient(feat).astype(mdtype),
                    precision=jax.lax.Precision.HIGHEST)[first]
  n_batch = jnp.sum(same, axis=1).astype(mdtype)
  n_old = count[labels]
  n_new = n_old + n_batch
  cur = (n_old[:, None] * state.current[labels] + sums) / n_new[:, None]
  a = jnp.where(after_first, jnp.asarray(alpha, mdtype), jnp.zeros((), mdtype))
  mem_rows = a * last[labels] + (1 - a) * cur
  new_state = IdentityMemory(
      memory=state.memory.at[labels].set(mem_rows),
      last=last,
      current=state.current.at[labels].set(cur),
      count=count.at[labels].set(n_new))
  return loss, new_state, neighbours
