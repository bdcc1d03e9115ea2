"""Damaged checkpoints through the engine and the launcher, and the missing config file message."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "train"))
import loop_test  # pylint: disable=g-import-not-at-top,wrong-import-position  # noqa: E402

from jaxcompress import errors  # noqa: E402
from jaxcompress.train import checkpoint as checkpoint_lib  # noqa: E402
from jaxcompress.train import loop  # noqa: E402


def toy_config(**overrides):
  """8 steps (2 epochs of 4) of the two-optimizer toy method, a checkpoint every 2 steps."""
  return loop_test.toy_config(**{"checkpoint_every": 2, **overrides})


def flip_largest_file(step_dir: str, count: int = 200) -> None:
  """Inverts `count` bytes in the middle of the largest file under `step_dir`."""
  files = [os.path.join(r, f) for r, _, fs in os.walk(step_dir) for f in fs]
  largest = max(files, key=os.path.getsize)
  size = os.path.getsize(largest)
  with open(largest, "r+b") as f:
    f.seek(max(0, size // 2 - count // 2))
    data = f.read(count)
    f.seek(max(0, size // 2 - count // 2))
    f.write(bytes(b ^ 0xFF for b in data))


def leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves((state.params, state.model_state,
                                                  state.opt_state, state.extra, state.rng))]


def checkpoint_warnings(caplog):
  return [r.getMessage() for r in caplog.records
          if r.name == checkpoint_lib.__name__ and r.levelno >= logging.WARNING]


def test_rerun_after_damage_retrains_the_lost_steps_and_matches(tmp_path, caplog):
  workdir = str(tmp_path)
  cfg = toy_config()
  first = loop.run(cfg, workdir)["state"]
  directory = os.path.join(workdir, "checkpoints")
  assert sorted(int(d) for d in os.listdir(directory) if d.isdigit()) == [4, 6, 8]
  flip_largest_file(os.path.join(directory, "8"))

  with caplog.at_level(logging.WARNING):
    rerun = loop.run(cfg, workdir)["state"]
  warned = checkpoint_warnings(caplog)
  assert len(warned) == 1 and "step 8" in warned[0] and "falling back to step 6" in warned[0]
  assert int(rerun.step) == 8
  steps = [json.loads(l)["step"] for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert steps.count(8) == 4  # train and eval rows of step 8, once per run: it ran again
  for a, b in zip(leaves(first), leaves(rerun)):
    np.testing.assert_array_equal(a, b)

  # The re-saved step 8 is intact: a third run resumes from it, with nothing to warn about.
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    third = loop.run(cfg, workdir)["state"]
  assert not checkpoint_warnings(caplog)
  assert int(third.step) == 8
  for a, b in zip(leaves(first), leaves(third)):
    np.testing.assert_array_equal(a, b)


def test_every_checkpoint_damaged_stops_with_checkpoint_error(tmp_path):
  workdir = str(tmp_path)
  cfg = toy_config(num_epochs=1)  # checkpoints at steps 2 and 4
  loop.run(cfg, workdir)
  directory = os.path.join(workdir, "checkpoints")
  for d in os.listdir(directory):
    if d.isdigit():
      flip_largest_file(os.path.join(directory, d))
  with pytest.raises(errors.CheckpointError, match=r"step 4 .*No intact checkpoint.*--workdir"):
    loop.run(cfg, workdir)


def launch(*flags):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=8")
  proc = subprocess.run([sys.executable, "-m", "launch.main", *flags], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("config,shown", [
    ("nope.py", "config file 'nope.py' not found"),
    ("configs/baseline/nope.py:quick", "config file 'configs/baseline/nope.py' not found"),
    ("configs", "config file 'configs' is a directory"),
])
def test_missing_config_file_is_one_line(tmp_path, config, shown):
  code, out, err = launch(f"--config={config}", "--config.num_steps=2",
                          f"--workdir={tmp_path / 'w'}")
  assert code == 1
  assert err.startswith(f"jaxcompress: error: {shown}"), err
  assert len(err.strip().splitlines()) == 1, err
  assert not out and not os.path.exists(tmp_path / "w")


@pytest.mark.slow
def test_quickstart_rerun_after_flipped_bytes_resumes_from_the_previous_step(tmp_path):
  # The quickstart as a user runs it (async checkpoints), then 200 flipped bytes in the largest
  # data file of the newest checkpoint, then the same command again.
  workdir = str(tmp_path / "w")
  flags = ["--config=configs/baseline/digits_resnet20.py:quick", f"--workdir={workdir}",
           "--config.num_steps=8", "--config.checkpoint_every=4", "--config.progress=lines"]
  code, out, err = launch(*flags)
  assert code == 0, err[-2000:]
  directory = os.path.join(workdir, "checkpoints")
  reference = host_arrays(os.path.join(directory, "8"))  # as saved, before the damage
  flip_largest_file(os.path.join(directory, "8"))
  code, out, err = launch(*flags)
  assert code == 0, err[-2000:]
  warned = [l for l in err.splitlines() if "is damaged or unreadable" in l]
  assert len(warned) == 1 and "step 8" in warned[0] and "falling back to step 4" in warned[0]
  assert "Resumed from checkpoint at step 4" in out + err
  assert "NaN" not in out + err and "Traceback" not in err
  resumed = host_arrays(os.path.join(directory, "8"))  # re-trained from step 4 and re-saved
  assert len(reference) == len(resumed)
  for a, b in zip(reference, resumed):
    np.testing.assert_array_equal(a, b)


def host_arrays(step_dir):
  """A step's arrays as NumPy (the launcher's 8-device shardings need not exist here)."""
  path = os.path.join(step_dir, "default")
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(path).item_metadata.tree
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
  tree = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))
  return [np.asarray(x) for x in jax.tree.leaves(tree)]
