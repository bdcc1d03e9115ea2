"""Named per-example transforms (`config.data.transform`) applied inside the grain pipeline.

Classification needs none (augmentation is configured by `ImageOptions`); tasks with structured
examples register theirs, e.g. paired LR/HR patch crops for super-resolution.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from jaxcompress.errors import ConfigError

ExampleFn = Callable[..., Any]
_TRANSFORMS: dict[str, Callable[..., ExampleFn]] = {}
# Modules that register transforms and sources when imported.
_PROVIDERS = ("jaxcompress.data.sr", "jaxcompress.data.imagenet", "jaxcompress.data.gan",
              "jaxcompress.data.video", "jaxcompress.data.video_offline",
              "jaxcompress.data.video_folders",
              "jaxcompress.data.reid_folders", "jaxcompress.data.reid_dg",
              "jaxcompress.data.reid_offline", "jaxcompress.data.office_folders")


def register(name: str) -> Callable[[Callable[..., ExampleFn]], Callable[..., ExampleFn]]:
  """Registers a factory `(train: bool, **kwargs) -> example_fn` under `name`."""
  def wrap(factory: Callable[..., ExampleFn]) -> Callable[..., ExampleFn]:
    _TRANSFORMS[name] = factory
    return factory
  return wrap


def load_providers() -> None:
  """Imports the modules that register transforms/sources (missing ones are skipped)."""
  for module in _PROVIDERS:
    try:
      importlib.import_module(module)
    except ModuleNotFoundError as e:
      if e.name != module:
        raise


def get(name: str | None, *, train: bool, **kwargs: Any) -> ExampleFn | None:
  """The example transform registered as `name` (None -> no transform).

  Raises:
    ConfigError: unknown name, listing the known ones.
  """
  if not name:
    return None
  load_providers()
  if name not in _TRANSFORMS:
    raise ConfigError(f"Unknown data transform {name!r}; known: {sorted(_TRANSFORMS)}. "
                      "Set config.data.transform to one of them (or leave it empty).")
  return _TRANSFORMS[name](train=train, **kwargs)
