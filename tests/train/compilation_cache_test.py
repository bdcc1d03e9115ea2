"""Tests for jaxcompress.train.compilation_cache and the launcher's --compilation_cache_dir."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from jaxcompress.train import compilation_cache

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _python(code: str, **env_overrides: str) -> str:
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  env.update(env_overrides)
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                       text=True, check=True, timeout=120)
  return out.stdout.strip().splitlines()[-1]


def test_enable_sets_jax_config_and_respects_an_existing_choice(tmp_path):
  code = ("import jax; from jaxcompress.train import compilation_cache as c; "
          "r = c.enable({arg}); print(r, jax.config.jax_compilation_cache_dir, "
          "jax.config.jax_compilation_cache_max_size)")
  chosen = str(tmp_path / "mine")
  assert _python(code.format(arg=repr(chosen))).split() == [chosen, chosen, str(2 << 30)]
  assert os.path.isdir(chosen)
  # "none" leaves the cache off.
  assert _python(code.format(arg="'none'")).split()[:2] == ["None", "None"]
  # An explicit JAX_COMPILATION_CACHE_DIR wins over the argument.
  env_dir = str(tmp_path / "env")
  assert _python(code.format(arg=repr(chosen)), JAX_COMPILATION_CACHE_DIR=env_dir).split()[:2] \
      == [env_dir, env_dir]


def test_default_dir_names_the_cpu():
  path = compilation_cache.default_dir()
  assert os.path.join("jaxcompress", "xla-") in path
  assert len(os.path.basename(path)) == len("xla-") + 12
  assert path == compilation_cache.default_dir()  # stable across calls


@pytest.mark.slow  # two launcher runs in subprocesses
def test_launcher_fills_the_given_cache_and_reuses_it(tmp_path):
  cache = tmp_path / "cache"
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  # XLA's convolutions: programs with oneDNN's custom call (the one-device default) are not
  # serialisable, so the cache would hold only `init` (checked below).
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1",
             JAXCOMPRESS_ONEDNN_CONV="0")

  def run(workdir):
    proc = subprocess.run(
        [sys.executable, "-m", "launch.main",
         "--config=configs/baseline/digits_resnet20.py:quick", f"--workdir={workdir}",
         f"--compilation_cache_dir={cache}", "--config.num_epochs=1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc

  def cached_programs():
    # {program name: {key}}; entries are "<jit name>-<key>-cache" (+ an "-atime" twin).
    programs = {}
    for entry in os.listdir(cache):
      if entry.endswith("-cache"):
        name, key = entry[:-len("-cache")].rsplit("-", 1)
        programs.setdefault(name, set()).add(key)
    return programs

  run(tmp_path / "a")
  first = cached_programs()
  assert any("train_step" in name for name in first), first
  run(tmp_path / "b")
  second = cached_programs()
  # Same computations: every program stored by the first run is served from the cache, so
  # none of them gains a second key. (A program that compiles in about the store threshold,
  # 1 s, may be stored by either run, depending on the machine's load.)
  for name, keys in first.items():
    assert second.get(name) == keys, (name, keys, second.get(name))


@pytest.mark.slow  # a launcher run in a subprocess
def test_onednn_programs_run_uncached_without_a_warning(tmp_path):
  cache = tmp_path / "cache"
  env = {k: v for k, v in os.environ.items()
         if k not in ("JAX_COMPILATION_CACHE_DIR", "JAXCOMPRESS_ONEDNN_CONV")}
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  proc = subprocess.run(
      [sys.executable, "-W", "error::UserWarning:jax._src.compiler", "-m", "launch.main",
       "--config=configs/baseline/digits_resnet20.py:quick", f"--workdir={tmp_path / 'a'}",
       f"--compilation_cache_dir={cache}", "--config.num_epochs=1"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "Error writing persistent compilation cache entry" not in proc.stderr
  assert any(e.startswith("jit_init") for e in os.listdir(cache))
