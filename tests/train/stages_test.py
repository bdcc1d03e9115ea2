"""Stages (hand-over, skip, resume), samplers with labels from the state, evaluators, best values."""
from __future__ import annotations

import json
import os
import shutil
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import loop_test  # pylint: disable=g-import-not-at-top,wrong-import-position  # noqa: E402

from jaxcompress import errors, evals, methods  # noqa: E402
from jaxcompress.methods.base import Method  # noqa: E402
from jaxcompress.train import checkpoint, evaluation, loop, stages  # noqa: E402
from jaxcompress.train.state import TrainState  # noqa: E402

NUM_EXAMPLES = 64


def staged_config(student_lr=0.05):
  teacher = loop_test.toy_config(checkpoint_every=2, max_to_keep=10)
  student = loop_test.toy_config(checkpoint_every=2, max_to_keep=10)
  student.optim.learning_rate = student_lr
  student.seed = 1  # a different initialisation: the hand-over must replace it
  student.init_from = ml_collections.ConfigDict(
      {"stage": "teacher", "include": "net", "exclude": "", "rename": (),
       "collections": ("params", "batch_stats")})
  c = ml_collections.ConfigDict()
  c.stage_order = ("teacher", "student")
  c.stages = ml_collections.ConfigDict({"teacher": teacher, "student": student})
  return c


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def test_student_starts_from_the_teacher_and_finished_stages_are_skipped(tmp_path):
  out = loop.run(staged_config(student_lr=0.0), str(tmp_path))
  teacher = checkpoint.load_run_state(str(tmp_path / "teacher"))
  # Learning rate 0: the student's network weights are exactly the teacher's final ones.
  for a, b in zip(_leaves(out["state"].params["net"]), _leaves(teacher["params"]["net"])):
    np.testing.assert_array_equal(a, b)
  for name in ("teacher", "student"):
    for f in ("config.json", "metrics.jsonl", "summary.txt", "stage_done.json", "checkpoints"):
      assert os.path.exists(tmp_path / name / f), (name, f)
  summary = json.loads((tmp_path / "stages.json").read_text())
  assert list(summary) == ["teacher", "student"] and "accuracy" in summary["student"]
  before = (tmp_path / "teacher" / "metrics.jsonl").read_text()
  again = loop.run(staged_config(student_lr=0.0), str(tmp_path))
  assert (tmp_path / "teacher" / "metrics.jsonl").read_text() == before  # not rerun
  assert again["stages"] == out["stages"] and again["state"] is None


def test_killed_during_stage_two_resumes_to_the_uninterrupted_result(tmp_path):
  full = loop.run(staged_config(), str(tmp_path / "full"))
  cut = tmp_path / "cut"
  shutil.copytree(tmp_path / "full", cut)
  # As if killed after the student's step-4 checkpoint: later steps and the marker are gone.
  os.remove(cut / "student" / "stage_done.json")
  for step in os.listdir(cut / "student" / "checkpoints"):
    if step.isdigit() and int(step) > 4:
      shutil.rmtree(cut / "student" / "checkpoints" / step)
  resumed = loop.run(staged_config(), str(cut))
  assert int(resumed["state"].step) == int(full["state"].step)
  for a, b in zip(_leaves(resumed["state"].params), _leaves(full["state"].params)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_bad_stage_configs_name_the_fix(tmp_path):
  c = staged_config()
  c.stage_order = ("student", "teacher")
  with pytest.raises(errors.ConfigError, match="does not run before it"):
    loop.run(c, str(tmp_path / "a"))
  c = staged_config()
  c.stage_order = ()
  with pytest.raises(errors.ConfigError, match="stage_order"):
    loop.run(c, str(tmp_path / "b"))


def test_merge_tree_renames_filters_and_refuses_other_shapes():
  like = {"a": {"Conv_0": {"kernel": jnp.zeros((2, 2))}}, "b": jnp.zeros(3)}
  loaded = {"a": {"Old_0": {"kernel": np.ones((2, 2))}}, "b": np.ones(3)}
  merged, taken = stages.merge_tree(like, loaded, rename=(("Old_", "Conv_"),), exclude="^b$")
  assert taken == ["a/Conv_0/kernel"]
  np.testing.assert_array_equal(merged["a"]["Conv_0"]["kernel"], np.ones((2, 2)))
  np.testing.assert_array_equal(merged["b"], np.zeros(3))
  with pytest.raises(errors.ConfigError, match="Exclude it"):
    stages.merge_tree(like, {"b": np.ones(4)})


# ---------------------------------------------------------------------------------------------
# Labels from the state: a host hook sets them, the next epoch's batches follow them.


@methods.register("toy_pseudo_labels")
class PseudoLabels(Method):
  """Counts which examples each epoch reads; a host hook allows one parity per epoch."""

  host_hooks = frozenset({"on_epoch_start"})

  def init(self, rng, example_batch):
    params = {"w": jnp.zeros((16, 4))}
    self.tx = optax.sgd(0.1)
    extra = {"pseudo": jnp.zeros(NUM_EXAMPLES, jnp.int32),
             "seen": jnp.zeros((self.total_steps // self.steps_per_epoch, NUM_EXAMPLES),
                               jnp.int32),
             "feature_sum": jnp.zeros(())}
    return TrainState.create(params=params, rng=rng, extra=extra,
                             optimizers={"model": (self.tx, params)})

  def predict(self, state, batch):
    x = batch["image"].reshape(batch["image"].shape[0], -1)
    return {"logits": x @ state.params["w"], "features": x}

  def train_step(self, state, batch):
    def loss_fn(params):
      logits = self.predict(state.replace(params=params), batch)["logits"]
      return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    epoch = state.step // self.steps_per_epoch
    seen = state.extra["seen"].at[epoch, batch["index"]].add(1)
    state = state.apply_gradients(self.tx, grads, extra={**state.extra, "seen": seen})
    return state, {"loss": loss}

  def eval_step(self, state, batch):
    return {"loss": jnp.sum(batch["mask"])}

  def on_epoch_start(self, state, epoch, context):
    features = context.map_batches(lambda s, b: {"f": self.predict(s, b)["features"],
                                                 "i": b["label"]}, state, "train")
    assert features["f"].shape[0] == NUM_EXAMPLES  # every example once, padding removed
    parity = np.arange(NUM_EXAMPLES) % 2 == epoch % 2
    pseudo = np.where(parity, np.arange(NUM_EXAMPLES) % 4, -1).astype(np.int32)
    return state.replace(extra={**state.extra, "pseudo": jnp.asarray(pseudo),
                                "feature_sum": jnp.asarray(float(features["f"].sum()))})


def pseudo_config(**overrides):
  c = loop_test.toy_config(method="toy_pseudo_labels", steps_per_epoch=2, num_epochs=4,
                           checkpoint_every=2, max_to_keep=10, **overrides)
  c.data.batch_size = 8
  c.data.sampler = ml_collections.ConfigDict({"name": "uniform", "labels": "state:pseudo"})
  return c


def test_pseudo_labels_from_a_host_hook_steer_the_next_epoch_and_survive_resumption(tmp_path):
  out = loop.run(pseudo_config(), str(tmp_path / "full"))
  seen = np.asarray(out["state"].extra["seen"])
  parity = np.arange(NUM_EXAMPLES) % 2
  for epoch in range(4):
    assert seen[epoch].sum() == 16  # 2 steps of 8
    assert np.all(seen[epoch][parity != epoch % 2] == 0), epoch  # only the allowed parity
  cut = tmp_path / "cut"
  shutil.copytree(tmp_path / "full", cut)
  for step in os.listdir(cut / "checkpoints"):
    if step.isdigit() and int(step) > 4:
      shutil.rmtree(cut / "checkpoints" / step)
  resumed = loop.run(pseudo_config(), str(cut))
  np.testing.assert_array_equal(np.asarray(resumed["state"].extra["seen"]), seen)


def test_pk_batches_over_labels_from_the_state(tmp_path):
  # PK needs labels, and the engine draws its shape-only example batch before the state (and so
  # any label) exists: that batch is uniform, every trained batch is PK over the hook's labels.
  c = pseudo_config()
  c.data.sampler = ml_collections.ConfigDict({"name": "pk", "num_instances": 4,
                                              "labels": "state:pseudo"})
  seen = np.asarray(loop.run(c, str(tmp_path))["state"].extra["seen"])
  parity = np.arange(NUM_EXAMPLES) % 2
  for epoch in range(4):
    assert seen[epoch].sum() == 16
    assert np.all(seen[epoch][parity != epoch % 2] == 0), epoch


def test_labels_from_the_state_need_a_fixed_epoch_length(tmp_path):
  c = pseudo_config()
  c.steps_per_epoch = -1
  with pytest.raises(errors.ConfigError, match="steps_per_epoch"):
    loop.run(c, str(tmp_path))


# ---------------------------------------------------------------------------------------------
# Evaluators: gathered outputs are the same on 1 and 8 devices as on one batch; best values.


@evals.register("toy_gather_stats")
class GatherStats(evals.Evaluator):
  """Order-sensitive statistics of gathered rows (a stand-in for mAP/CMC or FID)."""

  combine = {"features": evals.GATHER, "labels": evals.GATHER}

  def batch_outputs(self, state, batch):
    return {"features": self.method.predict(state, batch)["features"],
            "labels": batch["label"], "total": jnp.sum(batch["mask"])}

  def finalize(self, outputs):
    split = outputs[self.splits[0]]
    f, y = split["features"], split["labels"]
    weights = np.arange(1, len(y) + 1)
    return {"weighted": float((f.sum(1) * weights).sum()), "rows": float(len(y)),
            "label_sum": float((y * weights).sum()), "total": float(split["total"]),
            "count": float(split["count"])}


def gather_config(num_devices, batch_size):
  c = pseudo_config(num_devices=num_devices)
  c.data.eval_batch_size = batch_size
  c.evals = ml_collections.ConfigDict({"stats": {"type": "toy_gather_stats", "split": "test"},
                                       "eval": {"type": "method", "split": "test"}})
  return c


@loop_test.needs_eight_devices
def test_gathered_outputs_equal_on_one_and_eight_devices_and_one_batch(tmp_path):
  out = loop.run(pseudo_config(), str(tmp_path / "train"))
  state = jax.device_get(out["state"])
  results = [loop.evaluate(gather_config(n, b), state, names=["stats"])
             for n, b in ((1, 8), (8, 8), (1, 64), (8, 24))]  # 24: a padded last batch
  for r in results[1:]:
    assert r == pytest.approx(results[0], rel=1e-6)
  assert results[0]["stats/rows"] == results[0]["stats/count"] == results[0]["stats/total"]


def test_best_values_are_logged_and_kept_in_the_summary(tmp_path):
  loop.run(pseudo_config(), str(tmp_path))
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  evals_rows = [r for r in rows if r["split"] == "eval"]
  assert len(evals_rows) == 4
  assert evals_rows[-1]["best_loss"] == min(r["loss"] for r in evals_rows)
  assert "best_loss" in (tmp_path / "summary.txt").read_text()


def test_gather_rows_drops_padding():
  rows = evaluation.evals.gather_rows({"x": np.arange(6)}, np.array([1, 1, 0, 1, 0, 0]))
  np.testing.assert_array_equal(rows["x"], [0, 1, 3])


def test_classification_evaluator_matches_a_direct_computation(tmp_path):
  out = loop.run(pseudo_config(), str(tmp_path))
  c = pseudo_config()
  c.evals = ml_collections.ConfigDict({"top1": {"type": "classification", "split": "test"}})
  got = loop.evaluate(c, str(tmp_path))
  from jaxcompress.data import pipeline, sources  # pylint: disable=g-import-not-at-top
  src = sources.get("synthetic", "test", **c.data.source_kwargs)
  images = pipeline.ImageOptions.from_config(c.data)
  x = (src.images.astype(np.float32) / 255.0 - images.mean[0]) / images.std[0]
  logits = x.reshape(len(x), -1) @ np.asarray(out["state"].params["w"])
  assert got["top1/accuracy"] == pytest.approx(np.mean(logits.argmax(1) == src.labels), abs=1e-6)
  with pytest.raises(errors.ConfigError, match="Unknown evaluator"):
    loop.evaluate(c, str(tmp_path), names=["nope"])
