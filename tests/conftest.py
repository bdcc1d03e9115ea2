"""Test set-up: 8 fake CPU devices before JAX is imported.

Also, for the whole test run:
  * float32 matmuls and convolutions at full precision on every backend. GPUs default to
    TF32 (relative error ~1e-3), which the NumPy-reference tolerances (1e-5) would reject; on
    CPU this changes nothing.
  * JAX's persistent compilation cache in one directory shared by the xdist workers and by
    later runs, so a computation compiled once is loaded from disk afterwards.
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
# One directory for every test run on this machine (xdist workers included), bounded in size:
# entries are keyed by computation, compile options and jax/jaxlib versions, so a rerun of the
# suite reuses what an earlier run compiled and a changed test simply misses.
_cache_dir = compilation_cache.enable(
    os.path.join(tempfile.gettempdir(), "jaxcompress-test-xla-cache"), min_compile_secs=0.5,
    max_size_bytes=1 << 30)
if _cache_dir:  # launcher subprocesses (CLI and colab tests) use it too, not ~/.cache
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _cache_dir)
