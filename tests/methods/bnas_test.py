"""BNAS: M_S / M_L split, scores, abandonment schedule without recompiles, bandit statistics."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np

from configs import common
from jaxcompress import methods
from jaxcompress.methods import bnas, pc_darts
from jaxcompress.nas import bandit as bandit_lib
from jaxcompress.nas import genotype as genotype_lib
from jaxcompress.nas import search
from jaxcompress.train import loop
from jaxcompress.train.state import TrainState

OPS4 = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")


def tiny_config(method="bnas", **nas):
  c = common.base_config()
  c.method = method
  c.data.name = "synthetic"
  c.data.source_kwargs = {"num_examples": 64, "image_shape": (8, 8, 1), "num_classes": 4}
  c.data.batch_size = 16
  c.data.eval_batch_size = 16
  c.data.search_split = 0.5
  c.model.num_classes = 4
  c.num_epochs = 2
  c.log_every = 2
  c.progress = "none"
  c.async_checkpoint = False
  c.num_devices = 1  # one device: a much smaller compile than the 8-device SPMD program
  c.optim.learning_rate = 0.05
  c.optim.weight_decay = 3e-4
  c.optim.grad_clip = 5.0
  c.nas = pc_darts.default_nas_config()
  c.nas.update(dict(init_channels=8, layers=3, steps=2, multiplier=2, primitives=OPS4,
                    arch_start_epoch=1, write_png=False))
  c.nas.update(nas)
  return c


def test_split_small_halves():
  w = jnp.array([0.3, 0.1, 0.05, 0.2, 0.15, 0.08, 0.07, 0.05])
  alive = jnp.ones(8, bool)
  small = bnas.split_small(w, alive)
  # ceil(8/2) = 4 smallest, the tie 0.05/0.05 broken by index.
  assert np.asarray(small).tolist() == [False, False, True, False, False, True, True, True]
  alive3 = jnp.array([True, True, False, True, False, False, False, False])
  assert np.asarray(bnas.split_small(w, alive3)).tolist() == [
      False, True, False, True, False, False, False, False]   # n = 3 -> |M_S| = 2
  alive2 = jnp.zeros(8, bool).at[4].set(True).at[0].set(True)
  assert np.asarray(bnas.split_small(w, alive2)).tolist() == np.asarray(alive2).tolist()
  alive1 = jnp.zeros(8, bool).at[4].set(True)
  assert np.asarray(bnas.split_small(w, alive1)).tolist() == np.asarray(alive1).tolist()


def test_performance_scores_protect_large_half():
  small = jnp.array([True, True, True, False, False])
  alive = jnp.array([True, True, True, True, False])
  acc_sum = jnp.array([0.9 * 3, 0.1 * 3, 0.5 * 3, 0.0, 0.0])
  acc_count = jnp.array([3, 3, 3, 0, 0])
  s = np.asarray(bnas.performance_scores(acc_sum, acc_count, small, alive))
  ref = np.exp([0.9, 0.1, 0.5]) / np.exp([0.9, 0.1, 0.5]).sum()
  np.testing.assert_allclose(s[:3], ref, rtol=1e-6)
  np.testing.assert_allclose(s[3], 0.5 * (ref.max() + ref.mean()), rtol=1e-6)
  assert s[4] == 0.0
  # The M_L op is never the argmin while M_S has a worse op.
  assert int(np.argmin(np.where(np.asarray(alive), s, np.inf))) == 1


def test_sample_small_covers_each_op_once_per_round():
  small = jnp.zeros((3, 8), bool).at[:, :4].set(True)
  count = jnp.zeros((3, 8), jnp.int32)
  seen = []
  for i in range(4):
    ops = bnas.sample_small(jax.random.key(i), small, count)
    count = count + jax.nn.one_hot(ops, 8, dtype=jnp.int32)
    seen.append(np.asarray(ops))
  assert np.all(np.asarray(count)[:, :4] == 1) and np.all(np.asarray(count)[:, 4:] == 0)


SEEDS = 128  # searches per rule, vectorised: the run time is the compilation, not the seeds


def _shared_reward_search(rule, seeds, noise=0.02):
  """Full 8 -> 1 op search of the DARTS cell pair (2 cell types x 14 edges x 8 ops) through the
  method's own hooks, with the reward BNAS really gets: the accuracy of one sampled network, a
  single scalar credited to the op it used on every one of its 28 edges.

  Op k of edge e has a hidden quality q[e, k] (one best op at 0.9, the others U(0.1, 0.6)); the
  sampled network scores the mean quality of its ops plus N(0, noise). Each seed runs twice in one
  compiled program: with that reward and, as the control, with a reward that ignores the ops
  (the mean quality of the edge table plus the same noise). The alphas are random, uninformative: the M_S / M_L split
  protects arbitrary ops and the abandonment rule alone has to find the best op. Each reduction
  phase is one epoch of 12 sampled networks (T = 3 rounds over |M_S| <= 4), credited exactly as
  `BNAS.train_step` does.

  Returns:
    (fraction of edges whose surviving op is the true best, per seed, with the real reward and
    with the control; alive ops per edge after every phase, (seeds, 7, 2, 14)).
  """
  cfg = tiny_config("bnas", steps=4, multiplier=4, primitives=tuple(search.space.PRIMITIVES),
                    abandon_rule=rule, reduce_start=0, reduce_every=1, num_reductions=7)
  m = bnas.BNAS(cfg, steps_per_epoch=12, total_steps=84)
  r = np.random.default_rng(7)
  quality = r.uniform(0.1, 0.6, (seeds, 2, 14, 8))
  best = r.integers(0, 8, (seeds, 2, 14))
  np.put_along_axis(quality, best[..., None], 0.9, -1)
  alphas = r.normal(size=(seeds, 2, 14, 8)).astype(np.float32)
  betas = np.zeros((seeds, 2, 14), np.float32)

  def one_search(alpha, beta, q, key, op_dependent):
    arch = {"alphas_normal": alpha[0], "alphas_reduce": alpha[1],
            "betas_normal": beta[0], "betas_reduce": beta[1]}
    state = _fake_state(m, {"arch": arch})

    def sample_and_credit(i, carry):
      state, key = carry
      key, k_ops, k_noise = jax.random.split(key, 3)
      ops = m.sample_ops(state, k_ops)
      q_used = jnp.take_along_axis(q, ops[..., None], -1)[..., 0]
      acc = jnp.where(op_dependent, jnp.mean(q_used), jnp.mean(q)) + noise * jax.random.normal(
          k_noise)
      extra = dict(state.extra)
      used = jax.nn.one_hot(ops, 8, dtype=bool)
      extra["acc_sum"] = extra["acc_sum"] + used * acc
      extra["acc_count"] = extra["acc_count"] + used.astype(jnp.int32)
      extra["bandit"] = bandit_lib.update(extra["bandit"], ops, acc, m.bandit_lambda)
      return state.replace(extra=extra), key

    def phase(carry, epoch):
      state, key = carry
      state = m.on_epoch_start(state, epoch)
      state, key = jax.lax.fori_loop(0, 12, sample_and_credit, (state, key))
      state = m.on_epoch_end(state, epoch)
      return (state, key), state.extra["bandit"].num_alive()

    (state, _), num_alive = jax.lax.scan(phase, (state, key), jnp.arange(7, dtype=jnp.int32))
    return bandit_lib.best_ops(state.extra["bandit"]), num_alive

  twice = lambda a: jnp.asarray(np.concatenate([a, a]))
  keys = jax.random.split(jax.random.key(0), 2 * seeds)
  op_dependent = jnp.arange(2 * seeds) < seeds
  final, num_alive = jax.jit(jax.vmap(one_search))(
      twice(alphas), twice(betas), twice(quality.astype(np.float32)), keys, op_dependent)
  survived = (np.asarray(final) == np.concatenate([best, best])).mean(axis=(1, 2))
  return survived[:seeds], survived[seeds:], np.asarray(num_alive)


def test_performance_rule_with_the_shared_reward_beats_random_abandonment():
  """The conference rule (M_S sampling, softmax scores, likelihood S <- S / 2 + s, argmin) with
  the real shared reward: the true best op survives on about 3 edges in 8 (measured over these
  128 seeds: mean 0.38, per seed 0.25-0.61), 3x chance, while a reward that ignores the ops
  leaves chance (0.12). A per-edge reward would keep it on ~99% of the edges: with one scalar per
  network, an edge's op moves the reward by only 1/28 of its quality gap."""
  survived, control, num_alive = _shared_reward_search("performance", seeds=SEEDS)
  # One op abandoned per edge per phase: 7, 6, ..., 1 alive.
  np.testing.assert_array_equal(num_alive, np.broadcast_to(
      np.arange(7, 0, -1)[None, :, None, None], num_alive.shape))
  assert survived.mean() >= 0.3, survived
  assert control.mean() <= 0.18, control
  assert survived.mean() >= control.mean() + 0.15, (survived.mean(), control.mean())


def test_ucb_rule_with_the_shared_reward_beats_random_abandonment():
  """1-bit BNAS rule (journal arXiv 2009.04247: uniform sampling, EMA m, abandon argmin
  m + sqrt(2 ln N / n)) with the shared reward: only a little above chance (measured over these
  128 seeds: mean 0.17, per seed 0.00-0.43, against 0.12 for the control). Accuracies differ between ops by ~0.01 once
  shared by 28 edges, while the radius sqrt(2 ln N / n) is ~1: the pull counts decide most
  abandonments."""
  survived, control, num_alive = _shared_reward_search("ucb", seeds=SEEDS)
  assert num_alive[:, -1].max() == 1
  assert control.mean() <= 0.18, control
  assert survived.mean() >= control.mean() + 0.025, (survived.mean(), control.mean())


def _fake_state(method, params):
  extra = method.init_extra(params)
  return TrainState.create(params=params, rng=jax.random.key(0), extra=extra)


def test_ucb_rule_removes_lowest_bound():
  cfg = tiny_config("bnas", abandon_rule="ucb", reduce_start=0, reduce_every=1,
                    num_reductions=3)
  m = bnas.BNAS(cfg, steps_per_epoch=2, total_steps=8)
  arch = {"alphas_normal": jnp.zeros((5, 4)), "alphas_reduce": jnp.zeros((5, 4)),
          "betas_normal": jnp.zeros(5), "betas_reduce": jnp.zeros(5)}
  state = _fake_state(m, {"arch": arch})
  state = m.on_epoch_start(state, jnp.int32(0))
  assert bool(state.extra["sampling_on"])
  # Rewards: op k always scores k / 4 (op 0 worst), each op pulled equally.
  b = state.extra["bandit"]
  for r in range(8):
    ops = jnp.full((2, 5), r % 4, jnp.int32)
    b = bandit_lib.update(b, ops, (r % 4) / 4.0, 0.7)
  state = state.replace(extra={**state.extra, "bandit": b})
  state = m.on_epoch_end(state, jnp.int32(0))
  alive = np.asarray(state.extra["bandit"].alive)
  assert not alive[..., 0].any() and alive[..., 1:].all()
  assert int(state.extra["removals"]) == 1
  # Not a reduction epoch: nothing removed.
  cfg2 = tiny_config("bnas", abandon_rule="ucb", reduce_start=0, reduce_every=2)
  m2 = bnas.BNAS(cfg2, steps_per_epoch=2, total_steps=8)
  s2 = m2.on_epoch_end(_fake_state(m2, {"arch": arch}), jnp.int32(0))
  assert int(s2.extra["removals"]) == 0


@methods.register("bnas_counting")
class CountingBNAS(bnas.BNAS):
  """BNAS that counts how often its jitted functions are traced."""
  traces = {"train_step": 0, "on_epoch_end": 0, "on_epoch_start": 0}

  def train_step(self, state, batch):
    CountingBNAS.traces["train_step"] += 1
    return super().train_step(state, batch)

  def on_epoch_end(self, state, epoch):
    CountingBNAS.traces["on_epoch_end"] += 1
    return super().on_epoch_end(state, epoch)

  def on_epoch_start(self, state, epoch):
    CountingBNAS.traces["on_epoch_start"] += 1
    return super().on_epoch_start(state, epoch)


def test_bnas_search_removes_ops_on_schedule_without_recompiling(tmp_path):
  for k in CountingBNAS.traces:
    CountingBNAS.traces[k] = 0
  cfg = tiny_config("bnas_counting", op_set="binary", reduce_start=1, reduce_every=1,
                    num_reductions=3, arch_start_epoch=1)
  cfg.num_epochs = 4
  out = loop.run(cfg, str(tmp_path))
  state = out["state"]
  # One trace each for the whole search: abandoning ops never recompiles.
  assert CountingBNAS.traces == {"train_step": 1, "on_epoch_end": 1, "on_epoch_start": 1}
  alive = np.asarray(state.extra["bandit"].alive)
  assert alive.shape == (2, 5, 4) and np.all(alive.sum(-1) == 1)
  assert int(state.extra["removals"]) == 3
  # Sampling ran in epochs 1-3 (2 steps each): bandit statistics updated 6 times.
  assert int(state.extra["bandit"].total) == 6
  assert int(state.extra["bandit"].count.sum()) == 6 * 2 * 5
  # Alive ops per edge as logged each epoch: 4, 4, 3, 2 (removals after epochs 1, 2, 3).
  lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  alive_log = [l["alive_ops"] for l in lines if l["split"] == "train"]
  assert alive_log == [4.0, 4.0, 3.0, 2.0]
  g = genotype_lib.from_json((tmp_path / "genotype.json").read_text())
  ops_alive = [[OPS4[i] for i in np.flatnonzero(e)][0] for e in alive[0]]
  for n in range(2):
    inputs = [j for _, j in g.normal[2 * n: 2 * n + 2]]
    assert len(set(inputs)) == 2
  # Every genotype edge is its edge's survivor: no abandoned op is ever retrained (`none` only
  # where a node has fewer than two edges with another survivor).
  offsets = [0, 2]
  for pos, (op, j) in enumerate(g.normal):
    edge = offsets[pos // 2] + j
    assert ops_alive[edge] == op
  report = json.loads((tmp_path / "final_report.json").read_text())
  assert report["removals"] == 3 and all(len(e) == 1 for e in report["alive_normal"])
  assert search.num_edges(2) == len(report["alive_reduce"])
