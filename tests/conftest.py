"""Test set-up: 8 fake CPU devices (DESIGN.md section 7) before JAX is imported.

Also, for the whole session:
  * float32 matmuls and convolutions at full precision on every backend. GPUs default to
    TF32 (relative error ~1e-3), which the NumPy-reference tolerances (1e-5) would reject; on
    CPU this changes nothing.
  * JAX's persistent compilation cache in one directory shared by the xdist workers of a
    run, so identical computations compiled by several tests are compiled once.
"""
import os
import tempfile

_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (after the environment above)

from jaxcompress.train import compilation_cache  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
# One directory per pytest run (xdist workers share PYTEST_XDIST_TESTRUNUID); a plain run
# gets its own. Entries are keyed by computation, options and versions, so sharing is safe.
_run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
compilation_cache.enable(os.path.join(tempfile.gettempdir(), "jaxcompress-test-xla-cache", _run),
                         min_compile_secs=0.5)
