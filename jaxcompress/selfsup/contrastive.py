"""MoCo contrastive logits, InfoNCE and the key queue, with DSM's intra-video hard negative.

MoCo (He et al., "Momentum Contrast for Unsupervised Visual Representation Learning",
arXiv 1911.05722, Algorithm 1) scores a query q against its key k and a FIFO queue of past keys
and trains with the InfoNCE cross-entropy (label 0). DSM (Wang et al., arXiv 2009.05757, AAAI
2021) appends one more logit per row, q . n with n the query encoder's embedding of a clip of the
same video whose motion is broken, as the official `MemoryMoCo.forward`
(https://github.com/FingerRec/DSM-decoupling-scene-motion, `src/loss/NCE/NCEAverage.py`):
`out = cat(q.k, q.queue, q.n) / T`, `NCESoftmaxLoss` = cross-entropy with label 0; after the step
only the keys k are written into the queue, at `(index + b) % K`. The key encoder follows the
query encoder by `ema_update` (MoCo Eq. 2, momentum 0.999 in DSM; also MEB-Net's mean teachers).

The official queue starts as `torch.rand(K, D) * 2 stdv - stdv` with stdv = 1 / sqrt(D / 3):
uniform in [-stdv, stdv), not normalised (facebookresearch/moco starts from normalised Gaussian
rows instead). Each coordinate then has variance 1 / D, so a row has squared norm 1 in
expectation, the scale of the L2-normalised keys that replace it. `init_queue` draws the same
distribution. The released scripts use K = 3569, D = 128, T = 0.07.

Example:
  >>> logits = moco_logits(q, k, queue, negatives=n)     # (B, K + 2), queue before this step
  >>> loss = info_nce(logits)
  >>> queue, index = queue_push(queue, index, k)
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def _check_rows(name: str, x: jax.Array, ref_shape: tuple[int, ...], ref_name: str) -> None:
  if x.shape != ref_shape:
    raise ValueError(
        f"moco_logits: {name} has shape {x.shape} but {ref_name} has {ref_shape}; pass one "
        f"(B, D) row per query, embedded by heads of the same width.")


def moco_logits(q: jax.Array, k: jax.Array, queue: jax.Array, negatives: jax.Array | None = None,
                temperature: float | jax.Array = 0.07) -> jax.Array:
  """Contrastive logits `[q.k, q.queue_0, ..., q.queue_{K-1}(, q.n)] / T` per query row.

  MoCo's l_pos and l_neg (arXiv 1911.05722, Algorithm 1) with DSM's intra-video negative as one
  extra last column. No normalisation inside: the heads L2-normalise.

  Args:
    q: (B, D) query embeddings; receives gradient.
    k: (B, D) key embeddings of the momentum encoder; held constant.
    queue: (K, D) keys of earlier steps; held constant.
    negatives: optional (B, D) embeddings of each query's intra-video negative, encoded by the
      query encoder; receives gradient and is never enqueued.
    temperature: T, a Python number or 0-d array (traced without recompiling).

  Returns:
    (B, K + 1) logits, or (B, K + 2) with `negatives`; column 0 is the positive.
  """
  q, k, queue = jnp.asarray(q), jnp.asarray(k), jnp.asarray(queue)
  if q.ndim != 2:
    raise ValueError(f"moco_logits: q must be (B, D), got shape {q.shape}; flatten the "
                     "embeddings to one row per clip.")
  _check_rows("k", k, q.shape, "q")
  if queue.ndim != 2 or queue.shape[1] != q.shape[1]:
    raise ValueError(
        f"moco_logits: queue must be (K, D) with D = {q.shape[1]} as q, got shape {queue.shape}; "
        "build it with init_queue(key, K, D).")
  if isinstance(temperature, (int, float)) and temperature <= 0:
    raise ValueError(f"moco_logits: temperature must be > 0, got {temperature}; DSM uses 0.07.")
  k = jax.lax.stop_gradient(k)
  queue = jax.lax.stop_gradient(queue)
  parts = [jnp.sum(q * k, axis=1, keepdims=True),
           # Highest precision: TF32 / bf16 passes would put ~1e-3 errors into logits that are
           # then divided by T = 0.07.
           jnp.matmul(q, queue.T, precision=jax.lax.Precision.HIGHEST)]
  if negatives is not None:
    negatives = jnp.asarray(negatives)
    _check_rows("negatives", negatives, q.shape, "q")
    parts.append(jnp.sum(q * negatives, axis=1, keepdims=True))
  logits = jnp.concatenate(parts, axis=1)
  return logits / jnp.asarray(temperature, logits.dtype)


def info_nce(logits: jax.Array) -> jax.Array:
  """InfoNCE: mean over rows of `logsumexp(logits_b) - logits_b[0]` (cross-entropy, label 0).

  MoCo's loss (arXiv 1911.05722, Eq. 1), the official DSM `NCESoftmaxLoss`.

  Args:
    logits: (B, M) logits with the positive in column 0 (e.g. from `moco_logits`).

  Returns:
    0-d loss in the dtype of `logits`.
  """
  logits = jnp.asarray(logits)
  if logits.ndim != 2 or logits.shape[1] < 1:
    raise ValueError(f"info_nce expects (B, M) logits with the positive in column 0, got shape "
                     f"{logits.shape}; build them with moco_logits.")
  return jnp.mean(jax.nn.logsumexp(logits, axis=1) - logits[:, 0])


def queue_push(queue: jax.Array, index: int | jax.Array,
               keys: jax.Array) -> tuple[jax.Array, jax.Array]:
  """FIFO update: rows (index + b) mod K take keys[b]; the pointer moves B rows, wrapping around.

  The official `MemoryMoCo` update (`index_copy_` at `fmod(arange(B) + index, K)`); the keys are
  constants. Call it after computing the step's logits, which use the queue before the push.

  Args:
    queue: (K, D) queue.
    index: pointer to the oldest row, a Python int or 0-d integer array (may be traced).
    keys: (B, D) keys of this step, B <= K.

  Returns:
    (queue, index): the updated queue (dtype of `queue`) and the new pointer (index + B) mod K as
    a 0-d int32 array.
  """
  queue, keys = jnp.asarray(queue), jnp.asarray(keys)
  if queue.ndim != 2 or keys.ndim != 2 or keys.shape[1] != queue.shape[1]:
    raise ValueError(
        f"queue_push expects queue (K, D) and keys (B, D) of the same D, got {queue.shape} and "
        f"{keys.shape}; push the key encoder's (B, D) embeddings.")
  size, batch = queue.shape[0], keys.shape[0]
  if batch > size:
    raise ValueError(
        f"queue_push: {batch} keys do not fit a queue of {size} rows (each row would be written "
        "more than once in one step); use a queue of at least the batch size.")
  index = jnp.asarray(index, jnp.int32)
  rows = jnp.mod(index + jnp.arange(batch, dtype=jnp.int32), size)
  keys = jax.lax.stop_gradient(keys).astype(queue.dtype)
  # B <= K, so the rows are distinct.
  queue = queue.at[rows].set(keys, unique_indices=True)
  return queue, jnp.mod(index + batch, size).astype(jnp.int32)


def init_queue(rng_key: jax.Array, size: int, dim: int,
               dtype: jnp.dtype = jnp.float32) -> jax.Array:
  """The official initial queue: i.i.d. U[-1/sqrt(D/3), 1/sqrt(D/3)) entries, unnormalised.

  As `MemoryMoCo.__init__` of the DSM release (`torch.rand(K, D).mul_(2 * stdv).add_(-stdv)`);
  the variance of every entry is 1 / D, so rows have unit squared norm in expectation.

  Args:
    rng_key: JAX PRNG key.
    size: K, the number of queued keys (3569 in the released DSM scripts).
    dim: D, the embedding width (128 in DSM).
    dtype: floating dtype of the queue.

  Returns:
    (K, D) array.
  """
  if size < 1 or dim < 1:
    raise ValueError(f"init_queue: size and dim must be positive, got {size} and {dim}; DSM uses "
                     "size=3569, dim=128.")
  bound = 1.0 / (dim / 3.0) ** 0.5
  return jax.random.uniform(rng_key, (size, dim), dtype, minval=-bound, maxval=bound)


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
