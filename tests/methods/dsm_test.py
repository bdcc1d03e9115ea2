"""DSM / MoCo pretraining step, linear probe and report on a tiny R3D (CPU, seconds)."""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import common
from jaxcompress import selfsup
from jaxcompress.errors import ConfigError
from jaxcompress.methods import dsm, linear_probe


def _config(variant, queue_size=8):
  c = common.base_config()
  c.method = "dsm"
  c.model.name = "r3d_18"
  c.model.num_classes = 16
  c.model.kwargs = ml_collections.ConfigDict(dict(width=4, stage_sizes=(1, 1, 1, 1)))
  c.dsm = ml_collections.ConfigDict(dict(variant=variant, embed_dim=16, temperature=0.07,
                                         queue_size=queue_size, momentum=0.9,
                                         triplet_margin=0.5))
  c.optim.learning_rate = 0.1
  c.optim.weight_decay = 0.0
  c.optim.schedule = "constant"
  return c


def _batch(seed=0, n=4):
  k = jax.random.split(jax.random.key(seed), 3)
  shape = (n, 4, 16, 16, 3)
  return {"image": jax.random.normal(k[0], shape), "positive": jax.random.normal(k[1], shape),
          "negative": jax.random.normal(k[2], shape), "label": jnp.arange(n) % 4,
          "mask": jnp.ones(n)}


@pytest.fixture(scope="module")
def dsm_step():
  m = dsm.DSM(_config("dsm"), steps_per_epoch=4, total_steps=8)
  state = m.init(jax.random.key(0), _batch())
  new_state, metrics = jax.jit(m.train_step)(state, _batch(1))
  return m, state, new_state, metrics


def test_init_key_encoder_is_a_copy_and_the_queue_is_uniform(dsm_step):
  _, state, _, _ = dsm_step
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(state.extra["key_params"])):
    np.testing.assert_array_equal(a, b)
  queue = np.asarray(state.extra["queue"])
  assert queue.shape == (8, 16)
  bound = 1 / np.sqrt(16 / 3)
  assert np.all(np.abs(queue) <= bound) and int(state.extra["queue_index"]) == 0


def test_step_loss_is_infonce_with_the_intra_video_negative_last(dsm_step):
  m, state, new_state, metrics = dsm_step
  b = _batch(1)
  q, ms = m.encode(state.params, state.model_state, b["image"], True)
  k, _ = m.encode(state.params, state.model_state, b["positive"], True)  # key = query at init
  n, _ = m.encode(state.params, ms, b["negative"], True)
  q, k, n = (np.asarray(x, np.float64) for x in (q, k, n))
  queue = np.asarray(state.extra["queue"], np.float64)
  logits = np.concatenate([np.sum(q * k, 1, keepdims=True), q @ queue.T,
                           np.sum(q * n, 1, keepdims=True)], 1) / 0.07
  want = np.mean(np.log(np.exp(logits).sum(1)) - logits[:, 0])
  np.testing.assert_allclose(float(metrics["loss"]), want, rtol=2e-4)
  np.testing.assert_allclose(float(metrics["negative_wins"]),
                             np.mean(logits[:, -1] > logits[:, 0]))
  # The keys (not the negatives) enter the queue at rows 0..B-1; the rest is untouched.
  new_queue = np.asarray(new_state.extra["queue"])
  np.testing.assert_allclose(new_queue[:4], k, atol=1e-5)
  np.testing.assert_array_equal(new_queue[4:], queue[4:])
  assert int(new_state.extra["queue_index"]) == 4


def test_key_encoder_follows_the_query_encoder_by_ema(dsm_step):
  _, state, new_state, _ = dsm_step
  moved = False
  for old, new, key in zip(jax.tree.leaves(state.params), jax.tree.leaves(new_state.params),
                           jax.tree.leaves(new_state.extra["key_params"])):
    np.testing.assert_allclose(key, 0.9 * np.asarray(old) + 0.1 * np.asarray(new), rtol=1e-5,
                               atol=1e-6)
    moved |= not np.allclose(old, new)
  assert moved
  # The key encoder's batch norm ran in train mode on the positives: its statistics moved.
  old_stats = jax.tree.leaves(state.extra["key_state"])
  new_stats = jax.tree.leaves(new_state.extra["key_state"])
  assert any(not np.allclose(a, b) for a, b in zip(old_stats, new_stats))


def test_moco_and_triplet_variants():
  moco = dsm.DSM(_config("moco"), steps_per_epoch=4, total_steps=8)
  batch = {k: v for k, v in _batch().items() if k != "negative"}
  state = moco.init(jax.random.key(0), batch)
  new_state, metrics = jax.jit(moco.train_step)(state, batch)
  assert "neg_sim" not in metrics and np.isfinite(float(metrics["loss"]))
  trip = dsm.DSM(_config("triplet"), steps_per_epoch=4, total_steps=8)
  state = trip.init(jax.random.key(0), _batch())
  assert state.extra == {}
  _, metrics = jax.jit(trip.train_step)(state, _batch())
  q = np.random.default_rng(0).normal(size=(5, 3))
  k, n = q + 0.1, q[::-1]
  d = lambda a, b: np.linalg.norm(a - b + 1e-6, axis=1)
  want = np.mean(np.maximum(d(q, k) - d(q, n) + 0.5, 0))
  np.testing.assert_allclose(dsm.triplet_margin_loss(q, k, n), want, rtol=1e-5)
  assert np.isfinite(float(metrics["loss"]))


def test_bad_config_and_batch_are_named():
  with pytest.raises(ConfigError, match="variant"):
    dsm.DSM(_config("simclr"))
  m = dsm.DSM(_config("dsm"))
  batch = {k: v for k, v in _batch().items() if k != "negative"}
  with pytest.raises(ConfigError, match="dsm_clips"):
    m.init(jax.random.key(0), batch)


def test_linear_probe_trains_only_its_head():
  c = _config("dsm")
  c.method = "linear_probe"
  c.model.num_classes = 4
  probe = linear_probe.LinearProbe(c, steps_per_epoch=2, total_steps=4)
  state = probe.init(jax.random.key(0), _batch())
  new_state, metrics = jax.jit(probe.train_step)(state, _batch(2))
  for a, b in zip(jax.tree.leaves(state.params["backbone"]),
                  jax.tree.leaves(new_state.params["backbone"])):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(state.model_state["batch_stats"]["backbone"]),
                  jax.tree.leaves(new_state.model_state["batch_stats"]["backbone"])):
    np.testing.assert_array_equal(a, b)
  head, new_head = state.params["head"], new_state.params["head"]
  assert not np.allclose(head["classifier"]["kernel"], new_head["classifier"]["kernel"])
  # The head's affine-free batch norm standardises the features with its batch statistics.
  assert set(head) == {"classifier"}
  stats = new_state.model_state["batch_stats"]["head"]["bn"]
  assert not np.allclose(stats["mean"], 0.0)
  out = probe.predict(new_state, _batch(2))
  assert out["logits"].shape == (4, 4) and out["features"].shape == (4, 32)
  assert np.isfinite(float(metrics["loss"]))


def test_report_reads_each_stage_final_metric(tmp_path):
  inputs = {}
  for stage, acc in (("probe_dsm", 0.8), ("probe_moco", 0.5)):
    d = tmp_path / stage
    d.mkdir()
    (d / "stage_done.json").write_text(json.dumps(
        {"eval": {"video_accuracy": acc, "clip_accuracy": 0.1}}))
    inputs[stage] = str(d)
  cfg = ml_collections.ConfigDict(dict(metric="video_accuracy",
                                       labels=dict(probe_dsm="dsm", probe_moco="moco")))
  report = dsm.dsm_report(cfg, inputs, "", str(tmp_path))
  assert report["dsm_accuracy"] == 0.8 and report["moco_accuracy"] == 0.5
  with open(os.path.join(tmp_path, "dsm_report.json"), encoding="utf-8") as f:
    assert json.load(f)["moco_accuracy"] == 0.5
  with pytest.raises(ConfigError, match="no final metric"):
    dsm.dsm_report(ml_collections.ConfigDict(dict(metric="top5")), inputs, "", str(tmp_path))


def test_selfsup_functions_are_what_the_method_uses():
  assert dsm.selfsup.moco_logits is selfsup.moco_logits
