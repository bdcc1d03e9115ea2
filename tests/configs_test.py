"""Registry-wide config check: every experiment config loads and names a known method and dataset."""
from __future__ import annotations

import importlib
import os

import ml_collections
import pytest

from jaxcompress import methods
from jaxcompress.data import sources, transforms

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config_modules():
  out = []
  for paper in sorted(os.listdir(os.path.join(ROOT, "configs"))):
    folder = os.path.join(ROOT, "configs", paper)
    if not os.path.isdir(folder) or paper.startswith("_"):
      continue
    out += [f"configs.{paper}.{f[:-3]}" for f in sorted(os.listdir(folder))
            if f.endswith(".py") and not f.startswith("_")]
  return out


@pytest.mark.parametrize("module", _config_modules())
@pytest.mark.parametrize("arg", [None, "quick"])
def test_config_loads_and_names_registered_parts(module, arg):
  staged = importlib.import_module(module).get_config(arg)
  assert isinstance(staged, ml_collections.ConfigDict)
  assert importlib.import_module(module).__doc__, "configs document command, hardware, metric"
  runs = ([staged.stages[n] for n in staged.stage_order if not staged.stages[n].get("report")]
          if staged.get("stages") else [staged])
  for config in runs:
    _check_run(config)


def _check_run(config):
  assert config.method in methods.names()
  methods.get(config.method)  # as the engine does: a method module may register its transforms
  transforms.load_providers()  # registers task-specific sources (super-resolution)
  assert config.data.name in sources.names()
  if config.data.get("transform"):
    assert transforms.get(config.data.transform, train=True,
                          **dict(config.data.get("transform_kwargs", {}))) is not None
