"""Each colab runs top to bottom on its quick config, and its .ipynb is in sync with its .py."""
from __future__ import annotations

import os
import runpy

import jupytext
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLABS = sorted(f for f in os.listdir(os.path.join(ROOT, "colabs")) if f.endswith(".py"))
# Colabs whose quick run takes 19-40 s on two cores: they run with the slow checks (`-m slow`,
# also in CI), the quick ones with the unit suite.
LONG_COLABS = {"abandit_nas.py", "dmad.py", "dsm.py", "pams.py", "rbnn.py", "reid.py"}


@pytest.mark.parametrize("name", COLABS)
def test_ipynb_paired_with_py(name):
  py = jupytext.read(os.path.join(ROOT, "colabs", name))
  nb = jupytext.read(os.path.join(ROOT, "colabs", name[:-3] + ".ipynb"))
  strip = lambda cells: [(c.cell_type, c.source.strip()) for c in cells]  # noqa: E731
  assert strip(py.cells) == strip(nb.cells), "run `jupytext --sync colabs/*.py`"


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.slow) if name in LONG_COLABS else name
    for name in COLABS])
def test_colab_runs_on_quick_config(name, monkeypatch):
  monkeypatch.setenv("QUICKSTART_ARG", "quick")
  monkeypatch.chdir(ROOT)
  namespace = runpy.run_path(os.path.join(ROOT, "colabs", name))
  workdir = namespace["workdir"]
  # A run writes metrics.jsonl; a staged run writes stages.json and one run folder per stage.
  assert (os.path.exists(os.path.join(workdir, "metrics.jsonl")) or
          os.path.exists(os.path.join(workdir, "stages.json")))


def test_long_colabs_name_existing_colabs():
  assert LONG_COLABS <= set(COLABS)
