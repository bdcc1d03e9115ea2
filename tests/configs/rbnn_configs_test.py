"""Every RBNN paper config against the paper (arXiv 2009.13055) and the official lmbxmu/RBNN code.

The numbers are written out here (paper Sec. 4 and the official `cifar/utils/options.py`,
`cifar/run.sh`, `imagenet/run.sh`, `cifar/main.py`), independently of configs/rbnn/_base.py, so a
changed default there fails this test. The digits configs are CPU demonstrations, not paper
settings, and are not checked here.
"""
from __future__ import annotations

import importlib
import os

import numpy as np
import pytest

from jaxcompress.optim import builder

_FOLDER = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "rbnn")

# (module, model name, model kwargs that must hold). Official README "paper data" rows.
CIFAR = [
    ("cifar10_resnet20", "resnet20", {"bn_before_classifier": True}),
    ("cifar10_resnet20_bireal", "resnet20", {"bireal": True, "bn_before_classifier": True}),
    ("cifar10_resnet18", "resnet18_cifar", {"stem_act": False, "bn_before_classifier": True}),
    ("cifar10_vgg_small", "vgg_small", {}),   # official vgg.py: no BatchNorm1d
]
IMAGENET = [
    ("imagenet_resnet18", "resnet18"),
    ("imagenet_resnet34", "resnet34"),
]
# The official CIFAR loader normalises with the ImageNet statistics (cifar/dataset/dataset.py).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _load(name, arg=None):
  return importlib.import_module(f"configs.rbnn.{name}").get_config(arg)


def _check_recipe(c):
  """Optimiser and rotation settings shared by every RBNN experiment (official options.py)."""
  assert c.method == "rbnn" and c.model.layers == "rbnn"
  o = c.optim
  assert (o.name, o.learning_rate, o.momentum, o.weight_decay) == ("sgd", 0.1, 0.9, 1e-4)
  assert not o.get("groups")                 # weight decay on every parameter (BN, alpha, theta)
  assert o.schedule == "warmup_cosine" and o.warmup_epochs == 5   # run.sh --warm_up --lr_type cos
  r = c.rbnn
  assert (r.rounds, r.t_min, r.t_max, r.rotation_every) == (3, 1e-2, 10.0, 1)  # --Tmin/--Tmax
  assert r.rotate


def _check_lr_curve(c, steps_per_epoch=10):
  # Linear warm-up from 0 over 5 epochs, then cosine to 0 over the rest (main.py).
  total = c.num_epochs * steps_per_epoch
  sched = builder.make_schedule(c.optim, total, steps_per_epoch)
  warm = 5 * steps_per_epoch
  for step in (0, warm // 2, warm, warm + (total - warm) // 2, total):
    if step <= warm:
      expected = 0.1 * step / warm
    else:
      expected = 0.05 * (1 + np.cos(np.pi * (step - warm) / (total - warm)))
    np.testing.assert_allclose(float(sched(step)), expected, atol=1e-6)


def test_every_paper_config_is_checked():
  names = {f[:-3] for f in os.listdir(_FOLDER)
           if f.endswith(".py") and not f.startswith("_") and not f.startswith("digits")}
  assert names == {n for n, *_ in CIFAR} | {n for n, _ in IMAGENET}


@pytest.mark.parametrize("name,model,kwargs", CIFAR)
def test_cifar10_config_matches_paper(name, model, kwargs):
  c = _load(name)
  _check_recipe(c)
  assert c.model.name == model and c.model.num_classes == 10
  assert {k: c.model.kwargs.get(k) for k in kwargs} == kwargs
  if model == "vgg_small":
    assert not c.model.kwargs.get("bn_before_classifier", False)
  d = c.data
  assert (d.name, d.train_split, d.eval_split) == ("cifar10", "train", "test")
  assert (d.batch_size, d.eval_batch_size) == (256, 128)      # -b 256 -bt 128
  assert d.crop_padding == 4 and d.flip                        # random crop 32 pad 4, h-flip
  np.testing.assert_allclose(d.mean, IMAGENET_MEAN)
  np.testing.assert_allclose(d.std, IMAGENET_STD)
  assert c.num_epochs == 1000                                  # --epochs 1000
  _check_lr_curve(c)


@pytest.mark.parametrize("name,model", IMAGENET)
def test_imagenet_config_matches_paper(name, model):
  c = _load(name)
  _check_recipe(c)
  assert c.model.name == model and c.model.num_classes == 1000
  assert c.model.kwargs.bireal and c.model.kwargs.bn_before_classifier   # Bi-Real blocks
  d = c.data
  assert (d.name, d.train_split, d.eval_split) == ("imagenet2012", "train", "validation")
  assert (d.batch_size, d.eval_batch_size) == (512, 256)      # imagenet/run.sh -b 512 -bt 256
  assert d.transform == "imagenet_crop" and d.transform_kwargs.size == 224 and d.flip
  np.testing.assert_allclose(d.mean, IMAGENET_MEAN)
  np.testing.assert_allclose(d.std, IMAGENET_STD)
  assert c.num_epochs == 150                                   # --epochs 150
  _check_lr_curve(c)


@pytest.mark.parametrize("name", [n for n, *_ in CIFAR] + [n for n, _ in IMAGENET])
def test_quick_variant_only_shortens_the_run(name):
  full, quick = _load(name), _load(name, "quick")
  assert quick.num_steps > 0 and full.num_steps <= 0
  assert quick.optim == full.optim and quick.rbnn == full.rbnn and quick.model == full.model
