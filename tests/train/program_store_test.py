"""The program store: exported programs reused across restarts without tracing them again."""
from __future__ import annotations

import collections
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import loop_test  # noqa: E402  pylint: disable=g-import-not-at-top
import toy_method  # noqa: E402  pylint: disable=g-import-not-at-top

from jaxcompress import distributed  # noqa: E402
from jaxcompress.train import loop, program_store  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _step(state, batch):
  """A train-step-shaped function: (state, batch) -> (state, metrics)."""
  loss = jnp.mean((batch["x"] @ state["w"] - batch["y"]) ** 2)
  grad = jax.grad(lambda w: jnp.mean((batch["x"] @ w - batch["y"]) ** 2))(state["w"])
  return {"w": state["w"] - 0.1 * grad, "count": state["count"] + 1}, {"loss": loss}


def _inputs():
  rng = np.random.default_rng(0)
  state = {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32), "count": jnp.zeros((), jnp.int32)}
  batch = {"x": jnp.asarray(rng.normal(size=(8, 3)), jnp.float32),
           "y": jnp.asarray(rng.normal(size=(8, 2)), jnp.float32)}
  return state, batch


def _program(directory, fn=_step, key=None, **kwargs):
  mesh = distributed.make_mesh(jax.devices()[:1])
  replicated = distributed.replicated(mesh)
  return program_store.StoredProgram(
      fn, directory=str(directory), name="step", key_parts=key or {"run": 1},
      in_shardings=(replicated, replicated), out_sharding=replicated, **kwargs)


def _counting(fn):
  calls = collections.Counter()

  def counted(*args):
    calls["traces"] += 1
    return fn(*args)
  return counted, calls


def _entries(directory):
  return sorted(f for f in os.listdir(directory) if f.endswith(".program"))


def test_a_restart_loads_the_program_without_tracing_it(tmp_path):
  fn, calls = _counting(_step)
  state, batch = _inputs()
  want = jax.jit(_step)(state, batch)
  first = _program(tmp_path, fn)
  got_first = first(state, batch)
  assert calls["traces"] == 1 and first.loaded == 0 and len(_entries(tmp_path)) == 1
  second = _program(tmp_path, fn)  # a new process would build it like this
  traced = second.trace(*jax.eval_shape(lambda: _inputs()))
  got_second = second(*_inputs())
  assert calls["traces"] == 1 and second.loaded == 1
  for got in (got_first, got_second):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert jax.tree.structure(got) == jax.tree.structure(want)
  assert jax.tree.map(lambda s: (s.shape, s.dtype), traced.out_info) == jax.tree.map(
      lambda a: (a.shape, a.dtype), want)
  assert callable(traced.lower().compile())


def test_donated_arguments_are_consumed(tmp_path):
  state, batch = _inputs()
  _program(tmp_path, donate_argnums=(0,))(state, batch)  # exported and compiled
  state, batch = _inputs()
  _program(tmp_path, donate_argnums=(0,))(state, batch)  # loaded
  assert state["w"].is_deleted() and not batch["x"].is_deleted()


def test_another_key_shape_or_option_is_another_entry(tmp_path):
  fn, calls = _counting(_step)
  state, batch = _inputs()
  _program(tmp_path, fn)(state, batch)
  _program(tmp_path, fn, key={"run": 2})(state, batch)
  _program(tmp_path, fn, compiler_options={"xla_backend_optimization_level": 1})(state, batch)
  wider = {"x": jnp.ones((16, 3)), "y": jnp.ones((16, 2))}
  _program(tmp_path, fn)(state, wider)
  assert calls["traces"] == 4 and len(_entries(tmp_path)) == 4


def test_a_damaged_entry_is_exported_again(tmp_path):
  fn, calls = _counting(_step)
  _program(tmp_path, fn)(*_inputs())
  (entry,) = _entries(tmp_path)
  (tmp_path / entry).write_bytes(b"not a pickle")
  program = _program(tmp_path, fn)
  got = program(*_inputs())
  assert calls["traces"] == 2 and program.loaded == 0
  np.testing.assert_array_equal(got[1]["loss"], jax.jit(_step)(*_inputs())[1]["loss"])
  assert _program(tmp_path, fn)(*_inputs()) is not None and calls["traces"] == 2  # rewritten


def test_a_program_export_refuses_is_jitted_and_not_stored(tmp_path):
  def with_callback(state, batch):
    state = {**state, "w": jax.pure_callback(np.asarray, state["w"], state["w"])}
    return _step(state, batch)

  got = _program(tmp_path, with_callback)(*_inputs())
  np.testing.assert_allclose(got[1]["loss"], jax.jit(_step)(*_inputs())[1]["loss"], rtol=1e-6)
  assert not os.path.exists(tmp_path) or not _entries(tmp_path)


def test_oldest_entries_are_evicted(tmp_path, monkeypatch):
  monkeypatch.setattr(program_store, "MAX_ENTRIES", 2)
  for run in range(3):
    _program(tmp_path, key={"run": run})(*_inputs())
    os.utime(tmp_path / _entries(tmp_path)[0], (run, run)) if run == 0 else None
  assert len(_entries(tmp_path)) == 2
  fn, calls = _counting(_step)
  _program(tmp_path, fn, key={"run": 0})(*_inputs())  # the evicted one: traced again
  assert calls["traces"] == 1


def test_a_loaded_program_replays_its_trace_for_its_effects(tmp_path):
  class Holder:
    pass

  def make(holder):
    def init(rng, batch):
      holder.size = batch["x"].shape[0]  # what a method's init leaves on `self`
      return {"w": jax.random.normal(rng, (3, 2))}
    return init

  args = (jax.random.key(0), _inputs()[1])
  first = Holder()
  _program(tmp_path, make(first), replay_trace=True)(*args)
  second = Holder()
  _program(tmp_path, make(second), replay_trace=True)(*args)
  program_store.settle()
  assert second.size == 8

  def broken(rng, batch):
    raise ValueError("no longer traces")
  _program(tmp_path, broken, replay_trace=True)(*args)  # same key: loaded, replay fails
  with pytest.raises(ValueError, match="no longer traces"):
    program_store.settle()
  program_store._REPLAYS.clear()  # pylint: disable=protected-access


def test_a_stored_result_is_returned_for_the_same_argument_values(tmp_path, monkeypatch):
  def init(rng, batch):
    return {"w": jax.random.normal(rng, (3, 2)) * batch["x"].std(), "rng": jax.random.split(rng)[0]}

  args = (jax.random.key(0), _inputs()[1])
  want = jax.jit(init)(*args)
  _program(tmp_path, init, store_result=True)(*args)
  assert len(os.listdir(tmp_path)) == 2  # the program and its result

  def not_run(self):
    raise AssertionError("the program ran")
  monkeypatch.setattr(program_store._Program, "compiled", not_run)  # pylint: disable=protected-access
  got = _program(tmp_path, init, store_result=True)(*args)
  np.testing.assert_array_equal(got["w"], want["w"])
  assert got["rng"].dtype == want["rng"].dtype
  np.testing.assert_array_equal(jax.random.key_data(got["rng"]), jax.random.key_data(want["rng"]))
  other = (jax.random.key(1), args[1])  # other values, same types: the program runs
  with pytest.raises(AssertionError, match="the program ran"):
    _program(tmp_path, init, store_result=True)(*other)


def test_for_config_needs_cacheable_programs_and_a_cache_directory():
  cfg = loop_test.toy_config()
  assert program_store.for_config(cfg) is None
  cfg.cacheable_programs = True
  directory = jax.config.jax_compilation_cache_dir
  if directory:
    assert program_store.for_config(cfg) == os.path.join(directory, program_store.STORE_SUBDIR)
  jax.config.update("jax_compilation_cache_dir", None)
  try:
    assert program_store.for_config(cfg) is None
  finally:
    jax.config.update("jax_compilation_cache_dir", directory)


def test_engine_restart_reuses_init_and_step_and_trains_the_same(tmp_path, monkeypatch):
  store = tmp_path / "store"
  monkeypatch.setattr(program_store, "for_config",
                      lambda c: str(store) if c.get("cacheable_programs") else None)
  calls = collections.Counter()
  method = toy_method.ToyMethod
  for name in ("init", "train_step"):
    real = getattr(method, name)
    monkeypatch.setattr(method, name, lambda self, *a, _n=name, _f=real: (
        calls.update([_n]), _f(self, *a))[1])
  cfg = loop_test.toy_config(num_epochs=1, cacheable_programs=True)
  first = loop.run(cfg, str(tmp_path / "first"))
  assert calls["train_step"] == 1 and len(_entries(store)) == 2  # init and train_step
  calls.clear()
  second = loop.run(cfg, str(tmp_path / "second"))
  # The step is not traced again; init only abstractly, for what it sets on the method (the
  # evaluator and the epoch hook read its network).
  assert calls["train_step"] == 0 and calls["init"] == 1
  for a, b in zip(jax.tree.leaves(first["state"]), jax.tree.leaves(second["state"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert first["eval"] == second["eval"]
  plain = loop.run(loop_test.toy_config(num_epochs=1), str(tmp_path / "plain"))
  for a, b in zip(jax.tree.leaves(first["state"]), jax.tree.leaves(plain["state"])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # two launcher runs of a NAS search in subprocesses
def test_a_restarted_search_loads_its_programs_and_repeats_the_first_run(tmp_path):
  cache = tmp_path / "cache"
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")

  def run(workdir):
    proc = subprocess.run(
        [sys.executable, "-m", "launch.main", "--config=configs/pc_darts/digits_search.py:quick",
         f"--workdir={workdir}", f"--compilation_cache_dir={cache}", "--config.num_epochs=1",
         "--config.cacheable_programs=True"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(l) for l in open(workdir / "metrics.jsonl", encoding="utf-8")]
    for line in lines:
      line.pop("steps_per_second", None)
    return lines, sorted(os.listdir(cache / program_store.STORE_SUBDIR))

  first, stored = run(tmp_path / "a")
  # init, its result (the initial state) and the search's multi-step training loop
  assert sum(e.endswith(".program") for e in stored) == 2, stored
  assert sum(e.endswith(".result") for e in stored) == 1, stored
  second, stored_again = run(tmp_path / "b")
  assert stored_again == stored  # everything was found: nothing exported again
  assert second == first  # the same search, step for step
