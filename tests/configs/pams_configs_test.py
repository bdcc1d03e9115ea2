"""Every PAMS paper config against the paper (arXiv 2011.04212) and the official colorjam/PAMS code.

Numbers written out here, independently of configs/pams/_sr_common.py, so a changed default
there fails this test.
"""
from __future__ import annotations

import importlib

import pytest

from jaxcompress import models
from jaxcompress.data import pipeline

# (module, model, scale, bits, HR patch). EDSR 192 at x4 and RDN 96 (the PAMS setting); EDSR x2
# 96 (48 LR, EDSR-PyTorch's x2 patch).
STUDENTS = [
    ("edsr_x4_8bit", "edsr_baseline", 4, 8, 192),
    ("edsr_x4_4bit", "edsr_baseline", 4, 4, 192),
    ("edsr_x2_8bit", "edsr_baseline", 2, 8, 96),
    ("edsr_x2_4bit", "edsr_baseline", 2, 4, 96),
    ("rdn_x4_8bit", "rdn", 4, 8, 96),
    ("rdn_x4_4bit", "rdn", 4, 4, 96),
]
TEACHERS = [
    ("edsr_teacher_x4", "edsr_baseline", 4, 192),
    ("edsr_teacher_x2", "edsr_baseline", 2, 96),
    ("rdn_teacher_x4", "rdn", 4, 96),
]
DIV2K_TRAIN = 800


def _load(name):
  return importlib.import_module(f"configs.pams.{name}").get_config()


def _check_model(c, model, scale):
  assert c.model.name == model
  m = models.build(c.model.name, layers="float", **dict(c.model.kwargs))
  assert m.scale == scale
  if model == "edsr_baseline":      # 16 res blocks, 64 feats, res_scale 1, rgb_range 255
    assert (m.n_resblocks, m.n_feats, m.res_scale, m.rgb_range) == (16, 64, 1.0, 255.0)
    assert tuple(m.rgb_mean) == (0.4488, 0.4371, 0.4040)
  else:                             # RDN: D=16 RDBs x C=8 layers, G=G0=64
    assert (m.d, m.c, m.g, m.g0) == (16, 8, 64, 64)


def _check_data(c, scale, patch):
  assert c.data.name == "div2k" and c.data.train_split == "train"
  assert c.data.batch_size == 16
  assert c.data.source_kwargs.scale == scale
  assert c.data.transform == "sr_patch" and c.data.transform_kwargs.patch_size == patch
  # One "epoch" = 1000 batches of 16 (test_every 1000): DIV2K 1-800 repeated.
  steps = pipeline.steps_per_epoch(DIV2K_TRAIN * c.data.source_kwargs.repeat, c.data.batch_size)
  assert steps == 1000
  assert [s["split"] for s in c.final_eval] == ["Set5", "Set14", "B100", "Urban100"]
  assert all(s["source_kwargs"]["scale"] == scale for s in c.final_eval)


def _check_adam(c):
  o = c.optim
  assert o.name == "adam" and (o.b1, o.b2, o.eps) == (0.9, 0.999, 1e-8)
  assert o.weight_decay == 0.0


@pytest.mark.parametrize("name,model,scale,bits,patch", STUDENTS)
def test_student_config_matches_the_paper(name, model, scale, bits, patch):
  c = _load(name)
  assert c.method == "pams"
  _check_model(c, model, scale)
  _check_data(c, scale, patch)
  _check_adam(c)
  assert c.optim.learning_rate == 1e-4                       # weights
  assert list(c.optim.groups) == [{"regex": ".*alpha", "learning_rate": 1e-2}]   # all alphas
  assert (c.optim.schedule, c.optim.decay_epochs, c.optim.decay_factor) == ("step", 10, 0.5)
  assert c.num_epochs == 30
  p = c.pams
  assert p.bits == bits
  assert p.skt_weight == 1e3
  assert p.student_init == "teacher"   # paper (issues #12/#15), not the released random init
  assert p.alpha_calib == "ema" and p.calib_epochs == 1
  assert p.alpha_init == 10.0          # official pams_quant_act init before calibration
  assert p.teacher_epochs == 0         # the teacher is a trained FP model (teacher_path)
  assert name.startswith(model.split("_")[0]) and f"x{scale}_{bits}bit" in name


@pytest.mark.parametrize("name,model,scale,patch", TEACHERS)
def test_teacher_config_matches_recipe(name, model, scale, patch):
  c = _load(name)
  assert c.method == "sr" and "pams" not in c
  _check_model(c, model, scale)
  _check_data(c, scale, patch)
  _check_adam(c)
  assert c.optim.learning_rate == 1e-4 and not c.optim.groups
  assert (c.num_epochs, c.optim.schedule, c.optim.decay_epochs, c.optim.decay_factor) == (
      300, "step", 200, 0.5)


@pytest.mark.parametrize("name,_,scale,__,___", STUDENTS)
def test_student_and_teacher_share_the_model(name, _, scale, __, ___):
  # The student loads the teacher's weights by path: same model name and kwargs.
  teacher = _load(name.split("_")[0] + f"_teacher_x{scale}")
  student = _load(name)
  assert (teacher.model.name, dict(teacher.model.kwargs)) == (
      student.model.name, dict(student.model.kwargs))


def test_quick_config_is_the_cpu_check():
  staged = _load("quick")
  assert tuple(staged.stage_order) == ("fp", "8bit", "4bit", "table")
  c = staged.stages["8bit"]
  assert c.method == "pams" and c.data.name == "sr_offline" and c.data.eval_split == "test"
  assert staged.stages["4bit"].pams.bits == 4
  assert c.pams.skt_weight == 1e3 and c.optim.learning_rate == 1e-4
  # The alphas' learning rate keeps the paper's travel per epoch (1e-2 over 1000-step epochs)
  # in the quick config's 25-step epochs.
  assert c.optim.groups[0]["learning_rate"] == pytest.approx(1e-2 * 1000 / 25)
  assert (c.model.kwargs.scale, c.model.kwargs.n_resblocks, c.model.kwargs.n_feats) == (2, 4, 16)
  assert c.data.transform_kwargs.patch_size == 48
