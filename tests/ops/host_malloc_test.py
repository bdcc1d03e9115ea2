"""Host allocator settings (jaxcompress/ops/host_malloc.py): effect and when they apply."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from unittest import mock

from absl.testing import absltest

from jaxcompress.ops import host_malloc

# A jitted op with a 32 MiB output, called repeatedly; prints whether the settings were applied
# and the minor page faults of the last `_MEASURED` calls (after the allocator has warmed up).
_WARMUP, _MEASURED = 20, 40
_PROBE = textwrap.dedent("""
    import resource
    import jax, jax.numpy as jnp
    import jaxcompress
    from jaxcompress.ops import host_malloc
    x = jnp.ones((128, 32, 32, 64), jnp.float32)
    f = jax.jit(lambda x: jnp.maximum(x * 1.1 + 0.3, 0.0))
    for i in range({total}):
      if i == {warmup}:
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      f(x).block_until_ready()
    print(host_malloc.applied(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
""").format(total=_WARMUP + _MEASURED, warmup=_WARMUP)
_PAGES_PER_OUTPUT = 128 * 32 * 32 * 64 * 4 // 4096  # 8192 pages of 4 KiB


def _probe(**env: str) -> tuple[bool, int]:
  full_env = {**os.environ, "JAX_PLATFORMS": "cpu", **env}
  full_env.pop("XLA_FLAGS", None)  # one CPU device is enough; conftest's 8 are not needed
  out = subprocess.run([sys.executable, "-c", _PROBE], env=full_env, capture_output=True,
                       text=True, timeout=300, check=True).stdout.split()
  return out[-2] == "True", int(out[-1])


@absltest.skipIf(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                 "the settings are glibc mallopt parameters")
class FreshProcessTest(absltest.TestCase):

  def test_large_buffers_are_reused_instead_of_faulted_in_again(self):
    applied, faults = _probe(**{host_malloc.OPT_IN_ENV: "1"})
    self.assertTrue(applied)
    # Without the settings each call faults its whole output in (8192 pages); with them, freed
    # buffers come back from the heap. The heap still grows while the number of outputs in
    # flight (freed asynchronously) rises, which load on the machine can stretch past warm-up:
    # measured 0-5 such growths in 20 calls on a busy 2-core machine, none on an idle one.
    self.assertLess(faults, _MEASURED * _PAGES_PER_OUTPUT // 4)

  def test_default_keeps_glibc_defaults(self):
    env = {k: v for k, v in os.environ.items() if k != host_malloc.OPT_IN_ENV}
    with mock.patch.dict(os.environ, env, clear=True):
      applied, faults = _probe()
    self.assertFalse(applied)
    # The behaviour the settings remove: every call faults its output in again.
    self.assertGreater(faults, _MEASURED * _PAGES_PER_OUTPUT * 9 // 10)

  def test_not_applied_when_an_accelerator_is_asked_for(self):
    # Only the import: without a GPU here, JAX would refuse to start the CUDA backend.
    env = {**os.environ, "JAX_PLATFORMS": "cuda,cpu", host_malloc.OPT_IN_ENV: "1"}
    out = subprocess.run(
        [sys.executable, "-c", "import jaxcompress; from jaxcompress.ops import host_malloc; print(host_malloc.applied())"],
        env=env, capture_output=True, text=True, timeout=120, check=True).stdout
    self.assertEqual(out.split()[-1], "False")


  def test_launcher_flag_applies_them(self):
    # The launchers' shared set-up, as `python -m launch.main ... --host_malloc` runs it.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = textwrap.dedent("""
        import sys, tempfile
        from launch import main
        main.parse_flags(["main", "--config=configs/baseline/digits_resnet20.py",
                          "--workdir=" + tempfile.mkdtemp(), "--compilation_cache_dir=none",
                          *sys.argv[1:]])
        main.setup_process()
        from jaxcompress.ops import host_malloc
        print(host_malloc.applied())
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", host_malloc.OPT_IN_ENV)}
    env["JAX_PLATFORMS"] = "cpu"
    for flags, expected in (([], "False"), (["--host_malloc"], "True")):
      out = subprocess.run([sys.executable, "-c", code, *flags], cwd=root, env=env,
                           capture_output=True, text=True, timeout=300, check=True).stdout
      self.assertEqual(out.split()[-1], expected, flags)


class DecisionTest(absltest.TestCase):

  def test_jax_platforms_decides_when_set(self):
    for value, expected in (("cpu", True), ("cpu,cuda", True), ("cuda", False),
                            ("tpu,cpu", False), (" CPU ", True)):
      with mock.patch.dict(os.environ, {"JAX_PLATFORMS": value}):
        self.assertEqual(host_malloc.runs_on_cpu(), expected, value)

  def test_installed_plugin_decides_when_unset(self):
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    for installed in (True, False):
      with mock.patch.dict(os.environ, env, clear=True), \
          mock.patch.object(host_malloc, "_accelerator_plugin_installed", return_value=installed):
        self.assertEqual(host_malloc.runs_on_cpu(), not installed)

  def test_too_late_once_a_backend_runs(self):
    # This test process has started its backend (conftest, earlier tests): apply must refuse
    # rather than claim an effect that M_ARENA_MAX can no longer have.
    import jax  # pylint: disable=g-import-not-at-top
    jax.devices()
    with mock.patch.object(host_malloc, "_applied", False), \
        mock.patch.dict(os.environ, {"JAX_PLATFORMS": "cpu"}):
      self.assertFalse(host_malloc.apply())


if __name__ == "__main__":
  absltest.main()
