"""PAMS and the float SR method: engine runs, student init, alpha learning rate, SKT, calibration."""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from configs.pams import offline_edsr_x2
from jaxcompress import errors
from jaxcompress.data import sources, transforms
from jaxcompress.methods import pams
from jaxcompress.metrics import image_quality
from jaxcompress.train import checkpoint, loop


def tiny_config(method="pams", **pams_overrides):
  c = offline_edsr_x2.get_config("quick")
  c.method = method
  c.model.kwargs = ml_collections.ConfigDict({"scale": 2, "n_resblocks": 1, "n_feats": 8})
  c.data.batch_size = 4
  c.data.eval_batch_size = 2
  # One small photo for both splits (4 repeats -> 1 step per epoch at batch 4).
  c.data.source_kwargs = ml_collections.ConfigDict({"scale": 2, "repeat": 4,
                                                    "images": ("chelsea",)})
  c.data.transform_kwargs = ml_collections.ConfigDict({"patch_size": 16, "eval_patch_size": 32})
  c.num_epochs = 1
  c.log_every = 1
  c.progress = "none"
  c.async_checkpoint = False
  c.num_devices = 1
  c.final_eval_max_images = 1
  c.final_eval_ssim = False
  for k, v in pams_overrides.items():
    c.pams[k] = v
  return c


def _batch(n=4, scale=2, patch=16, seed=0):
  src = sources.get("sr_offline", "train", scale=scale, images=("chelsea",))
  fn = transforms.get("sr_patch", train=True, patch_size=patch)
  exs = [fn(src[i % len(src)], np.random.default_rng(seed + i)) for i in range(n)]
  return {k: jnp.asarray(np.stack([e[k] for e in exs]).astype(np.float32)) for k in ("lr", "hr")}


def _flat(tree):
  return traverse_util.flatten_dict(jax.device_get(tree), sep="/")


def test_psnr_y_matches_matlab_protocol():
  rng = np.random.default_rng(0)
  hr = rng.integers(0, 256, (2, 20, 20, 3)).astype(np.float32)
  sr = np.clip(hr + rng.normal(0, 6, hr.shape), -5, 260).astype(np.float32)
  ours = np.asarray(pams.psnr_y(jnp.asarray(sr), jnp.asarray(hr), 2))
  ref = [image_quality.psnr(s, h, 2) for s, h in zip(sr, hr)]
  np.testing.assert_allclose(ours, ref, rtol=1e-4)


def test_sr_run_and_pams_student_from_its_checkpoint(tmp_path):
  sr_dir = str(tmp_path / "teacher")
  out = loop.run(tiny_config("sr"), sr_dir)
  assert int(out["state"].step) == 1 and "psnr" in out["eval"]
  report = json.load(open(os.path.join(sr_dir, "final_report.json")))
  assert {"model/psnr", "bicubic/psnr"} <= set(report["sr_offline/test"])
  teacher = out["state"].params

  c = tiny_config("pams", teacher_path=sr_dir, teacher_epochs=0)
  method = pams.PAMS(c, steps_per_epoch=1, total_steps=2)
  state = method.init(jax.random.key(0), _batch())
  # Teacher loaded from the sr run's orbax checkpoint; student == teacher except the alphas.
  ft, fs, fe = _flat(teacher), _flat(state.params), _flat(state.extra["teacher"])
  assert set(ft) == set(fe)
  for k, v in ft.items():
    np.testing.assert_array_equal(fe[k], v)
    np.testing.assert_array_equal(fs[k], v)
  alphas = [k for k in fs if k.endswith("alpha")]
  assert alphas and set(fs) - set(ft) == set(alphas)
  assert set(state.opt_state) == {"model"}   # frozen teacher: no optimizer


def test_pams_engine_run_with_teacher_trained_in_place(tmp_path):
  c = tiny_config("pams", teacher_epochs=1)
  c.num_epochs = 2                              # 1 teacher step, then 1 student step
  res = loop.run(c, str(tmp_path))
  assert int(res["state"].step) == 2
  assert {"psnr", "teacher_psnr"} <= set(res["eval"])
  train = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  train = [l for l in train if l["split"] == "train"]
  assert [l["teacher_phase"] for l in train] == [1.0, 0.0]
  assert train[1]["skt"] > 0 and abs(train[1]["loss"] - train[1]["l1"] - 1e3 * train[1]["skt"]) < 1e-3
  rep = json.load(open(tmp_path / "final_report.json"))["sr_offline/test"]
  assert {"student/psnr", "teacher/psnr", "bicubic/psnr"} <= set(rep)


def test_random_student_init_flag_and_missing_teacher_error(tmp_path):
  c = tiny_config("pams", student_init="random", teacher_epochs=2)
  method = pams.PAMS(c, steps_per_epoch=1, total_steps=4)
  state = method.init(jax.random.key(0), _batch())
  fs, ft = _flat(state.params), _flat(state.extra["teacher"])
  assert any(not np.array_equal(fs[k], ft[k]) for k in ft)
  with pytest.raises(errors.ConfigError, match="teacher"):
    pams.PAMS(tiny_config("pams", teacher_epochs=0), steps_per_epoch=1, total_steps=1)
  with pytest.raises(errors.ConfigError, match="not found"):
    pams.PAMS(tiny_config("pams", teacher_path=str(tmp_path / "nope")), steps_per_epoch=1,
              total_steps=1)


def test_loss_has_skt_alpha_lr_and_calibration_only_in_epoch_zero(tmp_path):
  teacher_file = str(tmp_path / "teacher.msgpack")
  c = tiny_config("pams", alpha_calib="last_batch")
  # A teacher params file (random float EDSR) -> PAMS with teacher_path.
  float_model = pams.PAMS(c, steps_per_epoch=2, total_steps=4).teacher
  b0, b1, b2 = _batch(seed=0), _batch(seed=10), _batch(seed=20)
  pams.save_params(teacher_file, float_model.init(jax.random.key(1), b0["lr"][:1])["params"])
  c.pams.teacher_path = teacher_file
  c.pams.skt_weight = 1e3
  m = pams.PAMS(c, steps_per_epoch=2, total_steps=4)
  state = m.init(jax.random.key(0), b0)
  start = jax.jit(m.on_epoch_start)
  step = jax.jit(m.train_step)

  # Outside calibration (epoch 1 here), Adam's first step moves each alpha by exactly its
  # learning rate 1e-2 (|m/sqrt(v)| = 1), the weights by at most 1e-4.
  s1, _ = step(start(state, 1), b0)
  f0, f1 = _flat(state.params), _flat(s1.params)
  d_alpha = np.array([abs(f1[k][0] - f0[k][0]) for k in f1 if k.endswith("alpha")])
  assert d_alpha.size and np.all(d_alpha > 0)
  np.testing.assert_allclose(d_alpha, 1e-2, rtol=5e-3)   # eps 1e-8 vs tiny alpha grads
  assert max(float(np.max(np.abs(f1[k] - f0[k]))) for k in f1 if k.endswith("kernel")) <= 1.001e-4
  del s1

  def alphas(s):
    return {k: float(v[0]) for k, v in _flat(s.params).items() if k.endswith("alpha")}

  def maxvals(s):
    return {k.replace("max_val", "alpha"): float(v[0])
            for k, v in _flat(s.model_state["pams_calib"]).items() if k.endswith("max_val")}

  # Epoch 0: calibration. alpha = the last batch's statistic, then one Adam step (lr 1e-2).
  state = start(state, 0)
  state, metrics = step(state, b0)
  # SKT is in the loss with its weight.
  np.testing.assert_allclose(float(metrics["loss"]),
                             float(metrics["l1"]) + 1e3 * float(metrics["skt"]), rtol=1e-5)
  assert float(metrics["skt"]) > 0
  state, _ = step(state, b1)
  a_calib, mv = alphas(state), maxvals(state)
  for k in a_calib:
    assert abs(a_calib[k] - mv[k]) <= 1.5e-2
    assert abs(mv[k] - 10.0) > 1e-3   # moved from alpha_init
  before = jax.device_get(state.params)

  # Epoch 1: no calibration: max_val frozen; alphas move only by Adam (~lr 1e-2), weights ~1e-4.
  state = start(state, 1)
  state, _ = step(state, b2)
  assert maxvals(state) == mv
  fb, fa = _flat(before), _flat(state.params)
  d_alpha = [abs(float(fa[k][0] - fb[k][0])) for k in fa if k.endswith("alpha")]
  d_kernel = [float(np.max(np.abs(fa[k] - fb[k]))) for k in fa if k.endswith("kernel")]
  assert 2e-3 < max(d_alpha) < 5e-2
  assert max(d_kernel) < 5e-4
  assert abs(max(d_alpha) / max(d_kernel)) > 20


# -- teacher -> students -> table as stages (configs/pams/quick.py) ----------------------------


def test_quick_config_derives_teacher_students_and_table():
  from configs.pams import quick  # pylint: disable=g-import-not-at-top
  c = quick.get_config()
  base = quick.get_config("student_only")
  assert tuple(c.stage_order) == ("fp", "8bit", "4bit", "table")
  teacher = c.stages.fp
  assert teacher.method == "sr" and teacher.num_epochs == base.pams.teacher_epochs
  assert teacher.optim.learning_rate == base.pams.teacher_optim.learning_rate
  assert not teacher.optim.groups and "pams" not in teacher
  # 5 training photos x repeat / batch: the quick epoch's batches; alphas get the paper's
  # 1e-2 scaled by 1000 / that, weights keep the paper's 1e-4.
  epoch_steps = 5 * base.data.source_kwargs.repeat // base.data.batch_size
  assert epoch_steps == quick.EPOCH_STEPS == 25
  for bits in (8, 4):
    student = c.stages[f"{bits}bit"]
    assert student.method == "pams" and student.pams.bits == bits
    assert tuple(student.paths_from[0]) == ("pams.teacher_path", "fp", "")
    assert student.pams.teacher_epochs == 0
    assert student.optim.learning_rate == 1e-4
    np.testing.assert_allclose(student.optim.groups[0]["learning_rate"],
                               1e-2 * 1000 / epoch_steps)
  assert c.stages["8bit"].num_epochs == base.num_epochs - base.pams.teacher_epochs == 3
  assert c.stages["4bit"].num_epochs == quick.FOUR_BIT_EPOCHS > c.stages["8bit"].num_epochs
  # The accelerator variant keeps the paper's alpha learning rate it was measured with.
  assert quick.get_config("baseline").stages["4bit"].optim.groups[0]["learning_rate"] == 1e-2
  assert c.stages.table.report == "pams_table" and tuple(c.stages.table.inputs) == (
      "fp", "8bit", "4bit")


def test_alpha_learning_rate_keeps_the_papers_alpha_travel_per_epoch():
  # Adam under a constant-sign gradient moves a parameter by its learning rate per step: an
  # epoch of n steps at alpha_learning_rate(n) travels as far as the paper's 1000 steps at 1e-2.
  import optax  # pylint: disable=g-import-not-at-top

  from configs.pams import _sr_common  # pylint: disable=g-import-not-at-top

  def travel(lr, steps):
    tx = optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8)
    alpha = jnp.float32(100.0)
    opt = tx.init(alpha)
    for _ in range(steps):
      upd, opt = tx.update(jnp.float32(1e-3), opt, alpha)
      alpha = alpha + upd
    return 100.0 - float(alpha)

  assert _sr_common.alpha_learning_rate() == 1e-2
  paper = travel(1e-2, 1000)
  np.testing.assert_allclose(paper, 10.0, rtol=1e-3)
  for steps in (25, 125):
    np.testing.assert_allclose(travel(_sr_common.alpha_learning_rate(steps), steps), paper,
                               rtol=1e-3)
  with pytest.raises(errors.ConfigError, match="epoch_steps"):
    _sr_common.alpha_learning_rate(0)


def test_stages_take_student_epochs_per_bit_width():
  from configs.pams import _sr_common  # pylint: disable=g-import-not-at-top
  c = _sr_common.pams_stages(tiny_config(), bits=(8, 4), teacher_epochs=2,
                             student_epochs={8: 3, 4: 7})
  assert (c.stages.fp.num_epochs, c.stages["8bit"].num_epochs, c.stages["4bit"].num_epochs) == (
      2, 3, 7)
  with pytest.raises(errors.ConfigError, match=r"no entry for bit widths \[4\]"):
    _sr_common.pams_stages(tiny_config(), bits=(8, 4), teacher_epochs=1, student_epochs={8: 3})


def test_stages_chain_teacher_to_students_and_report(tmp_path):
  # Unit-sized chain: 1 teacher step, then one 8-bit and one 4-bit student step loading the
  # teacher checkpoint, then the table on the held-out image.
  from configs.pams import _sr_common  # pylint: disable=g-import-not-at-top
  c = _sr_common.pams_stages(tiny_config(), bits=(8, 4), teacher_epochs=1, student_epochs=1)
  out = loop.run(c, str(tmp_path))
  params = {label: checkpoint.load_run_state(str(tmp_path / label))["params"]
            for label in ("fp", "8bit", "4bit")}
  # Each student starts from the teacher: its weights differ from it by one Adam step only.
  t = traverse_util.flatten_dict(params["fp"])
  s = traverse_util.flatten_dict(params["8bit"])
  assert all(np.max(np.abs(np.asarray(s[k]) - np.asarray(v))) < 1e-3 for k, v in t.items())
  report = out["stages"]["table"]
  for label in ("fp", "8bit", "4bit", "bicubic"):
    assert np.isfinite(report[f"{label}/psnr"])
  with open(tmp_path / "pams_table.json", encoding="utf-8") as f:
    assert json.load(f)["8bit/psnr"] == report["8bit/psnr"]
  assert "| **mean** |" in (tmp_path / "pams_table.md").read_text()
  rows = [json.loads(line) for line in open(tmp_path / "table" / "metrics.jsonl",
                                            encoding="utf-8")]
  assert rows[-1]["split"] == "eval" and rows[-1]["4bit/psnr"] == report["4bit/psnr"]


@pytest.mark.slow
def test_quick_pipeline_meets_its_promise(tmp_path):
  # The documented command end to end: under 10 minutes on a CPU, 8-bit within 0.1 dB of the
  # FP teacher and the 4-bit student at least 0.3 dB above MATLAB bicubic on the held-out
  # photographs (a 4-bit student that learned nothing scores bicubic's PSNR).
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  # The command as a user runs it: without conftest's 8 fake CPU devices (XLA_FLAGS), which
  # would shard every batch 8 ways over this machine's cores.
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  start = time.time()
  subprocess.run([sys.executable, "-m", "launch.main",
                  "--config=configs/pams/quick.py", f"--workdir={tmp_path}"],
                 cwd=root, check=True, timeout=900, env=env)
  wall = time.time() - start
  with open(tmp_path / "pams_table.json", encoding="utf-8") as f:
    table = json.load(f)
  assert table["num_images"] == 2
  assert abs(table["fp/psnr"] - table["8bit/psnr"]) <= 0.1, table
  assert table["4bit/psnr"] - table["bicubic/psnr"] >= 0.3, table
  assert table["4bit/psnr"] < table["8bit/psnr"], table
  assert wall < 600, f"quick pipeline took {wall:.0f} s"
