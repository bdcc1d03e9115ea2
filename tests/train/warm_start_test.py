"""The engine compiles the first training step while it builds the initial state
(`train.warm_start`): the first step's call then compiles nothing, for both host runners, and a
failed warm-up costs nothing but time."""
from __future__ import annotations

import logging
import os
import sys
import threading

import jax
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import toy_method  # pylint: disable=g-import-not-at-top,wrong-import-position  # noqa: E402,F401
from loop_test import toy_config  # noqa: E402

from jaxcompress.train import loop, warm_start  # noqa: E402


def _step_compilations(caplog, fn):
  """fn()'s result and how many programs named like a training step it compiled."""
  caplog.clear()
  with caplog.at_level(logging.WARNING, logger="jax"), jax.log_compiles(True):
    result = fn()
  compiled = [r.getMessage() for r in caplog.records
              if "Finished XLA compilation" in r.getMessage() and "train_step" in r.getMessage()]
  return result, compiled


@pytest.mark.parametrize("steps_per_call,num_devices", [(1, 1), (4, 1), (4, -1)])
def test_first_step_finds_its_program_compiled(tmp_path, caplog, steps_per_call, num_devices):
  config = toy_config(steps_per_call=steps_per_call, num_devices=num_devices)
  setup = loop.build(config, str(tmp_path))
  runner = loop.make_runner(setup, eval_every=setup.steps_per_epoch,
                            checkpoint_every=setup.steps_per_epoch)
  threads = []

  def warm(state, batch):
    threads.append(threading.current_thread())
    runner.warm(state, batch)

  state = loop.initial_state(setup, None, warm=warm)
  assert threads and threads[0] is not threading.main_thread()
  runner.start(0)
  end = min(2, steps_per_call)  # one host batch per call, or two steps of one call
  (state, metrics), compiled = _step_compilations(caplog, lambda: runner.advance(state, 0, end))
  assert compiled == [], compiled
  assert metrics["loss"].shape[0] == end
  # Without the warm-up the same call compiles the step (the check above can fail).
  runner = loop.make_runner(setup, eval_every=setup.steps_per_epoch,
                            checkpoint_every=setup.steps_per_epoch)
  state = loop.initial_state(setup, None)
  runner.start(0)
  _, compiled = _step_compilations(caplog, lambda: runner.advance(state, 0, end))
  assert len(compiled) == 1, compiled


def test_failed_warm_up_only_costs_time(tmp_path):
  setup = loop.build(toy_config(steps_per_call=1, num_devices=1), str(tmp_path))

  def broken(state, batch):
    raise RuntimeError("no compiler today")

  state = loop.initial_state(setup, None, warm=broken)
  runner = loop.make_runner(setup, eval_every=setup.steps_per_epoch,
                            checkpoint_every=setup.steps_per_epoch)
  runner.start(0)
  state, metrics = runner.advance(state, 0, 1)
  assert bool(jax.numpy.isfinite(metrics["loss"]).all())
  warmup = warm_start.Warmup(lambda: broken(None, None))
  warmup.wait()
  assert isinstance(warmup.error, RuntimeError)
