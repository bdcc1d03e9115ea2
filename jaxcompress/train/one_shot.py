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

Unrolled supernets are another matter: every (cell, edge, op) of a search network is unrolled
into the init program, whose compile time grows with their number. (Search networks whose cells
run their edges as loops, the default, draw each loop's edges with one vectorised edge init, so
their init program stays small and is jitted: `nas.search.SearchCell`,
`nas.abandit_edge_loops`.) `eager_init` runs such an init op by
op instead (each primitive is compiled once for its shapes and cached), and the caller's traced
program receives the drawn variables as constants. PC-DARTS CIFAR-10 supernet (8 cells x 14
edges x 8 ops), same machine: 336 s jitted at level 1, 17 s eagerly; the digits supernet (3 x 9 x
8): 27.9 s vs 13.5 s. Under `JIT_INIT_MAX_OPS` (cell, edge, op) triples one jitted program is
faster (ABanditNAS's 40-op quick supernet: 3.8 s vs 7.3 s). The eager draws equal the jitted
ones to float rounding (2.3e-10 at most: XLA fuses the scaling of the normal draws). The trade:
eager draws are not served by the persistent compilation cache, so a rerun with a warm cache
pays them again (digits supernet: 7.3 s for the cached jitted init, tracing and lowering
included, against 13.5 s; the CIFAR-10 supernet's init traces and lowers in 5.6 s), while a cold
start saves minutes.
"""
from __future__ import annotations

from typing import Any, Callable

import jax

# An XLA DebugOptions field, passed per compile (it is part of the compilation-cache key).
ONE_SHOT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}
# Supernets with at most this many (cell, edge, op) triples initialise under one `jax.jit`
# (measured on a loaded 2-core CPU: 40 ops 3.8 s jitted vs 7.3 s eagerly; 80 ops 12.4 s vs 12.6 s).
JIT_INIT_MAX_OPS = 64


def eager_init(init: Callable[..., Any], rng: jax.Array, *args: Any, seed: int = 0,
               **kwargs: Any) -> Any:
  """`init(rng, *args, **kwargs)` run eagerly, op by op, also while the caller is being traced.

  Under `jax.ensure_compile_time_eval` every operation runs as it is reached, so a caller that
  is itself traced (the engine's jitted `method.init`) gets the result as constants instead of a
  program holding the whole computation (module docstring). Array arguments that are tracers
  there are replaced by zeros of their shape and dtype: parameter initialisers read shapes, not
  values.

  Args:
    init: e.g. a Flax module's `init`.
    rng: the key; a traced key (no value yet) is replaced by `jax.random.key(seed)`, the
      engine's init key.
    *args, **kwargs: `init`'s other arguments.
    seed: the key's seed when `rng` is traced (the run's `config.seed`).

  Returns:
    `init`'s result, as concrete arrays.
  """
  def concrete(x: Any) -> Any:
    if isinstance(x, jax.core.Tracer):
      return jax.numpy.zeros(x.shape, x.dtype)
    return x

  with jax.ensure_compile_time_eval():  # also for the key and the zeros: no tracers at all
    if isinstance(rng, jax.core.Tracer):
      rng = jax.random.key(seed)
    args, kwargs = jax.tree.map(concrete, (args, kwargs))
    return init(rng, *args, **kwargs)


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
  return jax.jit(fn, compiler_options=compiler_options() or None, **jit_kwargs)


def compiler_options() -> dict[str, int]:
  """The XLA options of one-shot programs here: `ONE_SHOT_COMPILER_OPTIONS` on CPU, else none."""
  return dict(ONE_SHOT_COMPILER_OPTIONS) if jax.default_backend() == "cpu" else {}
