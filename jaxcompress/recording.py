"""Records every module call of one shape-only run of a linen model.

Model analyses (the summary table, `quant.export`'s conversion, `quant.export_int8`'s quantizer
search, `quant.quantize`'s first/last-layer pre-pass) all need the same thing: the sequence of
`__call__`s one `init` or `apply` makes, with each module, its path, its inputs and its output.
`record_calls` runs the given function once under `jax.eval_shape` (nothing is computed) inside a
`flax.linen.intercept_methods` interceptor that records exactly that, and nothing else.

The run is isolated from the caller's interceptors (`isolated`): a recording made while another
interceptor is active (e.g. `quantize`'s pre-pass traced inside a summary) neither shows its calls
to the outer interceptor nor is altered by it.

Example:
  >>> calls, variables = record_calls(lambda x: model.init(jax.random.key(0), x),
  ...                                 jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
  >>> convs = [c.name for c in calls if isinstance(c.module, nn.Conv)]   # paths, call order
  >>> calls[0].output.shape              # outputs are abstract arrays: shape and dtype only
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
from flax.linen import module as nn_module


@dataclasses.dataclass
class ModuleCall:
  """One recorded `__call__`.

  Attributes:
    module: the bound module instance that was called.
    path: its path in the model (`module.path`, () for the root).
    args: positional arguments of the call (abstract arrays, i.e. tracers with shape and dtype).
    kwargs: keyword arguments of the call.
    parent: index (in the recording) of the call that was running when this one started, None
      for a top-level call.
    output: what the call returned.
    returned: rank of this call among all calls by the order in which they returned (children
      return before their parent), -1 while it runs.
    variables: `module.variables` right after the call (only with `record_calls(...,
      variables=True)`), else None.
  """
  module: nn.Module
  path: tuple[str, ...]
  args: tuple[Any, ...]
  kwargs: dict[str, Any]
  parent: int | None
  output: Any = None
  returned: int = -1
  variables: Any = None

  @property
  def name(self) -> str:
    """The path joined with "/" ("" for the root), the key of parameter-tree lookups."""
    return "/".join(self.path)

  @property
  def x(self) -> Any:
    """The main input: the first positional argument, else the first keyword argument."""
    if self.args:
      return self.args[0]
    return next(iter(self.kwargs.values()), None)


@contextlib.contextmanager
def isolated() -> Iterator[None]:
  """Runs the enclosed trace without the callers' method interceptors.

  Uses flax's private interceptor stack (`flax.linen.module._global_interceptor_stack`): flax
  has no public way to run a nested trace outside the active `intercept_methods` contexts.
  """
  stack = nn_module._global_interceptor_stack._storage  # pylint: disable=protected-access
  saved = list(stack)
  stack[:] = []
  try:
    yield
  finally:
    stack[:] = saved


def record_calls(fn: Callable[..., Any], *args: Any,
                 variables: bool = False) -> tuple[list[ModuleCall], Any]:
  """Runs `fn(*args)` shape-only and records every module `__call__` it makes.

  Args:
    fn: a function that runs the model once, e.g. `lambda v, x: model.apply(v, x, train=False)`
      or `lambda x: model.init(rngs, x)`; static arguments belong in its closure.
    *args: its array arguments (arrays or `jax.ShapeDtypeStruct`s; pytrees of them).
    variables: also record each module's variables right after its call.

  Returns:
    `(calls, result)`: the calls in the order they started (a parent before its children), and
    `fn`'s result as `jax.ShapeDtypeStruct`s (`jax.eval_shape`).
  """
  calls: list[ModuleCall] = []
  running: list[int] = []
  done = [0]

  def interceptor(next_fun, call_args, call_kwargs, context):
    if context.method_name != "__call__":
      return next_fun(*call_args, **call_kwargs)
    module = context.module
    call = ModuleCall(module, tuple(module.path), tuple(call_args), dict(call_kwargs),
                      running[-1] if running else None)
    running.append(len(calls))
    calls.append(call)
    try:
      out = next_fun(*call_args, **call_kwargs)
    finally:
      running.pop()
    call.output = out
    call.returned = done[0]
    done[0] += 1
    if variables:
      call.variables = module.variables
    return out

  def run(*xs):
    with nn.intercept_methods(interceptor):
      return fn(*xs)

  with isolated():
    result = jax.eval_shape(run, *args)
  return calls, result
