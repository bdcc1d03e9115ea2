"""The DSM configs carry the official recipes (arXiv 2009.05757; FingerRec/DSM-decoupling-scene-
motion `src/option.py`, `src/ft.py`) and build with registered methods, models and sources."""
from __future__ import annotations

import importlib

import pytest

from jaxcompress import methods, models
from jaxcompress.data import sources, transforms

ROWS = ["i3d_ucf101:dsm", "i3d_ucf101:moco", "i3d_ucf101:triplet", "i3d_ucf101:random",
        "c3d_ucf101_retrieval", "quick"]


def _config(name):
  module, _, arg = name.partition(":")
  return importlib.import_module(f"configs.dsm.{module}").get_config(arg or None)


@pytest.mark.parametrize("name", ROWS)
def test_every_stage_names_known_parts(name):
  transforms.load_providers()
  c = _config(name)
  for stage in c.stage_order:
    s = c.stages[stage]
    if s.get("report", None):
      assert methods.get_report(s.report)
      continue
    assert methods.get(s.method)
    assert s.model.name in models.names()
    assert s.data.name in sources.names()
    assert transforms.get(s.data.transform, train=True, **s.data.transform_kwargs)


@pytest.mark.parametrize("name,variant", [("i3d_ucf101:dsm", "dsm"), ("i3d_ucf101:moco", "moco"),
                                          ("i3d_ucf101:triplet", "triplet")])
def test_pretraining_recipe(name, variant):
  p = _config(name).stages.pretrain
  assert (p.method, p.dsm.variant, p.model.name) == ("dsm", variant, "i3d")
  assert (p.optim.learning_rate, p.optim.momentum, p.optim.weight_decay) == (0.003, 0.9, 1e-4)
  assert list(p.optim.milestones) == [120, 160, 200] and p.optim.gamma == 0.1
  assert p.num_epochs == 240
  assert (p.dsm.temperature, p.dsm.queue_size, p.dsm.momentum) == (0.07, 3569, 0.999)
  kw = p.data.transform_kwargs
  assert (kw.clip_len, kw.stride, kw.crop_size) == (16, 4, 224)
  assert kw.warp == (variant != "moco") and kw.inter_video == (variant == "moco")


@pytest.mark.parametrize("name", ["i3d_ucf101:dsm", "i3d_ucf101:random"])
def test_finetuning_recipe(name):
  c = _config(name)
  for stage, classes in (("ucf101", 101), ("hmdb51", 51)):
    f = c.stages[stage]
    assert f.model.num_classes == classes and f.model.kwargs.dropout == 0.5
    assert (f.optim.learning_rate, f.optim.momentum, f.optim.weight_decay) == (0.001, 0.9, 1e-8)
    assert list(f.optim.milestones) == [10, 20, 25, 30, 35, 40] and f.optim.gamma == 0.3
    assert f.num_epochs == 45 and f.data.batch_size == 4
    assert (f.data.transform_kwargs.clip_len, f.data.transform_kwargs.stride) == (64, 1)
    assert f.evals.eval.type == "video_classification"
    if name == "i3d_ucf101:dsm":
      assert f.init_from.stage == "pretrain" and "classifier" in f.init_from.exclude
    else:
      assert "init_from" not in f


def test_quick_report_keys_and_budget():
  c = _config("quick")
  r = c.stages.report
  assert r.report == "dsm_report" and set(r.labels.values()) == {"dsm", "moco", "random_init"}
  assert c.stages.pretrain_dsm.dsm.variant == "dsm" and c.stages.pretrain_moco.dsm.variant == "moco"
  # Same budget for DSM and MoCo.
  assert c.stages.pretrain_dsm.num_epochs == c.stages.pretrain_moco.num_epochs
  assert "init_from" not in c.stages.probe_random


def test_unknown_row_is_named():
  with pytest.raises(ValueError, match="random"):
    _config("i3d_ucf101:simclr")


def test_quick_flag_keeps_the_row_and_shortens_every_stage():
  full, quick = _config("i3d_ucf101:moco"), _config("i3d_ucf101:moco,quick")
  assert quick.stage_order == full.stage_order
  assert quick.stages.pretrain.dsm.variant == "moco"
  assert all(quick.stages[n].num_epochs == 1 for n in quick.stage_order if n in quick.stages
             and not quick.stages[n].get("report"))
  assert full.stages.ucf101.num_epochs > 1
