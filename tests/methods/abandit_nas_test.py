"""Tests for jaxcompress.methods.abandit_nas: bandit schedule, tiny search, adversarial training."""
from __future__ import annotations

import json
import os
import tempfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl.testing import absltest

from configs import common
from configs.abandit_nas import _shared
from jaxcompress import methods
from jaxcompress.methods import abandit_nas
from jaxcompress.nas import abandit_network as an
from jaxcompress.nas import edge_layout
from jaxcompress.train import loop, one_shot
from jaxcompress.train.state import TrainState


def _search_config(primitives=("max_pool_3x3", "skip_connect"), T=1, epochs=None):
  c = common.base_config()
  c.method = "abandit_nas"
  c.data.name = "synthetic"
  c.data.source_kwargs = {"num_examples": 64, "image_shape": (8, 8, 1), "num_classes": 4}
  c.data.mean = (0.0,)
  c.data.std = (1.0,)
  c.data.search_split = 0.5
  c.data.batch_size = 16
  c.data.eval_batch_size = 16
  c.model.name = "abandit_search"
  c.model.num_classes = 4
  c.model.kwargs = {"mean": (0.5,), "std": (0.5,)}
  c.nas = ml_collections.ConfigDict(dict(C=4, layers=2, num_cells=2, primitives=primitives,
                                         affine=False, T=T, lam=0.7, reward="clean",
                                         reward_steps=-1))
  c.adv = _shared.adv_block(epsilon=0.1, step_size=0.05, num_steps=1,
                            eval_attacks=("clean", "pgd1"))
  c.num_epochs = epochs or abandit_nas.num_search_samples(len(primitives), T)
  c.num_devices = 1
  c.log_every = 1
  c.progress = "none"
  c.async_checkpoint = False
  c.optim.learning_rate = 0.05
  return c


class ScheduleTest(absltest.TestCase):

  def test_registry_and_sample_count(self):
    self.assertIs(methods.get("abandit_nas"), abandit_nas.ABanditNAS)
    self.assertIs(methods.get("adversarial"), abandit_nas.AdversarialTraining)
    self.assertEqual(abandit_nas.num_search_samples(9, 3), 132)
    self.assertEqual(abandit_nas.parse_attack("pgd20"), ("pgd", 20))
    with self.assertRaisesRegex(Exception, "pgd<k>"):
      abandit_nas.parse_attack("cw")

  def test_hook_tries_every_arm_then_abandons_every_k_times_t_samples(self):
    prims = ("max_pool_3x3", "skip_connect", "avg_pool_3x3")
    t = 2
    method = abandit_nas.ABanditNAS(_search_config(prims, T=t), steps_per_epoch=1)
    state = TrainState.create(params={}, rng=jax.random.key(0),
                              extra=method.init_extra(jax.random.key(0)))
    traces = {"n": 0}

    def hook(s, epoch):
      traces["n"] += 1
      return method.on_epoch_end(s, epoch)

    hook = jax.jit(hook)
    rewards = np.random.default_rng(0).uniform(size=100)
    alive_history = []
    for epoch in range(abandit_nas.num_search_samples(3, t)):   # 2 * (2 + 3) = 10 samples
      ops = np.asarray(state.extra["ops"])
      bandit = state.extra["bandit"]
      alive = np.asarray(bandit.alive)
      # The sampled op is alive on every edge; untried arms go first.
      self.assertTrue(np.take_along_axis(alive, ops[..., None], -1).all())
      if epoch < 3:
        np.testing.assert_array_equal(
            np.take_along_axis(np.asarray(bandit.count), ops[..., None], -1), 0)
      extra = dict(state.extra, reward_sum=jnp.float32(rewards[epoch] * 10),
                   reward_count=jnp.float32(10))
      state = hook(state.replace(extra=extra, step=state.step + 1), jnp.int32(epoch))
      alive_history.append(np.asarray(state.extra["bandit"].num_alive()).copy())
      if epoch == 0:   # the first reward initialises m of every sampled arm
        b = state.extra["bandit"]
        used = np.asarray(b.count) == 1
        np.testing.assert_allclose(np.asarray(b.mean)[used], rewards[0], rtol=1e-6)
    alive_counts = [int(a.max()) for a in alive_history]
    self.assertTrue(all(int(a.min()) == int(a.max()) for a in alive_history))
    # K * T = 6 samples with 3 arms, then 2 * 2 = 4 with 2 arms.
    self.assertEqual(alive_counts, [3] * 5 + [2] * 4 + [1])
    b = state.extra["bandit"]
    self.assertEqual(int(b.total), 10)
    self.assertEqual(int(state.extra["removals"]), 2)
    self.assertTrue((np.asarray(b.count).sum(-1) == 10).all())
    self.assertEqual(traces["n"], 1)  # the jitted hook never recompiles as arms disappear


class SupernetInitTest(absltest.TestCase):

  def test_jitted_and_eager_initialisation_agree(self):
    # Small unrolled supernets are initialised by one jitted call, large ones op by op: same
    # draws. (With edge loops, the default, every supernet's init is jitted.)
    method = abandit_nas.ABanditNAS(_search_config(), steps_per_epoch=2)
    method.model = method.model.clone(scan_edges=False)
    batch = {"image": jnp.zeros((2, 8, 8, 1)), "val_image": jnp.zeros((2, 8, 8, 1))}
    self.assertLessEqual(2 * an.num_edges() * 2, one_shot.JIT_INIT_MAX_OPS)
    jitted = method.make_variables(jax.random.key(0), batch)
    old = one_shot.JIT_INIT_MAX_OPS
    one_shot.JIT_INIT_MAX_OPS = 0
    try:
      eager = method.make_variables(jax.random.key(0), batch)
    finally:
      one_shot.JIT_INIT_MAX_OPS = old
    self.assertEqual(jax.tree.structure(jitted), jax.tree.structure(eager))
    for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager)):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)

  def test_edge_loops_draw_the_unrolled_he_fout_weights(self):
    # The he_fout redraw runs over the per-edge layout: loops and unrolled cells get the same
    # convolution and linear weights (the BN and Gabor parameters keep their own draws).
    loops = abandit_nas.ABanditNAS(_search_config(), steps_per_epoch=2)
    unrolled = abandit_nas.ABanditNAS(_search_config(), steps_per_epoch=2)
    unrolled.model = unrolled.model.clone(scan_edges=False)
    batch = {"image": jnp.zeros((2, 8, 8, 1)), "val_image": jnp.zeros((2, 8, 8, 1))}
    params, _ = loops.make_variables(jax.random.key(0), batch)
    want, _ = unrolled.make_variables(jax.random.key(0), batch)
    layout = dict(steps=an.STEPS, reduction_layers=(), cell_loops=loops.model.cell_loops())
    got = jax.tree_util.tree_flatten_with_path(edge_layout.unstack(params, **layout))[0]
    want = jax.tree_util.tree_flatten_with_path(want)[0]
    self.assertEqual([p for p, _ in got], [p for p, _ in want])
    kernels = 0
    for (path, a), (_, b) in zip(got, want):
      if getattr(path[-1], "key", "") == "kernel":
        np.testing.assert_array_equal(a, b)
        kernels += 1
    self.assertGreater(kernels, 10)


class SearchRunTest(absltest.TestCase):

  def test_tiny_search_removes_arms_and_reports_genotype(self):
    workdir = tempfile.mkdtemp()
    out = loop.run(_search_config(), workdir)
    state = out["state"]
    b = state.extra["bandit"]
    # K = 2, T = 1: both arms tried once (2 epochs), then the lower-UCB arm abandoned.
    np.testing.assert_array_equal(np.asarray(b.num_alive()), 1)
    np.testing.assert_array_equal(np.asarray(b.count), 1)
    self.assertEqual(int(b.total), 2)
    self.assertTrue((np.asarray(b.mean) > 0).any())
    report = json.load(open(os.path.join(workdir, "final_report.json")))
    self.assertTrue(report["search_complete"])
    self.assertEqual(report["samples"], 2)
    self.assertEqual(report["removals"], 1)
    g = an.genotype_from_dict(report["genotype"])
    # genotype.json (what the evaluation configs read) holds the same genotype.
    self.assertEqual(an.get_genotype(os.path.join(workdir, "genotype.json")), g)
    self.assertEqual(g.num_cells, 2)
    for cell in g.cells:
      self.assertLen(cell, 4)
      for j, (op, idx) in enumerate(cell, start=1):
        self.assertIn(op, ("max_pool_3x3", "skip_connect"))
        self.assertLess(idx, j)
    # The surviving op is the arm that was kept alive.
    alive_ops = np.argmax(np.asarray(b.alive), -1)
    edges = an.edge_list()
    for k, cell in enumerate(g.cells):
      for j, (op, idx) in enumerate(cell, start=1):
        self.assertEqual(op, ("max_pool_3x3", "skip_connect")[alive_ops[k, edges.index((idx, j))]])
    lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
    train = [l for l in lines if l["split"] == "train"]
    self.assertTrue(all("val_accuracy" in l and "adv_accuracy" in l for l in train))
    self.assertIn("pgd1_accuracy", out["eval"])

  def test_search_needs_validation_split(self):
    c = _search_config()
    c.data.search_split = 0.0
    with self.assertRaisesRegex(Exception, "search_split"):
      loop.run(c, tempfile.mkdtemp())


class AdversarialTrainingTest(absltest.TestCase):

  def test_training_eval_metrics_and_robust_table(self):
    c = common.base_config()
    c.method = "adversarial"
    c.data.name = "synthetic"
    c.data.source_kwargs = {"num_examples": 96, "image_shape": (8, 8, 1), "num_classes": 4}
    c.data.mean = (0.0,)
    c.data.std = (1.0,)
    c.data.batch_size = 32
    c.data.eval_batch_size = 32
    c.model.name = "abandit_network"
    c.model.num_classes = 4
    genotype = an.make_genotype([[("skip_connect", 0), ("conv_3x3", 1), ("max_pool_3x3", 0),
                                  ("avg_pool_3x3", 2)]])
    c.model.kwargs = ml_collections.ConfigDict(dict(
        genotype=an.genotype_to_json(genotype), C=4, layers=3, auxiliary=False,
        manual_denoising=False, mean=(0.5,), std=(0.5,)))
    c.adv = _shared.adv_block(epsilon=0.05, step_size=0.02, num_steps=2,
                              eval_attacks=("clean", "pgd7"), robust_eval_at_end=True)
    c.num_epochs = 4
    c.num_devices = 1
    c.log_every = 3
    c.eval_every = 10 ** 6
    c.progress = "none"
    c.async_checkpoint = False
    c.optim.learning_rate = 0.05
    workdir = tempfile.mkdtemp()
    out = loop.run(c, workdir)
    ev = out["eval"]
    self.assertGreater(ev["accuracy"], 0.4)          # learnt (chance = 0.25)
    self.assertLessEqual(ev["pgd7_accuracy"], ev["clean_accuracy"] + 1e-9)
    report = json.load(open(os.path.join(workdir, "final_report.json")))
    table = report["robust_eval"]
    self.assertEqual(list(table), list(abandit_nas.ROBUST_TABLE))
    self.assertAlmostEqual(table["clean"], ev["clean_accuracy"], places=6)
    for name in ("fgsm", "mi_fgsm", "pgd7", "pgd20"):
      self.assertLessEqual(table[name], table["clean"] + 1e-9, name)
    self.assertLessEqual(table["pgd20"], table["fgsm"] + 0.1)
    # The standalone table restores the checkpoint and writes the files.
    results = abandit_nas.robust_eval(c, workdir, attack_names=("clean", "fgsm"))
    self.assertAlmostEqual(results["clean"], table["clean"], places=6)
    self.assertAlmostEqual(results["fgsm"], table["fgsm"], places=6)
    for name in ("robust_eval.json", "robust_eval.md"):
      self.assertTrue(os.path.exists(os.path.join(workdir, name)), name)
    self.assertIn("| clean | fgsm |", open(os.path.join(workdir, "robust_eval.md")).read())


if __name__ == "__main__":
  absltest.main()
