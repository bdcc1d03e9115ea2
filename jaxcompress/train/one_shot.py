"""Programs that run once (parameter initialisation), compiled for compile speed on CPU.

`method.init` draws every parameter with threefry: hundreds of hash computations (400 in the
PC-DARTS digits supernet) that XLA:CPU's LLVM backend optimises at its default level for a
program that then runs exactly once. At LLVM level 1 the same program compiles about twice as
fast with bit-identical results (`tests/train/one_shot_test.py` checks the equality).
`benchmarks/init_compile.py`, 2-core development machine, jaxlib 0.10.2, compile seconds
default -> level 1:

  =============================================  ==============
  init of                                        compile (s)
  =============================================  ==============
  PC-DARTS digits supernet (quick config)        49.4 -> 26.8
  RBNN ResNet-20                                 8.2 -> 6.0
  ResNet-20                                      3.0 -> 1.1
  =============================================  ==============

Level 0 compiles faster still but changed the drawn values (a different float code path), so it
is not used. Training and evaluation steps keep the default: compiling the PC-DARTS digits step
at level 1 took as long (40.9 s vs 40.2-43.1 s), and steps run many times. GPU/TPU compiles are
untouched.
"""
from __future__ import annotations

from typing import Any, Callable

import jax

# An XLA DebugOptions field, passed per compile (it is part of the compilation-cache key).
ONE_SHOT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


def jit_once(fn: Callable[..., Any], **jit_kwargs: Any) -> Callable[..., Any]:
  """`jax.jit(fn, **jit_kwargs)` for a function called once per process (e.g. `method.init`).

  On CPU it compiles with `ONE_SHOT_COMPILER_OPTIONS` (part of the cache keys: the in-memory
  and persistent compilation caches serve repeated calls and reruns as usual); elsewhere it is
  the plain jitted function.

  Args:
    fn: the function to compile.
    **jit_kwargs: `jax.jit` arguments (shardings, static or donated arguments).

  Returns:
    A callable with `fn`'s signature and results.
  """
  if jax.default_backend() != "cpu":
    return jax.jit(fn, **jit_kwargs)
  return jax.jit(fn, compiler_options=ONE_SHOT_COMPILER_OPTIONS, **jit_kwargs)
