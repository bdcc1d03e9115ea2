"""BNAS: M_S / M_L split, scores, abandonment schedule without recompiles, bandit statistics."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress import methods
from jaxcompress.methods import bnas
from jaxcompress.nas import bandit as bandit_lib
from jaxcompress.nas import genotype as genotype_lib
from jaxcompress.nas import search
from jaxcompress.train import loop
from jaxcompress.train.state import TrainState

from configs import common
from jaxcompress.methods import pc_darts

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


def test_abandonment_keeps_the_true_best_op():
  """Synthetic 14 edges x 8 ops: op accuracy = known mean + noise; the best op survives."""
  rng = np.random.default_rng(0)
  survived = 0
  seeds = 20
  for seed in range(seeds):
    r = np.random.default_rng(seed)
    means = r.uniform(0.1, 0.6, (14, 8))  # large gap: one clearly best op per edge
    best = r.integers(0, 8, 14)
    means[np.arange(14), best] = 0.9
    state = bandit_lib.BanditState.create((14,), 8)
    likelihood = jnp.zeros((14, 8))
    alpha_w = jax.nn.softmax(jnp.asarray(r.normal(size=(14, 8))), -1)  # uninformative alphas
    key = jax.random.key(seed)
    for _ in range(7):
      small = bnas.split_small(alpha_w, state.alive)
      acc_sum = jnp.zeros((14, 8))
      acc_count = jnp.zeros((14, 8), jnp.int32)
      for _ in range(3 * 4):  # T = 3 rounds over |M_S| <= 4
        key, sub = jax.random.split(key)
        ops = bnas.sample_small(sub, small, acc_count)
        # A sampled network's accuracy: mean of its ops' qualities + noise, credited to all.
        acc = means[np.arange(14), np.asarray(ops)] + rng.normal(0, 0.02, 14)
        used = jax.nn.one_hot(ops, 8)
        acc_sum = acc_sum + used * jnp.asarray(acc)[:, None]
        acc_count = acc_count + used.astype(jnp.int32)
      s = bnas.performance_scores(acc_sum, acc_count, small, state.alive)
      likelihood = jnp.where(state.alive, 0.5 * likelihood + s, likelihood)
      before = np.asarray(state.num_alive())
      state = bandit_lib.remove_by_score(state, likelihood)
      assert np.all(np.asarray(state.num_alive()) == np.maximum(before - 1, 1))
    final = np.asarray(bandit_lib.best_ops(state))
    survived += np.mean(final == best)
  assert survived / seeds >= 0.95


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
  # Every genotype edge uses its edge's survivor (unless that is `none`).
  offsets = [0, 2]
  for pos, (op, j) in enumerate(g.normal):
    edge = offsets[pos // 2] + j
    assert ops_alive[edge] == op or ops_alive[edge] == "none"
  report = json.loads((tmp_path / "final_report.json").read_text())
  assert report["removals"] == 3 and all(len(e) == 1 for e in report["alive_normal"])
  assert search.num_edges(2) == len(report["alive_reduce"])
