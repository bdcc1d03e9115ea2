"""MEB-Net methods on tiny experts (CPU, seconds): the brainstorming step against a hand
composition of `reid.meb_loss` + EMA, the per-epoch host hook on tiny features, the pretraining
step, the re-ID head, the views transform, the release's pretraining schedule and the report."""
from __future__ import annotations

import json
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import common
from jaxcompress import reid
from jaxcompress.data import transforms
from jaxcompress.errors import ConfigError
from jaxcompress.methods import mebnet, mebnet_cluster, mebnet_nets, mebnet_source
from jaxcompress.optim import builder

SIZE = (16, 8)
EXPERTS = (
    dict(name="reid_resnet", kwargs=dict(block="basic", stage_sizes=(1,), width=4),
         head=dict(num_features=8)),
    dict(name="densenet121", kwargs=dict(growth_rate=4, block_config=(1,), num_init_features=4),
         head=dict(num_features=8)),
)


def _config(**mebnet_kwargs):
  mebnet_kwargs = {"experts": EXPERTS, "num_clusters": 4, **mebnet_kwargs}
  c = common.base_config()
  c.method = "mebnet"
  c.data.name = "synthetic_reid"
  c.data.source_kwargs = ml_collections.ConfigDict(dict(
      domain="target", num_ids=4, images_per_id=4, num_test_ids=4, image_size=SIZE))
  # SGD with momentum: the comparison with a hand step is not blurred by Adam's normalisation of
  # tiny gradients, and the momentum buffer shows the per-epoch optimizer reset.
  c.optim = ml_collections.ConfigDict(dict(name="sgd", learning_rate=0.1, momentum=0.9,
                                           weight_decay=5e-4, schedule="constant"))
  c.mebnet = ml_collections.ConfigDict(mebnet_kwargs)
  return c


def _batch(seed=0, n=8, views=2):
  rng = np.random.default_rng(seed)
  return {"image": jnp.asarray(rng.normal(size=(n, views, *SIZE, 3)), jnp.float32),
          "index": jnp.asarray(rng.permutation(16)[:n], jnp.int32),
          "label": jnp.zeros(n, jnp.int32), "mask": jnp.ones(n)}


def _perturbed(tree, seed):
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return treedef.unflatten([x + 0.05 * jax.random.normal(k, x.shape)
                            for x, k in zip(leaves, keys)])


@pytest.fixture(scope="module")
def step_case():
  m = mebnet.MEBNet(_config(), steps_per_epoch=4, total_steps=8)
  state = jax.jit(m.init)(jax.random.key(0), _batch())
  # A state mid-run: teachers apart from their students, step 3, unequal authorities, labels
  # with two instances of each of the 4 clusters in the batch.
  teachers = jax.jit(lambda t: {n: {**v, "params": _perturbed(v["params"], i)}
                                for i, (n, v) in enumerate(t.items())})(state.extra["teachers"])
  labels = jnp.asarray(np.arange(16) % 4, jnp.int32)
  state = state.replace(step=jnp.asarray(3, jnp.int32), extra={
      **state.extra, "teachers": teachers, "pseudo_labels": labels,
      "authority": jnp.asarray([1.4, 0.6], jnp.float32)})
  batch = _batch(1)
  new_state, metrics = jax.jit(m.train_step)(state, batch)
  return m, state, batch, new_state, metrics


def _hand_step(m, state, batch):
  """meb_loss of every student and teacher on its own view, one SGD step, EMA by hand."""
  targets = state.extra["pseudo_labels"][batch["index"]]
  views = [batch["image"][:, e] for e in range(2)]
  teacher_out = [m.nets[n].apply(state.extra["teachers"][n], views[e], train=True,
                                 mutable=["batch_stats"], rngs={"dropout": state.step_rng(0x7E, e)})
                 for e, n in enumerate(m.names)]

  def hand_loss(params):
    outs = [m.nets[n].apply({"params": params[n],
                             "batch_stats": state.model_state["batch_stats"][n]}, views[e],
                            train=True, mutable=["batch_stats"],
                            rngs={"dropout": state.step_rng(0x57, e)})
            for e, n in enumerate(m.names)]
    total, _ = reid.meb_loss(
        [o["logits"] for o, _ in outs], [o["pooled"] for o, _ in outs],
        [o["logits"] for o, _ in teacher_out], [o["pooled"] for o, _ in teacher_out],
        targets, jnp.asarray([1.4, 0.6]), 0.5, 0.8, 0.1)
    return total, [u["batch_stats"] for _, u in outs]

  (loss, stats), grads = jax.value_and_grad(hand_loss, has_aux=True)(state.params)
  # SGD, momentum 0.9 from an empty buffer, coupled weight decay 5e-4, lr 0.1.
  params = jax.tree.map(lambda p, g: p - 0.1 * (g + 5e-4 * p), state.params, grads)
  momentum = 1 - 1 / (3 + 1)  # min(1 - 1/(t + 1), 0.999) at t = 3
  teachers = {n: jax.tree.map(lambda t, s: momentum * t + (1 - momentum) * s,
                              state.extra["teachers"][n]["params"], params[n])
              for n in m.names}
  return loss, params, stats, teachers, [u["batch_stats"] for _, u in teacher_out]


def test_step_is_meb_loss_then_one_optimizer_step_then_ema(step_case):
  m, state, batch, new_state, metrics = step_case
  loss, params, stats, teachers, teacher_stats = jax.jit(
      lambda s, b: _hand_step(m, s, b))(state, batch)
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)  # noqa: E731
  np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-5)
  np.testing.assert_allclose(metrics["ema_momentum"], 0.75, rtol=1e-6)
  jax.tree.map(close, new_state.params, params)
  for e, n in enumerate(m.names):
    jax.tree.map(close, new_state.model_state["batch_stats"][n], stats[e])
    jax.tree.map(close, new_state.extra["teachers"][n]["params"], teachers[n])
    # The teachers' BN statistics come from their own training-mode forwards.
    jax.tree.map(close, new_state.extra["teachers"][n]["batch_stats"], teacher_stats[e])
  assert int(new_state.step) == 4
  np.testing.assert_array_equal(new_state.extra["pseudo_labels"], state.extra["pseudo_labels"])


def test_predict_serves_the_chosen_teacher_or_student(step_case):
  m, state, batch, _, _ = step_case
  name = m.names[1]
  for teacher in (True, False):
    m.opts.eval_expert, m.opts.eval_teacher = 1, teacher
    variables = (state.extra["teachers"][name] if teacher else
                 {"params": state.params[name],
                  "batch_stats": state.model_state["batch_stats"][name]})
    got, want = jax.jit(lambda s, b, v: (
        m.predict(s, b)["features"],
        m.nets[name].apply(v, b["image"][:, 0], train=False)["feature"]))(state, batch, variables)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(want, axis=1), 1.0, rtol=1e-5)
  m.opts.eval_expert, m.opts.eval_teacher = 0, True


def _blob_features(seed, spread, n_per=5, k=4, d=8):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(k, d)) * 3
  truth = np.repeat(np.arange(k), n_per)
  return (centres[truth] + spread * rng.normal(size=(k * n_per, d))).astype(np.float32), truth


def _np_j(x, labels):
  x = np.asarray(x, np.float64)
  ids = sorted(set(labels.tolist()))
  mus = [x[labels == c].mean(0) for c in ids]
  within = sum(((x[labels == c] - mu) ** 2).sum() for c, mu in zip(ids, mus))
  bar = np.mean(mus, axis=0)
  between = sum((labels == c).sum() * ((mu - bar) ** 2).sum() for c, mu in zip(ids, mus))
  return between / within


def _same_partition(a, b):
  return all(len(set(b[a == c])) == 1 for c in set(a)) and len(set(a)) == len(set(b))


def test_targets_on_separated_blobs():
  tight, truth = _blob_features(0, 0.05)
  loose = tight + np.random.default_rng(1).normal(size=tight.shape).astype(np.float32) * 0.6
  result = mebnet_cluster.brainstorm_targets([tight, loose], 4, jax.random.key(0), iterations=20)
  assert _same_partition(result.labels, truth)
  consensus = (tight + loose) / 2
  centres = np.stack([consensus[result.labels == c].mean(0) for c in range(4)])
  want = centres / np.linalg.norm(centres, axis=1, keepdims=True)
  for w in result.classifiers:
    np.testing.assert_allclose(w, want, rtol=1e-4, atol=1e-6)
  # J of each expert's own clustering (the true blobs here), authority E * J / sum(J).
  j = np.asarray([_np_j(tight, truth), _np_j(loose, truth)])
  np.testing.assert_allclose(result.scatter, j, rtol=1e-4)
  np.testing.assert_allclose(result.authority, 2 * j / j.sum(), rtol=1e-4)
  assert result.authority[0] > 1 > result.authority[1]
  own = mebnet_cluster.brainstorm_targets([tight, loose], 4, jax.random.key(0), iterations=20,
                                          centroids="own", scatter=False)
  for f, w in zip([tight, loose], own.classifiers):
    mu = np.stack([f[own.labels == c].mean(0) for c in range(4)])
    np.testing.assert_allclose(w, mu / np.linalg.norm(mu, axis=1, keepdims=True), rtol=1e-4)
  np.testing.assert_array_equal(own.authority, [1.0, 1.0])
  with pytest.raises(ConfigError, match="same"):
    mebnet_cluster.brainstorm_targets([tight, tight[:, :4]], 4, jax.random.key(0))


class _Writer:
  def __init__(self):
    self.rows = []

  def write(self, step, split, metrics):
    self.rows.append((step, split, dict(metrics)))


def test_epoch_start_hook_writes_labels_classifiers_authority_and_resets_optimizer(step_case):
  m, _, _, new_state, _ = step_case
  truth = np.repeat(np.arange(4), 4)
  f0, _ = _blob_features(2, 0.05, n_per=4)
  f1 = f0 + np.random.default_rng(3).normal(size=f0.shape).astype(np.float32) * 0.5
  calls = []

  def map_batches(fn, state, split):
    calls.append(split)
    return {"expert0": f0, "expert1": f1}

  writer = _Writer()
  context = types.SimpleNamespace(map_batches=map_batches, writer=writer, workdir=None,
                                  train_source=types.SimpleNamespace(labels=truth))
  momentum = lambda s: jax.tree.leaves(s.opt_state["model"])  # noqa: E731
  assert max(float(jnp.abs(x).max()) for x in momentum(new_state)) > 0
  state = m.on_epoch_start(new_state, 1, context)
  assert calls == ["train"]
  want = mebnet_cluster.brainstorm_targets([f0, f1], 4,
                                           jax.random.fold_in(jax.random.key(0), 1))
  np.testing.assert_array_equal(state.extra["pseudo_labels"], want.labels)
  assert _same_partition(np.asarray(state.extra["pseudo_labels"]), truth)
  np.testing.assert_allclose(state.extra["authority"], want.authority, rtol=1e-6)
  for n in m.names:
    for tree in (state.params[n], state.extra["teachers"][n]["params"]):
      np.testing.assert_allclose(tree["classifier"]["kernel"], want.classifiers[0].T, rtol=1e-6)
  assert all(float(jnp.abs(x).max()) == 0 for x in momentum(state))
  (_, split, logged), = writer.rows
  assert split == "cluster" and logged["nmi"] == pytest.approx(1.0)
  assert logged["authority_expert0"] > logged["authority_expert1"]


def test_epoch_end_hook_scores_every_expert(step_case, tmp_path):
  m, _, _, state, _ = step_case
  m.opts.expert_eval_splits = ("query", "gallery")
  ids, cams = np.asarray([0, 1, 2]), np.asarray([0, 0, 0])
  good = np.eye(3, dtype=np.float32)
  outputs = {"query": {"expert0": good, "expert1": good[[1, 0, 2]], "label": ids, "camera": cams},
             "gallery": {"expert0": good, "expert1": good, "label": ids, "camera": cams + 1}}
  context = types.SimpleNamespace(map_batches=lambda fn, s, split: outputs[split],
                                  writer=_Writer(), workdir=str(tmp_path))
  m.on_epoch_end(state, 0, context)
  m.opts.expert_eval_splits = ()
  row = json.loads((tmp_path / mebnet.EXPERTS_FILE).read_text())
  assert row["expert0"] == {"mAP": 1.0, "rank1": 1.0}
  assert row["expert1"]["rank1"] == pytest.approx(1 / 3)


def test_source_step_is_label_smoothed_ce_plus_soft_triplet_and_target_moves_bn_only():
  c = _config()
  c.method = "mebnet_source"
  c.model = ml_collections.ConfigDict(dict(EXPERTS[0], num_classes=4))
  m = mebnet_source.MEBNetSource(c, steps_per_epoch=2, total_steps=4)
  batch = {k: v[:, 0] if k == "image" else v for k, v in _batch(2).items()}
  batch["label"] = jnp.asarray(np.arange(8) % 4, jnp.int32)
  batch["target/image"] = batch["image"][::-1] * 2.0 + 1.0
  state = jax.jit(m.init)(jax.random.key(1), batch)
  new_state, metrics = jax.jit(m.train_step)(state, batch)

  def hand(state):
    net, stats = m.net, state.model_state["batch_stats"]

    def loss_fn(params):
      out, upd = net.apply({"params": params, "batch_stats": stats}, batch["image"], train=True,
                           mutable=["batch_stats"], rngs={"dropout": state.step_rng(0xD50)})
      return (reid.cross_entropy_label_smooth(out["logits"], batch["label"], 0.1)
              + reid.soft_triplet_loss(out["pooled"], batch["label"], margin=0.0)), upd

    (loss, upd), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    # The target batch: a training-mode forward after the source one, no loss (BN only).
    _, upd = net.apply({"params": state.params, **upd}, batch["target/image"], train=True,
                       mutable=["batch_stats"], rngs={"dropout": state.step_rng(0xD51)})
    params = jax.tree.map(lambda p, g: p - 0.1 * (g + 5e-4 * p), state.params, grads)
    return loss, params, upd["batch_stats"]

  loss, params, stats = jax.jit(hand)(state)
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)  # noqa: E731
  np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-5)
  jax.tree.map(close, new_state.params, params)
  jax.tree.map(close, new_state.model_state["batch_stats"], stats)
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                       state.model_state["batch_stats"], stats)
  assert max(jax.tree.leaves(moved)) > 1e-3


def test_reid_head_and_last_stride():
  net = mebnet_nets.build_net(dict(name="reid_resnet", kwargs=dict(
      block="bottleneck", stage_sizes=(1, 1), width=4, last_stride=1),
      head=dict(duplicate=True)), num_classes=3)
  x = jax.random.normal(jax.random.key(0), (4, 32, 16, 3))
  variables = jax.jit(net.init)(jax.random.key(1), x)
  assert "bias" not in variables["params"]["feat_bn"]  # the release freezes the BN bias at 0
  assert "bias" not in variables["params"]["classifier"]
  assert float(jnp.std(variables["params"]["classifier"]["kernel"])) < 3e-3
  out = jax.jit(net.apply)(variables, x)
  assert out["pooled"].shape == (4, 64)  # duplicated 4 * (2 * width) bottleneck channels
  stats = variables["batch_stats"]["feat_bn"]
  bn = (out["pooled"] - stats["mean"]) / jnp.sqrt(stats["var"] + 1e-5) * (
      variables["params"]["feat_bn"]["scale"])
  np.testing.assert_allclose(out["feature"], bn / jnp.linalg.norm(bn, axis=1, keepdims=True),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["logits"], bn @ variables["params"]["classifier"]["kernel"],
                             rtol=1e-4, atol=1e-6)
  trunk = mebnet_nets.ReidResNet(stage_sizes=(1, 1), width=4, block="basic", last_stride=1)
  strided = mebnet_nets.ReidResNet(stage_sizes=(1, 1), width=4, block="basic", last_stride=2)
  mid = lambda mdl: jax.eval_shape(  # noqa: E731
      lambda: mdl.init_with_output(jax.random.key(0), x, capture_intermediates=True)[1])
  assert mid(trunk)["intermediates"]["stage2_block0"]["__call__"][0].shape[1:3] == (8, 4)
  assert mid(strided)["intermediates"]["stage2_block0"]["__call__"][0].shape[1:3] == (4, 2)


def test_views_are_independent_draws_and_evaluation_keeps_the_image():
  image = np.arange(16 * 8 * 3, dtype=np.uint8).reshape(16, 8, 3)
  fn = transforms.get("mebnet_views", train=True, num_views=3,
                      augment=[("flip", {}), ("crop", {"padding": 2})])
  out = fn({"image": image, "label": 1}, np.random.default_rng(0))
  assert out["image"].shape == (3, 16, 8, 3) and out["image"].dtype == np.uint8
  assert out["label"] == 1
  assert len({v.tobytes() for v in out["image"]}) == 3
  again = fn({"image": image, "label": 1}, np.random.default_rng(0))
  np.testing.assert_array_equal(out["image"], again["image"])
  same = transforms.get("mebnet_views", train=False, num_views=3)({"image": image}, None)
  assert same["image"] is image


def test_pretraining_schedule_is_the_release_warmup_multistep():
  cfg = ml_collections.ConfigDict(dict(learning_rate=3.5e-4, schedule="mebnet_warmup_multistep",
                                       warmup_epochs=10, warmup_factor=0.01,
                                       milestones=(40, 70), gamma=0.1))
  schedule = builder.make_schedule(cfg, 80 * 3, 3)
  for epoch in (0, 1, 5, 9, 10, 39, 40, 69, 70, 79):
    factor = 0.01 * (1 - epoch / 10) + epoch / 10 if epoch < 10 else 1.0
    want = 3.5e-4 * factor * 0.1 ** sum(epoch >= m for m in (40, 70))
    for step in range(3 * epoch, 3 * epoch + 3):
      np.testing.assert_allclose(schedule(jnp.asarray(step)), want, rtol=1e-5)


def test_config_errors():
  with pytest.raises(ConfigError, match="two experts"):
    mebnet.MEBNet(_config(experts=EXPERTS[:1]))
  with pytest.raises(ConfigError, match="num_clusters"):
    mebnet.MEBNet(_config(num_clusters=17))
  c = _config()
  c.data.transform, c.data.flip = "mebnet_views", True
  with pytest.raises(ConfigError, match="one draw per view"):
    mebnet.MEBNet(c)


def test_report(tmp_path):
  def stage(name, value, eval_expert=None, rows=()):
    d = tmp_path / name
    d.mkdir()
    (d / "stage_done.json").write_text(json.dumps({"eval": {"target/mAP": value}}))
    if eval_expert is not None:
      (d / "config.json").write_text(json.dumps({"mebnet": {"eval_expert": eval_expert}}))
    if rows:
      (d / mebnet.EXPERTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(d)

  inputs = {"s0": stage("s0", 0.2), "s1": stage("s1", 0.3),
            "adapt": stage("adapt", 0.45, 1, rows=[
                {"expert0": {"mAP": 0.1}, "expert1": {"mAP": 0.5}},
                {"expert0": {"mAP": 0.35}, "expert1": {"mAP": 0.45}}])}
  cfg = ml_collections.ConfigDict(dict(source_stages=("s0", "s1"), adapted_stage="adapt",
                                       labels=("a", "b")))
  report = mebnet.mebnet_report(cfg, inputs, "", str(tmp_path))
  assert json.loads((tmp_path / "reid_report.json").read_text()) == report
  assert report["expert"] == "b"
  assert (report["source_only_map"], report["adapted_map"]) == (0.3, 0.45)
  assert (report["a_source_only_map"], report["a_adapted_map"]) == (0.2, 0.35)
  assert (report["best_source_only_map"], report["best_adapted_map"]) == (0.3, 0.45)
  assert report["selected_adapted_map"] == 0.5
