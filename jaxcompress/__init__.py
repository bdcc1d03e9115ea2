"""jaxcompress: train, search, compress and deploy efficient networks in JAX/Flax.

Technique libraries (`quant`, `prune`, `distill`, `nas`, `robust`) are pure JAX functions and
small linen layers; `models` builds architectures through layer factories; `train` is the one
engine every paper method (`methods`) runs on. `jaxcompress.summary(model, *inputs)` prints the
per-layer parameter/bit/MAC table.
"""
# Before anything imports jax and starts a backend: XLA reads XLA_FLAGS once per process.
from jaxcompress.ops import xla_cpu as _xla_cpu

_xla_cpu.apply()

from jaxcompress.summary import summary  # noqa: F401  (contract: jaxcompress.summary(model, ...))

__version__ = "0.1.0"
