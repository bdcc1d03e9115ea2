"""Engine tests: hard method shapes, workdir contract, 8-device equality, resume, failures."""
from __future__ import annotations

import json
import os
import shutil
import sys

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import toy_method  # pylint: disable=g-import-not-at-top,wrong-import-position  # noqa: E402,F401

from configs import common  # noqa: E402
from jaxcompress import errors  # noqa: E402
from jaxcompress.train import loop  # noqa: E402

# The 8-device tests use conftest's 8 host-platform CPU devices; on a GPU host (JAX_PLATFORMS=
# cuda,cpu) the default backend is the GPU, which has one device here.
needs_eight_devices = pytest.mark.skipif(
    jax.device_count() != 8,
    reason="needs conftest's 8 fake CPU devices as the default backend")


def toy_config(**overrides):
  c = common.base_config()
  c.method = "toy_two_optimizers"
  c.data.name = "synthetic"
  c.data.source_kwargs = {"num_examples": 64, "image_shape": (4, 4, 1), "num_classes": 4}
  c.data.batch_size = 16
  c.data.eval_batch_size = 16
  c.optim.learning_rate = 0.05
  c.num_epochs = 2
  c.log_every = 2
  c.progress = "none"
  c.async_checkpoint = False
  for key, value in overrides.items():
    c[key] = value
  return c


def test_two_optimizers_epoch_hook_ema_and_workdir_contract(tmp_path):
  out = loop.run(toy_config(), str(tmp_path))
  state = out["state"]
  assert int(state.step) == 8  # 2 epochs x (64 // 16)
  assert int(state.extra["hook_calls"]) == 2 and int(state.extra["hook_epoch"]) == 1
  # Adam's count for the arch optimizer advanced once per step; the arch scalar moved.
  assert int(state.opt_state["arch"][0].count) == 8
  assert float(abs(state.params["arch"])) > 0
  # The EMA copy lags the params: different, but close.
  ema, net = state.extra["ema"], state.params["net"]
  diffs = [float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(ema), jax.tree.leaves(net))]
  assert max(diffs) > 0
  for name in ("config.json", "metrics.jsonl", "summary.txt", "checkpoints"):
    assert os.path.exists(tmp_path / name), name
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path))
  lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert {l["split"] for l in lines} == {"train", "eval"}
  assert all(isinstance(l["step"], int) for l in lines)
  assert json.load(open(tmp_path / "config.json"))["method"] == "toy_two_optimizers"


@needs_eight_devices
def test_eight_devices_equal_one_device(tmp_path):
  one = loop.run(toy_config(num_devices=1), str(tmp_path / "one"))["state"]
  eight = loop.run(toy_config(num_devices=8), str(tmp_path / "eight"))["state"]
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(eight.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
  for a, b in zip(jax.tree.leaves(one.model_state), jax.tree.leaves(eight.model_state)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_resume_from_checkpoint_matches_uninterrupted(tmp_path):
  full = loop.run(toy_config(), str(tmp_path / "full"))["state"]
  # Interrupt a run after step 4: keep only the checkpoints up to step 4, as a kill would.
  workdir = str(tmp_path / "resumed")
  cfg = toy_config(checkpoint_every=2)
  loop.run(cfg, workdir)
  directory = os.path.join(workdir, "checkpoints")
  for d in os.listdir(directory):
    if d.isdigit() and int(d) > 4:
      shutil.rmtree(os.path.join(directory, d))
  resumed = loop.run(cfg, workdir)["state"]
  assert int(resumed.step) == 8
  steps = [json.loads(l)["step"] for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert steps.count(6) == 2  # steps 5..8 really ran a second time, from step 4
  for a, b in zip(jax.tree.leaves((full.params, full.extra, full.opt_state)),
                  jax.tree.leaves((resumed.params, resumed.extra, resumed.opt_state))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_nan_loss_stops_with_step_and_metric(tmp_path):
  cfg = toy_config()
  cfg.optim.learning_rate = 1e9
  with pytest.raises(errors.TrainingDivergedError, match=r"'loss'.*step \d+"):
    loop.run(cfg, str(tmp_path))


@pytest.mark.parametrize("field,value,match", [
    ("method", "no_such_method", "Unknown method 'no_such_method'"),
    ("data.name", "no_such_data", "Unknown dataset 'no_such_data'"),
    ("model.name", "no_such_model", "Unknown model 'no_such_model'"),
    pytest.param("data.batch_size", 12, "not divisible by the 8 devices",
                 marks=needs_eight_devices),
])
def test_bad_configs_stop_before_compiling(tmp_path, field, value, match):
  cfg = toy_config() if field != "model.name" else common.base_config()
  if field == "model.name":
    cfg.data.name = "synthetic"
    cfg.progress = "none"
  section, _, key = field.rpartition(".")
  (cfg[section] if section else cfg)[key] = value
  with pytest.raises(errors.UserError, match=match):
    loop.run(cfg, str(tmp_path))


def test_missing_tfds_dataset_names_the_prepare_command(tmp_path):
  cfg = toy_config()
  cfg.data.name = "cifar10"
  cfg.data.data_dir = str(tmp_path / "no_tfds_here")
  with pytest.raises(errors.DatasetNotFoundError, match="tfds build cifar10"):
    loop.run(cfg, str(tmp_path / "work"))


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  with pytest.raises(errors.ConfigError, match="not writable"):
    loop.run(toy_config(), str(blocker / "sub"))


def test_corrupted_checkpoint_is_reported(tmp_path):
  loop.run(toy_config(num_steps=4, checkpoint_every=4), str(tmp_path))
  step_dir = os.path.join(tmp_path, "checkpoints", "4")
  for root, _, files in os.walk(step_dir):
    for f in files:
      if not f.startswith("_"):
        with open(os.path.join(root, f), "wb") as fh:
          fh.write(b"garbage")
  with pytest.raises(errors.CheckpointError, match="Cannot restore checkpoint step 4"):
    loop.run(toy_config(num_steps=6), str(tmp_path))


def _rows(workdir):
  return [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]


def test_on_device_epochs_log_like_the_host_pipeline(tmp_path):
  # data.on_device: the same engine (two optimizers, epoch hooks, EMA), the same log and eval
  # rows; only the random stream differs from the host pipeline's.
  host = loop.run(toy_config(), str(tmp_path / "host"))
  dev = loop.run(toy_config(data=dict(toy_config().data, on_device=True)), str(tmp_path / "dev"))
  state = dev["state"]
  assert int(state.step) == 8
  assert int(state.extra["hook_calls"]) == 2 and int(state.extra["hook_epoch"]) == 1
  assert int(state.opt_state["arch"][0].count) == 8
  key = lambda r: (r["step"], r["split"], sorted(r))
  assert [key(r) for r in _rows(tmp_path / "dev")] == [key(r) for r in _rows(tmp_path / "host")]
  # Both learn the synthetic task (4 classes, chance 0.25).
  assert dev["eval"]["accuracy"] > 0.8 and host["eval"]["accuracy"] > 0.8


def test_on_device_log_windows_inside_one_scan(tmp_path):
  # log_every=1 with one scan per epoch: every step still gets its own row, and the row's
  # loss is that step's loss (window means over one step).
  cfg = toy_config(log_every=1, num_epochs=1)
  cfg.data.on_device = True
  loop.run(cfg, str(tmp_path))
  train = [r for r in _rows(tmp_path) if r["split"] == "train"]
  assert [r["step"] for r in train] == [1, 2, 3, 4]
  assert len({r["loss"] for r in train}) == 4


@needs_eight_devices
def test_on_device_eight_devices_equal_one_device(tmp_path):
  def cfg(n):
    c = toy_config(num_devices=n)
    c.data.on_device = True
    return c
  one = loop.run(cfg(1), str(tmp_path / "one"))["state"]
  eight = loop.run(cfg(8), str(tmp_path / "eight"))["state"]
  for a, b in zip(jax.tree.leaves((one.params, one.model_state)),
                  jax.tree.leaves((eight.params, eight.model_state))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_on_device_resume_matches_uninterrupted(tmp_path):
  # The on-device stream is a pure function of the step, so a run resumed mid-epoch (step 6
  # of 4-step epochs: a scan of 2 steps first) reads the batches of the uninterrupted run.
  def cfg(**kw):
    c = toy_config(**kw)
    c.data.on_device = True
    return c
  full = loop.run(cfg(), str(tmp_path / "full"))["state"]
  workdir = str(tmp_path / "resumed")
  loop.run(cfg(checkpoint_every=3), workdir)
  directory = os.path.join(workdir, "checkpoints")
  for d in os.listdir(directory):
    if d.isdigit() and int(d) > 6:
      shutil.rmtree(os.path.join(directory, d))
  resumed = loop.run(cfg(checkpoint_every=3), workdir)["state"]
  assert int(resumed.step) == 8
  for a, b in zip(jax.tree.leaves((full.params, full.extra, full.opt_state)),
                  jax.tree.leaves((resumed.params, resumed.extra, resumed.opt_state))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_on_device_nan_loss_stops_with_step_and_metric(tmp_path):
  cfg = toy_config()
  cfg.data.on_device = True
  cfg.optim.learning_rate = 1e9
  with pytest.raises(errors.TrainingDivergedError, match=r"'loss'.*step \d+"):
    loop.run(cfg, str(tmp_path))


def test_on_device_refuses_per_example_transforms(tmp_path):
  cfg = toy_config()
  cfg.data.on_device = True
  cfg.data.transform = "imagenet_crop"
  with pytest.raises(errors.ConfigError, match="on_device=False"):
    loop.run(cfg, str(tmp_path))


def test_steps_per_call_trains_and_logs_like_one_step_per_call(tmp_path):
  # Three host batches per jitted call in 4-step epochs (calls of 3 + 1 steps, one compilation)
  # run the same steps on the same batches as one call per step: same state, same log rows.
  one = loop.run(toy_config(steps_per_call=1, log_every=1), str(tmp_path / "one"))
  three = loop.run(toy_config(steps_per_call=3, log_every=1), str(tmp_path / "three"))
  assert int(three["state"].step) == 8 and int(three["state"].extra["hook_calls"]) == 2
  for a, b in zip(jax.tree.leaves((one["state"].params, one["state"].extra)),
                  jax.tree.leaves((three["state"].params, three["state"].extra))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  rows_one, rows_three = _rows(tmp_path / "one"), _rows(tmp_path / "three")
  assert [(r["step"], r["split"]) for r in rows_one] == [(r["step"], r["split"]) for r in rows_three]
  for r1, r3 in zip(rows_one, rows_three):
    for k, v in r1.items():
      if k not in ("step", "split", "steps_per_second"):
        np.testing.assert_allclose(r3[k], v, rtol=1e-4, atol=1e-6, err_msg=f"{k} at {r1['step']}")


def test_steps_per_call_resume_matches_uninterrupted(tmp_path):
  # Checkpoints every 3 steps cut the 3-step calls short; a run resumed from step 6 (mid-epoch)
  # reads the host batches of the uninterrupted run.
  full = loop.run(toy_config(steps_per_call=3), str(tmp_path / "full"))["state"]
  workdir = str(tmp_path / "resumed")
  loop.run(toy_config(steps_per_call=3, checkpoint_every=3), workdir)
  directory = os.path.join(workdir, "checkpoints")
  for d in os.listdir(directory):
    if d.isdigit() and int(d) > 6:
      shutil.rmtree(os.path.join(directory, d))
  resumed = loop.run(toy_config(steps_per_call=3, checkpoint_every=3), workdir)["state"]
  assert int(resumed.step) == 8
  for a, b in zip(jax.tree.leaves((full.params, full.extra, full.opt_state)),
                  jax.tree.leaves((resumed.params, resumed.extra, resumed.opt_state))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


@needs_eight_devices
def test_steps_per_call_eight_devices_equal_one_device(tmp_path):
  one = loop.run(toy_config(num_devices=1, steps_per_call=3), str(tmp_path / "one"))["state"]
  eight = loop.run(toy_config(num_devices=8, steps_per_call=3), str(tmp_path / "eight"))["state"]
  for a, b in zip(jax.tree.leaves((one.params, one.model_state)),
                  jax.tree.leaves((eight.params, eight.model_state))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_steps_per_call_nan_loss_names_the_step(tmp_path):
  cfg = toy_config(steps_per_call=3)
  cfg.optim.learning_rate = 1e9
  with pytest.raises(errors.TrainingDivergedError, match=r"'loss'.*step \d+"):
    loop.run(cfg, str(tmp_path))


@pytest.mark.parametrize("value", [0, -2])
def test_bad_steps_per_call_is_refused(tmp_path, value):
  with pytest.raises(errors.ConfigError, match="steps_per_call must be an integer >= 1"):
    loop.run(toy_config(steps_per_call=value), str(tmp_path))
