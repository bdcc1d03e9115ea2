"""Method registry: the engine reaches paper code only through `get(name)`.

Built-in methods are imported lazily by module path so that importing the engine does not import
every paper. Users register their own with `@register("name")`.
"""
from __future__ import annotations

import importlib
from typing import Callable

from jaxcompress.errors import ConfigError
from jaxcompress.methods.base import Method

# name -> "module:attribute" of the built-in methods.
_BUILTIN = {
    "classification": "jaxcompress.methods.classification:Classification",
    "rbnn": "jaxcompress.methods.rbnn:RBNN",
    "sr": "jaxcompress.methods.super_resolution:SuperResolution",
    "pams": "jaxcompress.methods.pams:PAMS",
    "pc_darts": "jaxcompress.methods.pc_darts:PCDarts",
    "bnas": "jaxcompress.methods.bnas:BNAS",
    "nas_eval": "jaxcompress.methods.nas_eval:NASEval",
    "abandit_nas": "jaxcompress.methods.abandit_nas:ABanditNAS",
    "adversarial": "jaxcompress.methods.adversarial:AdversarialTraining",
    "cyclegan": "jaxcompress.methods.cyclegan:CycleGAN",
    "pix2pix": "jaxcompress.methods.pix2pix:Pix2Pix",
    "dmad_cyclegan": "jaxcompress.methods.dmad_search:CycleGANSearch",
    "dmad_pix2pix": "jaxcompress.methods.dmad_search:Pix2PixSearch",
    "dmad_finetune_cyclegan": "jaxcompress.methods.dmad_finetune:CycleGANFinetune",
    "dmad_finetune_pix2pix": "jaxcompress.methods.dmad_finetune:Pix2PixFinetune",
    "dsm": "jaxcompress.methods.dsm:DSM",
    "linear_probe": "jaxcompress.methods.linear_probe:LinearProbe",
    "mebnet_source": "jaxcompress.methods.mebnet_source:MEBNetSource",
    "mebnet": "jaxcompress.methods.mebnet:MEBNet",
    "ddan": "jaxcompress.methods.ddan:DDAN",
    "dtdn": "jaxcompress.methods.dtdn:DTDN",
    "cogd_prune": "jaxcompress.methods.cogd_prune:CoGDPrune",
    "cogd_finetune": "jaxcompress.methods.cogd_prune:CoGDFinetune",
}
_REGISTERED: dict[str, Callable[..., Method]] = {}

# Stage reports (a stage with `report=<name>`, jaxcompress.train.stages): name -> "module:function"
# of `fn(stage_config, {input stage: workdir}, stage_workdir, root_workdir) -> dict`.
_REPORTS = {
    "pams_table": "jaxcompress.methods.pams:stage_table",
    "dmad_materialize": "jaxcompress.methods.dmad_stages:dmad_materialize",
    "dmad_report": "jaxcompress.methods.dmad_stages:dmad_report",
    "dsm_report": "jaxcompress.methods.dsm:dsm_report",
    "mebnet_report": "jaxcompress.methods.mebnet:mebnet_report",
    "ddan_report": "jaxcompress.methods.ddan:ddan_report",
    "dtdn_report": "jaxcompress.methods.dtdn:dtdn_report",
    "cogd_csc": "jaxcompress.sparse_coding.stages:cogd_csc",
    "cogd_materialize": "jaxcompress.methods.cogd_prune_stages:cogd_materialize",
    "cogd_prune_report": "jaxcompress.methods.cogd_prune_stages:cogd_prune_report",
}


def register(name: str) -> Callable[[type[Method]], type[Method]]:
  """Class decorator registering a Method subclass under `name`."""
  def wrap(cls: type[Method]) -> type[Method]:
    _REGISTERED[name] = cls
    return cls
  return wrap


def names() -> list[str]:
  """All method names known to the registry."""
  return sorted(set(_BUILTIN) | set(_REGISTERED))


def get(name: str) -> Callable[..., Method]:
  """Returns the Method class registered under `name`.

  Raises:
    ValueError: naming the known methods when `name` is unknown.
  """
  if name in _REGISTERED:
    return _REGISTERED[name]
  if name not in _BUILTIN:
    raise ConfigError(f"Unknown method {name!r}. Known methods: {', '.join(names())}. "
                     "Set config.method to one of them.")
  module, attr = _BUILTIN[name].split(":")
  return getattr(importlib.import_module(module), attr)


def get_report(name: str) -> Callable[..., dict]:
  """The stage report registered under `name`.

  Raises:
    ConfigError: naming the known reports when `name` is unknown.
  """
  if name not in _REPORTS:
    raise ConfigError(f"Unknown stage report {name!r}. Known: {', '.join(sorted(_REPORTS))}.")
  module, attr = _REPORTS[name].split(":")
  return getattr(importlib.import_module(module), attr)
