"""End-to-end checks of the launcher as a user runs it: failures, SIGKILL resume, two processes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import portpicker
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICK = "--config=configs/baseline/digits_resnet20.py:quick"


def launch(workdir, *flags, devices=8, wait=True, progress_flag=True, **popen_kwargs):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  # The config file first: overrides of its fields may only follow it.
  config = [f for f in flags if f.startswith("--config=")] or [QUICK]
  cmd = [sys.executable, "-m", "launch.main", *config, f"--workdir={workdir}",
         *(["--config.progress=lines"] if progress_flag else []),
         *[f for f in flags if not f.startswith("--config=")]]
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, **popen_kwargs)
  if not wait:
    return proc
  out, _ = proc.communicate(timeout=600)
  return proc.returncode, out


def final_checkpoint(workdir):
  directory = os.path.join(workdir, "checkpoints")
  step = max(int(d) for d in os.listdir(directory) if d.isdigit())
  path = os.path.join(directory, str(step), "default")
  checkpointer = ocp.PyTreeCheckpointer()
  # Restore as host NumPy arrays: the checkpoint may come from another device topology.
  metadata = checkpointer.metadata(path).item_metadata.tree
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
  return step, checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))


@pytest.mark.parametrize("flags,message", [
    (["--config.no_such_key=1"], "no_such_key"),
    (["--config.num_epochs=abc"], "num_epochs"),
    (["--config.method=nope"], "Unknown method 'nope'"),
    (["--config.model.name=nope"], "Unknown model 'nope'"),
    (["--config.data.batch_size=100"], "not divisible by the 8 devices"),
    (["--config.data.name=cifar10", "--config.data.data_dir=/nonexistent"], "tfds build cifar10"),
    pytest.param(["--config.optim.learning_rate=1e9"], "is nan at step", marks=pytest.mark.slow),
])
def test_user_errors_are_short_and_fatal(tmp_path, flags, message):
  code, out = launch(str(tmp_path / "w"), *flags)
  assert code != 0
  assert message in out, out[-2000:]
  assert "Traceback" not in out, out[-3000:]


def test_unwritable_workdir_message(tmp_path):
  blocker = tmp_path / "f"
  blocker.write_text("x")
  code, out = launch(str(blocker / "w"))
  assert code != 0 and "not writable" in out and "Traceback" not in out


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_and_matches_uninterrupted_run(tmp_path):
  flags = ["--config.num_steps=24", "--config.checkpoint_every=4",
           "--config.async_checkpoint=False"]
  ref_dir, killed_dir = str(tmp_path / "ref"), str(tmp_path / "killed")
  code, out = launch(ref_dir, *flags)
  assert code == 0, out[-2000:]
  proc = launch(killed_dir, *flags, wait=False)
  ckpt = os.path.join(killed_dir, "checkpoints")
  deadline = time.time() + 300
  while time.time() < deadline:  # kill as soon as the first checkpoint is complete
    if os.path.isdir(ckpt) and any(d.isdigit() for d in os.listdir(ckpt)):
      break
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = max(int(d) for d in os.listdir(ckpt) if d.isdigit())
  assert killed_at < 24, "the run finished before it could be killed"
  code, out = launch(killed_dir, *flags)
  assert code == 0, out[-2000:]
  assert f"Resumed from checkpoint at step {killed_at}" in out
  (s1, ref), (s2, resumed) = final_checkpoint(ref_dir), final_checkpoint(killed_dir)
  assert s1 == s2 == 24
  for a, b in zip(jax_leaves(ref), jax_leaves(resumed)):
    np.testing.assert_array_equal(a, b)


def jax_leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.mark.slow
@pytest.mark.parametrize("on_device", [True, False])
def test_two_processes_match_one_process_with_two_devices(tmp_path, on_device):
  # One CPU device per process: with several devices per process, XLA:CPU's cross-process
  # collectives (gloo) gave input-dependent gradient errors (README, "Known XLA:CPU problem"),
  # whatever the data path. Few steps: early training amplifies float reduction-order differences.
  # The quickstart streams from data.on_device; on_device=False takes the host pipeline, whose
  # 3 steps run as one call over a stack of batches assembled from both processes' halves.
  flags = ["--config.num_steps=3", "--config.async_checkpoint=False",
           f"--config.data.on_device={on_device}"]
  code, out = launch(str(tmp_path / "single"), *flags, devices=2)
  assert code == 0, out[-2000:]
  port = portpicker.pick_unused_port()
  procs = [launch(str(tmp_path / "multi"), *flags, f"--coordinator_address=localhost:{port}",
                  "--num_processes=2", f"--process_id={i}", devices=1, wait=False)
           for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), outs[0][-2000:] + outs[1][-2000:]
  assert "Finished" in outs[0] and "Finished" not in outs[1]  # only process 0 reports
  (_, single), (_, multi) = final_checkpoint(str(tmp_path / "single")), final_checkpoint(
      str(tmp_path / "multi"))
  for a, b in zip(jax_leaves(single["params"]), jax_leaves(multi["params"])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  final = [line for line in out.splitlines() if line.startswith("Finished")]
  assert final and final[0].split(" Outputs")[0] == outs[0].strip().splitlines()[-1].split(
      " Outputs")[0]


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_the_rerun_finishes(tmp_path):
  workdir = str(tmp_path / "w")
  flags = ["--config.num_steps=40", "--config.checkpoint_every=1000", "--config.log_every=1",
           "--config.async_checkpoint=False"]
  proc = launch(workdir, *flags, wait=False)
  metrics = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + 300
  while time.time() < deadline and not (os.path.exists(metrics) and os.path.getsize(metrics)):
    time.sleep(0.02)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 1, out[-2000:]
  assert "Preempted at step" in out and "Traceback" not in out
  step = int(out.split("Preempted at step ")[1].split(";")[0])
  assert 0 < step < 40 and os.path.isdir(os.path.join(workdir, "checkpoints", str(step)))
  code, out = launch(workdir, *flags)
  assert code == 0 and f"Resumed from checkpoint at step {step}" in out


def _last_eval(workdir):
  import json  # pylint: disable=g-import-not-at-top
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  return [r for r in rows if r["split"] == "eval"][-1]


@pytest.mark.slow
def test_gathered_evaluator_equal_over_two_processes_devices_and_one_batch(tmp_path):
  config = "--config=tests/integration/configs/gather_eval.py"
  flags = ["--config.num_steps=2", "--config.async_checkpoint=False"]
  code, out = launch(str(tmp_path / "single"), f"{config}:120", *flags, devices=2)
  assert code == 0, out[-2000:]
  code, out = launch(str(tmp_path / "one_batch"), f"{config}:360", *flags, devices=1)
  assert code == 0, out[-2000:]
  port = portpicker.pick_unused_port()
  procs = [launch(str(tmp_path / "multi"), f"{config}:120", *flags,
                  f"--coordinator_address=localhost:{port}", "--num_processes=2",
                  f"--process_id={i}", devices=1, wait=False) for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), outs[0][-2000:] + outs[1][-2000:]
  rows = [_last_eval(str(tmp_path / d)) for d in ("single", "one_batch", "multi")]
  assert rows[0]["gather/rows"] == 360.0
  for row in rows[1:]:
    for key in ("gather/rows", "gather/weighted_labels"):
      assert row[key] == rows[0][key]
    # Logits from differently sharded programs: equal up to float reduction order.
    assert row["gather/weighted_logits"] == pytest.approx(rows[0]["gather/weighted_logits"],
                                                          rel=1e-4)


@pytest.mark.slow
def test_staged_run_killed_in_stage_two_resumes_to_the_uninterrupted_result(tmp_path):
  # configs/rbnn/digits_stages.py: float teacher -> RBNN student; SIGKILL once the student has a
  # checkpoint, rerun: the teacher is skipped and the student ends equal to an uninterrupted run.
  flags = ["--config=configs/rbnn/digits_stages.py:quick",
           "--config.stages.student.num_steps=12", "--config.stages.student.checkpoint_every=4",
           "--config.stages.student.async_checkpoint=False",
           "--config.stages.student.data.scan_steps=4"]
  ref_dir, killed_dir = str(tmp_path / "ref"), str(tmp_path / "killed")
  code, out = launch(ref_dir, *flags, devices=1, progress_flag=False)
  assert code == 0, out[-2000:]
  proc = launch(killed_dir, *flags, devices=1, wait=False, progress_flag=False)
  ckpt = os.path.join(killed_dir, "student", "checkpoints")
  deadline = time.time() + 300
  while time.time() < deadline:  # kill as soon as the student's first checkpoint is complete
    if os.path.isdir(ckpt) and any(d.isdigit() for d in os.listdir(ckpt)):
      break
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = max(int(d) for d in os.listdir(ckpt) if d.isdigit())
  assert killed_at < 12, "the run finished before it could be killed"
  assert os.path.exists(os.path.join(killed_dir, "teacher", "stage_done.json"))
  teacher_log = open(os.path.join(killed_dir, "teacher", "metrics.jsonl")).read()
  code, out = launch(killed_dir, *flags, devices=1, progress_flag=False)
  assert code == 0, out[-2000:]
  assert f"Resumed from checkpoint at step {killed_at}" in out
  assert open(os.path.join(killed_dir, "teacher", "metrics.jsonl")).read() == teacher_log
  (s1, ref), (s2, resumed) = (final_checkpoint(os.path.join(ref_dir, "student")),
                              final_checkpoint(os.path.join(killed_dir, "student")))
  assert s1 == s2 == 12
  for a, b in zip(jax_leaves(ref), jax_leaves(resumed)):
    np.testing.assert_array_equal(a, b)
