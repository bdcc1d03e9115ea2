"""BNAS: Binarized Neural Architecture Search (Chen et al., arXiv 1911.10862, AAAI 2020;
journal version arXiv 2009.04247 with the UCB-based "1-bit BNAS").

No official code is public; this follows the two papers and documents every choice they leave
open (marked CHOICE).

Search = PC-DARTS (`PCDarts`: partial channels, edge normalisation, bilevel first-order step on
the two train halves) on a binarized op space (`config.nas.op_set = "binary"`,
`jaxcompress.nas.binary_ops.ops_for`: the DARTS ops with XNOR sep/dil convs;
`binary_activations=True` for 1-bit), plus
operation-space reduction: every edge of each cell type abandons one op per reduction step until
one op per edge is left; the genotype is then the PC-DARTS top-2 edge rule over the survivors
(`nas.search.genotype_from_arch` with the alive masks): it holds only ops alive at the end of the
search. An edge whose survivor is `none` is no connection and is not kept while a node has other
connected edges; a node with fewer than two connected edges keeps ("none", j) in the free slot
(CHOICE: the paper does not treat this case; no abandoned op is retrained).

Performance-based abandonment (conference; `config.nas.abandon_rule = "performance"`), per edge:
  1. M_L / M_S: the alive ops split by softmax(alpha) at the start of each reduction phase;
     M_S = the ceil(n/2) alive ops with the smallest weight, M_L the floor(n/2) largest
     (CHOICE: ceil for M_S so that an odd n, and n = 3 in particular, still has >= 2 sampled ops;
     with n = 2 both ops are sampled (M_L empty): a single M_S op would score exactly like the
     M_L op (softmax over one op = 1 = (max + mean) / 2) and the last abandonment would fall to
     the tie rule; ties by lower op index).
  2. Sampling: during the phase, every train step samples one op per edge from M_S and evaluates
     the sampled single-path network (inherited weights, no training) on that step's validation
     half-batch; its accuracy is credited to every op it used. Per edge the op with the fewest
     samples so far in the phase is taken (random tie-break), i.e. sampling without replacement
     in rounds of |M_S| (CHOICE: samples are spread over the phase's steps, one validation
     mini-batch each, instead of T passes over the whole validation set; T = phase steps /
     |M_S|; the engine's hooks have no data).
  3. Score: ybar_k = mean accuracy of op k's samples in the phase; s_k = softmax_k(ybar) over M_S;
     each op in M_L gets s = (max_{M_S} s + mean_{M_S} s) / 2. An M_S op that was never sampled
     (phase shorter than |M_S| steps) gets the edge's mean ybar (CHOICE).
  4. Likelihood S_k <- S_k / 2 + s_k (S = 0 at the start), then abandon argmin_k S_k over the
     alive ops (ties to the lower index) on every edge with > 1 alive op.
UCB abandonment (1-bit BNAS, journal; `abandon_rule = "ucb"`): ops are sampled uniformly among
the alive ops (untried first), the accuracy of each sampled network updates m_k <- (1 - lam) m_k +
lam a (first reward initialises m_k; lam = `config.nas.bandit_lambda`, CHOICE 0.7 as ABanditNAS)
and n_k, N; at each reduction step argmin_k m_k + sqrt(2 ln N / n_k) is abandoned per edge
(`nas.bandit.remove_worst(state, "ucb")`). Bandit statistics are updated under both rules.

Schedule (CHOICE, traced, no recompiles): reduction phase p covers epochs
[reduce_start + p * reduce_every, reduce_start + (p + 1) * reduce_every); ops are sampled during
every phase and one op per edge is abandoned in `on_epoch_end` of the phase's last epoch, for
`num_reductions` phases (7 = 8 ops -> 1). The CIFAR-10 config uses reduce_start 15 (after the
PC-DARTS warm-up) and reduce_every 5: removals at the ends of epochs 19, 24, ..., 49.

Abandoned ops get zero mixing weight in the supernet (softmax over the alive ops) and, with
`config.nas.skip_dead = True`, are not computed (`nn.cond`): the op-space reduction speed-up.
Sampled paths use `nn.switch` on traced indices. Everything (alive masks, likelihood, phase
accumulators, bandit statistics) lives in `state.extra` as arrays of fixed shape.

CHOICE: sampled networks are evaluated with batch-statistics BN (the search-net BN has no affine
parameters and its running statistics describe the mixed supernet, not the sampled path); their
BN updates are discarded. `alphas` keep training between abandonments (PC-DARTS from
`arch_start_epoch`).

extra layout: epoch, arch_on, bandit (BanditState with `alive` (2, E, K), mean, count, total),
likelihood (2, E, K), small (M_S mask), acc_sum, acc_count (phase accumulators), sampling_on,
removals (number of reduction steps done), last_ops (2, E) ops of the last sampled network.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcompress.errors import ConfigError
from jaxcompress.methods.base import Batch, Metrics
from jaxcompress.methods.pc_darts import PCDarts
from jaxcompress.nas import bandit as bandit_lib
from jaxcompress.nas import search
from jaxcompress.train.state import TrainState


def split_small(op_w: jax.Array, alive: jax.Array) -> jax.Array:
  """M_S mask: per edge the max(ceil(n/2), min(n, 2)) alive ops with the smallest weights.

  Ties go to the lower op index. n = 2 samples both ops (M_L empty), see the module docstring.

  Args:
    op_w: (..., K) op weights (softmax of alpha).
    alive: (..., K) bool.
  """
  n = alive.sum(-1, keepdims=True)
  size = jnp.maximum((n + 1) // 2, jnp.minimum(n, 2))
  key = jnp.where(alive, op_w, jnp.inf)
  rank = jnp.argsort(jnp.argsort(key, axis=-1, stable=True), axis=-1, stable=True)
  return alive & (rank < size)


def performance_scores(acc_sum: jax.Array, acc_count: jax.Array, small: jax.Array,
                       alive: jax.Array) -> jax.Array:
  """BNAS per-op scores s_k: softmax of mean accuracy over M_S, (max+mean)/2 of it for M_L.

  Args:
    acc_sum, acc_count: (..., K) summed accuracies and sample counts of the phase.
    small: M_S mask; alive: alive mask (M_L = alive & ~small).

  Returns:
    (..., K) scores (0 for dead ops).
  """
  small = small & alive
  sampled = small & (acc_count > 0)
  ybar = jnp.where(sampled, acc_sum / jnp.maximum(acc_count, 1), 0.0)
  n_sampled = sampled.sum(-1, keepdims=True)
  edge_mean = ybar.sum(-1, keepdims=True) / jnp.maximum(n_sampled, 1)
  ybar = jnp.where(small & ~sampled, edge_mean, ybar)
  logits = jnp.where(small, ybar, -jnp.inf)
  s_small = jax.nn.softmax(logits, axis=-1)
  s_small = jnp.where(small, s_small, 0.0)
  n_small = jnp.maximum(small.sum(-1, keepdims=True), 1)
  s_max = jnp.max(jnp.where(small, s_small, -jnp.inf), axis=-1, keepdims=True)
  s_mean = s_small.sum(-1, keepdims=True) / n_small
  s_large = 0.5 * (s_max + s_mean)
  s = jnp.where(small, s_small, jnp.where(alive, s_large, 0.0))
  return jnp.where(jnp.isfinite(s), s, 0.0)


def sample_small(rng: jax.Array, small: jax.Array, acc_count: jax.Array) -> jax.Array:
  """Per edge the M_S op with the fewest samples in the phase (random tie-break): rounds of
  sampling without replacement."""
  noise = jax.random.uniform(rng, small.shape, minval=0.0, maxval=0.5)
  key = jnp.where(small, acc_count.astype(jnp.float32) + noise, jnp.inf)
  return jnp.argmin(key, axis=-1).astype(jnp.int32)


class BNAS(PCDarts):
  """Binarized NAS: PC-DARTS on binarized ops + performance-based (or UCB) op abandonment."""

  def __init__(self, config: ml_collections.ConfigDict, **kwargs: Any):
    nas = config.get("nas", ml_collections.ConfigDict())
    self.rule = nas.get("abandon_rule", "performance")
    if self.rule not in ("performance", "ucb"):
      raise ConfigError(f"Unknown nas.abandon_rule {self.rule!r}; use 'performance' or 'ucb'.")
    self.reduce_start = int(nas.get("reduce_start", 15))
    self.reduce_every = int(nas.get("reduce_every", 5))
    self.num_reductions = int(nas.get("num_reductions", len(nas.get(
        "primitives", search.space.PRIMITIVES)) - 1))
    self.bandit_lambda = float(nas.get("bandit_lambda", 0.7))
    if self.reduce_every < 1:
      raise ConfigError("nas.reduce_every must be >= 1 epoch.")
    super().__init__(config, **kwargs)

  # alive masks come from the bandit state
  def alive(self, state: TrainState) -> jax.Array:
    return state.extra["bandit"].alive

  def init_extra(self, params: Any) -> dict[str, Any]:
    extra = super().init_extra(params)
    ne, k = search.num_edges(self.nas.steps), len(self.primitives)
    shape = (2, ne, k)
    zeros = jnp.zeros(shape, jnp.float32)
    extra.update({
        "bandit": bandit_lib.BanditState.create((2, ne), k),
        "likelihood": zeros,
        "small": jnp.ones(shape, bool),
        "acc_sum": zeros,
        "acc_count": jnp.zeros(shape, jnp.int32),
        "sampling_on": jnp.zeros((), bool),
        "removals": jnp.zeros((), jnp.int32),
        "last_ops": jnp.zeros((2, ne), jnp.int32),
    })
    return extra

  # ------------------------------------------------------------ schedule
  def _phase(self, epoch: jax.Array) -> tuple[jax.Array, jax.Array]:
    rel = epoch - self.reduce_start
    phase = jnp.floor_divide(rel, self.reduce_every)
    active = (rel >= 0) & (phase < self.num_reductions)
    return rel, active

  def on_epoch_start(self, state: TrainState, epoch: Any) -> TrainState:
    state = super().on_epoch_start(state, epoch)
    epoch = jnp.asarray(epoch, jnp.int32)
    extra = dict(state.extra)
    bandit = extra["bandit"]
    rel, active = self._phase(epoch)
    active &= jnp.any(bandit.num_alive() > 1)
    phase_start = active & (jnp.mod(rel, self.reduce_every) == 0)
    _, arch = search.split_params(state.params)
    op_w = jnp.stack([search.op_weights(arch["alphas_normal"], bandit.alive[0]),
                      search.op_weights(arch["alphas_reduce"], bandit.alive[1])])
    extra["small"] = jnp.where(phase_start, split_small(op_w, bandit.alive), extra["small"])
    extra["acc_sum"] = jnp.where(phase_start, 0.0, extra["acc_sum"])
    extra["acc_count"] = jnp.where(phase_start, 0, extra["acc_count"])
    extra["sampling_on"] = active
    return state.replace(extra=extra)

  def on_epoch_end(self, state: TrainState, epoch: Any) -> TrainState:
    epoch = jnp.asarray(epoch, jnp.int32)
    extra = dict(state.extra)
    bandit = extra["bandit"]
    rel, active = self._phase(epoch)
    remove = active & (jnp.mod(rel + 1, self.reduce_every) == 0)
    remove &= jnp.any(bandit.num_alive() > 1)
    if self.rule == "performance":
      s = performance_scores(extra["acc_sum"], extra["acc_count"], extra["small"], bandit.alive)
      likelihood = jnp.where(bandit.alive, 0.5 * extra["likelihood"] + s, extra["likelihood"])
      removed = bandit_lib.remove_by_score(bandit, likelihood)
    else:
      likelihood = extra["likelihood"]
      removed = bandit_lib.remove_worst(bandit, "ucb")
    pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(remove, a, b), new, old)
    extra["bandit"] = pick(removed, bandit)
    extra["likelihood"] = pick(likelihood, extra["likelihood"])
    extra["removals"] = extra["removals"] + remove.astype(jnp.int32)
    return state.replace(extra=extra)

  # ------------------------------------------------------------ sampling
  def sample_ops(self, state: TrainState, rng: jax.Array) -> jax.Array:
    """One op per edge (2, E): from M_S (performance rule) or uniform over alive (UCB)."""
    extra = state.extra
    if self.rule == "performance":
      return sample_small(rng, extra["small"] & extra["bandit"].alive, extra["acc_count"])
    return bandit_lib.sample(extra["bandit"], rng, "uniform")

  def sampled_accuracy(self, state: TrainState, images: jax.Array, labels: jax.Array,
                       ops: jax.Array) -> jax.Array:
    """Accuracy of the single-path network `ops` with inherited weights (batch-stat BN)."""
    logits, _ = self.apply(state.params, state.model_state, images, train=True, op_index=ops)
    return jnp.mean(jnp.argmax(logits, -1) == labels).astype(jnp.float32)

  def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    rng = state.step_rng(17)
    state, metrics = super().train_step(state, batch)

    def sample_and_score(extra):
      ops = self.sample_ops(state, rng)
      acc = self.sampled_accuracy(state, batch["val_image"], batch["val_label"], ops)
      used = jax.nn.one_hot(ops, len(self.primitives), dtype=bool)
      extra = {**extra,
               "acc_sum": extra["acc_sum"] + used * acc,
               "acc_count": extra["acc_count"] + used.astype(jnp.int32),
               "bandit": bandit_lib.update(extra["bandit"], ops, acc, self.bandit_lambda),
               "last_ops": ops}
      return extra, acc

    def idle(extra):
      return extra, jnp.zeros((), jnp.float32)

    extra, acc = jax.lax.cond(state.extra["sampling_on"], sample_and_score, idle,
                              dict(state.extra))
    metrics = {**metrics, "sampled_accuracy": acc,
               "alive_ops": jnp.mean(extra["bandit"].num_alive().astype(jnp.float32))}
    return state.replace(extra=extra), metrics

  def report_extras(self, state: TrainState) -> dict[str, Any]:
    extra = jax.device_get(state.extra)
    alive = np.asarray(extra["bandit"].alive)
    names = lambda a: [[p for p, ok in zip(self.primitives, edge) if ok] for edge in a]
    return {"alive_normal": names(alive[0]), "alive_reduce": names(alive[1]),
            "removals": int(extra["removals"]), "abandon_rule": self.rule,
            "likelihood": np.asarray(extra["likelihood"]).round(4).tolist()}
