"""Tests for jaxcompress.ops.xla_cpu: when the Eigen-convolution flag is set, and what it reports.

XLA reads XLA_FLAGS once per process, so each case runs `import jaxcompress` in a fresh
interpreter and prints the resulting variable.
"""
from __future__ import annotations

import os
import subprocess
import sys

import jaxlib
import pytest

from jaxcompress.ops import xla_cpu

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHECKED = tuple(int(p) for p in jaxlib.__version__.split(".")[:2]) in xla_cpu._CHECKED_JAXLIB


def _flags_after(code: str, **env_overrides: str | None) -> str:
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_cpu.OPT_OUT_ENV)}
  env.update({k: v for k, v in env_overrides.items() if v is not None})
  out = subprocess.run([sys.executable, "-c", code + "; import os; print(os.environ.get("
                        "'XLA_FLAGS', ''))"], cwd=ROOT, env=env, capture_output=True,
                       text=True, check=True, timeout=120)
  return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""


@pytest.mark.skipif(not CHECKED, reason="the flag is only set on jaxlib releases checked for it")
def test_import_adds_the_flag_and_keeps_user_flags():
  flags = _flags_after("import jaxcompress", XLA_FLAGS="--xla_force_host_platform_device_count=2")
  assert xla_cpu.YNN_FUSION_FLAG in flags
  assert "--xla_force_host_platform_device_count=2" in flags


@pytest.mark.parametrize("code,env,reason", [
    ("import jaxcompress", {xla_cpu.OPT_OUT_ENV: "0"}, "opt-out"),
    ("import jaxcompress",
     {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_REDUCE"},
     "the user set the option"),
    ("import jax; jax.numpy.ones(1); import jaxcompress", {}, "backend already started"),
])
def test_flag_is_left_alone(code, env, reason):
  flags = _flags_after(code, **env)
  assert xla_cpu.YNN_FUSION_FLAG not in flags, reason


def test_eigen_convolutions_reads_xla_flags(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", f"--foo=1 {xla_cpu.YNN_FUSION_FLAG}")
  assert xla_cpu.eigen_convolutions()
  monkeypatch.setenv("XLA_FLAGS",
                     "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution")
  assert not xla_cpu.eigen_convolutions()
  monkeypatch.delenv("XLA_FLAGS")
  assert not xla_cpu.eigen_convolutions()


def test_apply_does_nothing_once_jax_runs(monkeypatch):
  # This test process has a running backend (conftest), so XLA_FLAGS can no longer matter.
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  jnp.ones(1).block_until_ready()
  monkeypatch.setenv("XLA_FLAGS", "")
  assert not xla_cpu.apply()
  assert os.environ["XLA_FLAGS"] == ""
