"""DTDN's disentangling, recombination, losses, target exemplar memory and schedule.

Dai, Chen, Wu, Hong, Ye, Tian, Ji, "Learning Task-oriented Disentangled Representations for
Unsupervised Domain Adaptation", arXiv 2007.13264, Sec. 3 (IEEE TIP 31, 2022). Where the paper
leaves details open the functions follow the official release (PeixianChen/DTDN,
`DTDN/reid/trainers.py` `Trainer._forward` and `BaseTrainer.train`, `DTDN/reid/loss/
neightboor.py` `InvNet`, `DTDN/baseline.py` `adjust_lr`):

  relevant F_c = g * F, irrelevant F_a = (1 - g) * F, g the gate averaged over the batch in
  training (one C-vector per domain and step) and per sample at test;
  with one permutation pi shared by both domains: S_c + S_a[pi], S_c + T_a[pi], T_c + S_a[pi],
  T_c + T_a[pi];
  L_sc_sa = CE(h_s(S_c + S_a[pi]), y), L_sc_ta = CE(h_s(S_c + T_a[pi]), y) + w ||g_s||_1,
  L_agree = mean |log_softmax h_t(T_c + S_a[pi]) - log_softmax h_t(T_c + T_a[pi])| + w ||g_t||_1,
  w = 5e-5, or 1e-4 when the source gate's mean is exactly 1;
  L_nb = -mean_i sum_j w_ij log softmax_j(x_i . M^T / beta) with w_ij = 3 on the own slot and 2
  on the top-k slots (`InvNet.smooth_hot`), then M_y <- a M_y + (1 - a) x, renormalised,
  a = alpha * epoch, one sample after the other;
  epochs <= 12: L = L_sc_sa + L_sc_ta; later: 0.35 (L_sc_sa + L_sc_ta) + 0.3 L_nb + L_agree.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

GATE_MODES = ("batch_mean", "per_sample")


def training_gate(gate: jax.Array, mode: str = "batch_mean") -> jax.Array:
  """The gate used in a training step.

  Args:
    gate: (N, C) per-sample gate values of one domain's batch.
    mode: "batch_mean" (release: `torch.mean(DynamicNet(F), dim=0)`, one C-vector broadcast
      over the batch) or "per_sample".

  Returns:
    (1, C) for "batch_mean", (N, C) for "per_sample".
  """
  if mode not in GATE_MODES:
    raise ValueError(f"gate mode {mode!r} is unknown; use one of {GATE_MODES}.")
  if gate.ndim != 2:
    raise ValueError(f"gate must be (N, C), got shape {gate.shape}; pool the map first.")
  return jnp.mean(gate, axis=0, keepdims=True) if mode == "batch_mean" else gate


def recombine(f_s: jax.Array, f_t: jax.Array, g_s: jax.Array, g_t: jax.Array,
              perm: jax.Array) -> dict[str, jax.Array]:
  """The four recombinations of relevant and (permuted) irrelevant parts (Sec. 3.2).

  Args:
    f_s, f_t: (N, H, W, C) source and target maps of the encoder.
    g_s, g_t: (1, C) or (N, C) gates of each domain (`training_gate`).
    perm: (N,) permutation applied to BOTH irrelevant parts (the release's one `randperm`).

  Returns:
    {"s_c": S_c, "t_c": T_c, "sc_sa", "sc_ta", "tc_sa", "tc_ta"} maps of f_s's shape.
  """
  if f_s.shape != f_t.shape or f_s.ndim != 4:
    raise ValueError(f"source and target maps must share one (N, H, W, C) shape, got "
                     f"{f_s.shape} and {f_t.shape}; give both streams one batch size.")
  if perm.shape != (f_s.shape[0],):
    raise ValueError(f"perm must have shape ({f_s.shape[0]},), got {perm.shape}.")
  gs, gt = g_s[:, None, None, :], g_t[:, None, None, :]
  s_c, t_c = gs * f_s, gt * f_t
  s_a, t_a = ((1 - gs) * f_s)[perm], ((1 - gt) * f_t)[perm]
  return {"s_c": s_c, "t_c": t_c, "sc_sa": s_c + s_a, "sc_ta": s_c + t_a,
          "tc_sa": t_c + s_a, "tc_ta": t_c + t_a}


def gate_l1_weight(g_s: jax.Array, weight: float = 5e-5, full_weight: float = 1e-4) -> jax.Array:
  """w of the gate L1 terms: `full_weight` when the source gate's mean is exactly 1 (release)."""
  g_s = jax.lax.stop_gradient(g_s)
  return jnp.where(jnp.mean(g_s) == 1, full_weight, weight).astype(g_s.dtype)


def agreement_loss(logits_a: jax.Array, logits_b: jax.Array) -> jax.Array:
  """mean |log_softmax(a) - log_softmax(b)| over every element (`F.l1_loss`), Sec. 3.3."""
  if logits_a.shape != logits_b.shape or logits_a.ndim != 2:
    raise ValueError(f"agreement_loss needs two (N, K) logits of one shape, got {logits_a.shape}"
                     f" and {logits_b.shape}.")
  return jnp.mean(jnp.abs(jax.nn.log_softmax(logits_a, -1) - jax.nn.log_softmax(logits_b, -1)))


def exemplar_weights(sim: jax.Array, index: jax.Array, knn: int) -> jax.Array:
  """`InvNet.smooth_hot`: 2 on each row's top-`knn` columns of `sim`, then 3 on its own slot.

  Args:
    sim: (N, M) similarities to the memory slots (held constant).
    index: (N,) own slot of every row.
    knn: neighbours per row.

  Returns:
    (N, M) weights (not normalised, as in the release).
  """
  _, top = jax.lax.top_k(jax.lax.stop_gradient(sim), knn)
  rows = jnp.arange(sim.shape[0])[:, None]
  w = jnp.zeros(sim.shape, sim.dtype).at[rows, top].set(2.0)
  return w.at[jnp.arange(sim.shape[0]), index].set(3.0)


def exemplar_memory_loss(memory: jax.Array, x: jax.Array, index: jax.Array, *, knn: int = 10,
                         beta: float = 0.05) -> jax.Array:
  """L_nb: exemplar, camera-free neighbour invariance on the target memory (Sec. 3.4).

  Args:
    memory: (M, D) slot features of the target training images (constant).
    x: (N, D) target features (the release: L2-normalised then dropped-out BN embeddings of T_c).
    index: (N,) slots of the batch's images.
    knn: neighbours weighted 2.
    beta: temperature (0.05).

  Returns:
    Scalar -mean_i sum_j w_ij log softmax_j(x_i . M^T / beta).
  """
  if memory.ndim != 2 or x.ndim != 2 or memory.shape[1] != x.shape[1]:
    raise ValueError(f"memory (M, D) and x (N, D) must share D, got {memory.shape}, {x.shape}.")
  if not 0 < knn <= memory.shape[0]:
    raise ValueError(f"knn must be in [1, {memory.shape[0]}] (memory slots), got {knn}.")
  logits = x @ jax.lax.stop_gradient(memory).T / jnp.asarray(beta, x.dtype)
  w = exemplar_weights(logits, index, knn)
  return -jnp.mean(jnp.sum(w * jax.nn.log_softmax(logits, -1), -1))


def exemplar_memory_update(memory: jax.Array, x: jax.Array, index: jax.Array,
                           momentum: float | jax.Array) -> jax.Array:
  """M_y <- (a M_y + (1 - a) x) / ||.||, one sample after the other (duplicates chain).

  Args:
    memory: (M, D) slots; x: (N, D) features; index: (N,) slots; momentum: a (alpha * epoch).

  Returns:
    The updated (M, D) memory (no gradient).
  """
  x = jax.lax.stop_gradient(x).astype(memory.dtype)
  a = jnp.asarray(momentum, memory.dtype)

  def body(i, m):
    row = a * m[index[i]] + (1 - a) * x[i]
    return m.at[index[i]].set(row / jnp.maximum(jnp.linalg.norm(row), 1e-12))

  return jax.lax.fori_loop(0, x.shape[0], body, jax.lax.stop_gradient(memory))


def loss_weights(epoch: int | jax.Array, switch_epoch: int = 12) -> tuple[jax.Array, ...]:
  """(w_cls, w_nb, w_agree) of L = w_cls (L_sc_sa + L_sc_ta) + w_nb L_nb + w_agree L_agree:
  (1, 0, 0) while epoch <= switch_epoch, then (0.7 * 0.5, 0.3, 1) (`BaseTrainer.train`)."""
  late = jnp.asarray(epoch) > switch_epoch
  return (jnp.where(late, 0.35, 1.0), jnp.where(late, 0.3, 0.0), jnp.where(late, 1.0, 0.0))


def release_lr(epoch: int, lr: float = 0.08, step_size: int = 10) -> float:
  """`adjust_lr` of the release: warm-up 0.0008 * epoch / 10 for epochs <= 9, 0.1 for 10..14
  (hard-coded, whatever `lr`), lr * 0.1 ** ((epoch - 10) // step_size) for 15..20, 1e-5 for
  21..30, 1e-6 after."""
  if epoch <= 9:
    return 0.0008 * epoch / 10.0
  if epoch <= 14:
    return 0.1
  if epoch <= 20:
    return lr * 0.1 ** ((epoch - 10) // step_size)
  return 1e-5 if epoch <= 30 else 1e-6


def release_lr_table(epochs: int, lr: float = 0.08, scale: float = 1.0
                     ) -> list[tuple[int, float]]:
  """`release_lr` as the (epoch, lr) pairs of the "piecewise" schedule, times `scale` (0.1 for
  the backbone groups' `lr_mult`); the schedule's `learning_rate` is the epoch-0 value 0."""
  return [(e, float(np.float64(scale) * release_lr(e, lr))) for e in range(1, epochs)]
