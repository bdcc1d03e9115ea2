"""Compiling the first training step while the initial state is being built.

Before the first step a run traces and compiles its initial-state program and then its training
step, one after the other, although the step needs only the state's shapes. XLA compiles
without holding Python's GIL, so the engine traces the initial-state program for its output
shapes, hands those to a background thread that traces, lowers and compiles the step (the
runner's `warm`), and meanwhile compiles and runs the initial state (and reads any checkpoint).
JAX's in-memory caches then serve the step's first real call: nothing compiles twice, and the
step's tracing (Python) overlaps the initial state's compilation (BENCHMARKS.md, "Time to first
step").

The warm-up only ever saves time: if it fails or the real arguments differ in type from the
shapes it compiled for (a restored checkpoint with other dtypes), the step compiles as usual on
its first call, and any real error is raised there.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import jax

_log = logging.getLogger(__name__)


def output_shapes(fn: Any, *args: Any) -> Any:
  """The output shapes and dtypes of jitted `fn(*args)`, from its trace (which `fn(*args)`
  then reuses).

  Args:
    fn: a `jax.jit` function.
    *args: its arguments.

  Returns:
    A tree of `jax.ShapeDtypeStruct` like `fn(*args)`'s output.
  """
  return fn.trace(*args).out_info


class Warmup:
  """Runs `compile_fn()` in a daemon thread; `wait()` joins it.

  Args:
    compile_fn: traces, lowers and compiles a program (e.g. a runner's `warm`).
  """

  def __init__(self, compile_fn: Callable[[], Any]):
    self.error: BaseException | None = None
    self.result: Any = None  # compile_fn's return value (e.g. the compiled program)
    self._compile_fn = compile_fn
    self._thread = threading.Thread(target=self._run, name="jaxcompress-warmup", daemon=True)
    self._thread.start()

  def _run(self) -> None:
    try:
      self.result = self._compile_fn()
    except Exception as e:  # pylint: disable=broad-except
      # The first real call compiles the step itself and raises any real error there.
      self.error = e
      _log.debug("Warm-up compilation failed (%s); the first step compiles it.", e)

  def wait(self) -> None:
    """Blocks until the compilation has finished (or failed)."""
    self._thread.join()


def shapes_of(tree: Any) -> Any:
  """`jax.ShapeDtypeStruct`s (with weak types and shardings) of a tree of arrays."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, weak_type=getattr(x, "weak_type", False),
                                     sharding=getattr(x, "sharding", None)), tree)
