"""Regex parameter groups: label each parameter by the first pattern matching its path.

Used for per-group optimizers (latent binary weights vs float weights, PAMS alphas at 1e-2 vs
weights at 1e-4, NAS architecture parameters), as big_vision's `optax.make` does.

Example:
  >>> labels = label_params(params, [(".*alpha.*", "alpha"), (".*", "weights")])
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import flax
import jax

from jaxcompress.errors import ConfigError


def path_str(path: tuple[Any, ...]) -> str:
  """"stage1_block0/Conv_0/kernel" from a jax key path."""
  parts = []
  for k in path:
    parts.append(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))))
  return "/".join(parts)


def label_params(params: Any, rules: Sequence[tuple[str, str]]) -> Any:
  """A pytree of group labels: the label of the first regex (full match) matching each path.

  Args:
    params: parameter pytree.
    rules: (regex, label) pairs in priority order.

  Returns:
    A pytree of strings with `params`' structure.

  Raises:
    ConfigError: a parameter matches no rule (add a catch-all ".*" rule).
  """
  compiled = [(re.compile(p), label) for p, label in rules]

  def label(path, _):
    name = path_str(path)
    for pattern, lab in compiled:
      if pattern.fullmatch(name):
        return lab
    raise ConfigError(f"Parameter {name!r} matches no optimizer group regex "
                      f"{[p for p, _ in rules]}; add a catch-all '.*' group.")

  return jax.tree_util.tree_map_with_path(label, flax.core.unfreeze(params))
