"""DDAN configs against the release's recipe (PeixianChen/DDAN `run.sh`, `transmem.py`).

The official numbers are written out here, independently of configs/ddan/dg.py and of
`ddan.default_ddan_config`, so a changed default fails this test. The configs are built (and
their methods constructed), not run.
"""
from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from configs.ddan import dg, quick
from jaxcompress import methods
from jaxcompress.data import augment
from jaxcompress.methods import ddan
from jaxcompress.optim import builder, groups

# run.sh: -b 64 --num-instance 4 --epoch 100 --lr 0.1 --tri-weight 1 --margin 0.3
# --adv-weight 0.18 --mem-weight 0.05 --knn 8 --beta 0.002 --alpha 0.05 --features 1280
# --dropout 0.5 --seed 0; transmem.py: SGD nesterov, momentum 0.9, wd 5e-4, step 40, x0.1.
OFFICIAL = dict(tri_weight=1.0, margin=0.3, adv_weight=0.18, mem_weight=0.05, knn=8, beta=0.002,
                alpha=0.05, feature_dim=1280, dropout=0.5, d_hidden=128, mem_start_epoch=3,
                id_epsilon=0.0)
IDS = (1501, 1812, 1467, 1816, 11934)
TRIAL_TARGETS = ("viper", "prid", "grid", "ilids")
STEPS_PER_EPOCH = 18530 // 16  # PK: identities // P


@pytest.mark.parametrize("arg", [None, "ddan_only", "central=wasserstein,protocol=ddan"])
def test_dg_config_is_the_release_recipe(arg):
  c = dg.get_config(arg)
  trained = ("ddan",) if arg == "ddan_only" else ("baseline", "ddan")
  assert tuple(c.stage_order) == trained + ("report",)
  for name in trained:
    s = c.stages[name]
    assert s.method == "ddan" and s.ddan.variant == name and s.seed == 0
    for key, value in OFFICIAL.items():
      assert s.ddan[key] == value, key
    assert tuple(s.ddan.ids_per_domain) == IDS and s.model.num_classes == 18530
    assert s.ddan.central == ("wasserstein" if arg and "central" in arg else "cuhk_sysu")
    assert s.ddan.pretrained == "mobilenet_v2-b0353104.pth"
    d = s.data
    assert d.name == "reid_dg" and tuple(d.source_kwargs.image_size) == (256, 128)
    assert d.batch_size == 64 and dict(d.sampler) == dict(name="pk", num_instances=4,
                                                          labels="label")
    assert tuple(d.mean) == (0.485, 0.456, 0.406) and tuple(d.std) == (0.229, 0.224, 0.225)
    names = [a[0] for a in d.augment]
    assert names == ["crop", "flip", "ddan_rotation", "ddan_color_jitter"]
    assert d.augment[0][1] == {"padding": 10} and d.augment[2][1] == {"degrees": 5.0}
    jitter = d.augment[3][1]
    assert tuple(jitter["brightness"]) == (0.5, 2.0) and tuple(jitter["saturation"]) == (0.5, 2.0)
    assert tuple(jitter["hue"]) == (-0.1, 0.1) and "contrast" not in jitter
    augment.compose(d.augment)  # every name is registered
    # 4 targets x 10 seeded trials, BN-neck features compared with the standard protocol.
    assert len(s.evals) == 40
    for target in TRIAL_TARGETS:
      for trial in range(10):
        e = s.evals[ddan.eval_name(target, trial)]
        assert e.type == "retrieval" and tuple(e.splits) == ("query", "gallery")
        assert dict(e.data.source_kwargs) == dict(target=target, trial=trial,
                                                  image_size=(256, 128))
        assert e.protocol == ("ddan" if arg and "protocol" in arg else "standard")
    # The method builds from the stage (no init: 18,530 classes).
    m = methods.get("ddan")(s, steps_per_epoch=STEPS_PER_EPOCH,
                            total_steps=100 * STEPS_PER_EPOCH)
    assert m.central == (-1 if arg and "central" in arg else 4)
  report = c.stages.report
  assert report.report == "ddan_report" and tuple(report.inputs) == trained
  assert tuple(report.targets) == TRIAL_TARGETS and report.trials == 10


def _lr(cfg, epoch):
  return float(builder.make_schedule(cfg, 100 * STEPS_PER_EPOCH, STEPS_PER_EPOCH)(
      epoch * STEPS_PER_EPOCH))


def test_dg_learning_rates_per_parameter_group():
  s = dg.get_config().stages.ddan
  params = {"encoder": {"stem": {"kernel": 0}, "block17": {"project": {"kernel": 0}}},
            "mapping": {"head": {"kernel": 0}, "head_bn": {"scale": 0}, "bn": {"scale": 0},
                        "classifier": {"kernel": 0, "bias": 0}}}
  rules = [(g["regex"], "backbone") for g in s.optim.groups] + [(".*", "new")]
  labels = groups.label_params(params, rules)
  assert labels["encoder"]["stem"]["kernel"] == "backbone"
  assert labels["mapping"]["head_bn"]["scale"] == "backbone"
  assert labels["mapping"]["bn"]["scale"] == "new"
  assert labels["mapping"]["classifier"]["kernel"] == "new"
  base = s.optim
  assert (base.name, base.momentum, base.nesterov, base.weight_decay) == ("sgd", 0.9, True, 5e-4)
  backbone = ml_collections.ConfigDict({**base.to_dict(), **s.optim.groups[0]})
  for epoch, lr in ((0, 0.1), (39, 0.1), (40, 0.01), (79, 0.01), (80, 0.001), (99, 0.001)):
    np.testing.assert_allclose(_lr(base, epoch), lr, rtol=1e-6)
    np.testing.assert_allclose(_lr(backbone, epoch), lr * 0.1, rtol=1e-6)
  assert s.num_epochs == 100
  # D: its own SGD, all parameters at the base rate (lr_mult 1).
  d_cfg = ml_collections.ConfigDict({**base.to_dict(), **s.ddan.d_optim.to_dict()})
  assert not d_cfg.groups and _lr(d_cfg, 0) == pytest.approx(0.1)


@pytest.mark.parametrize("arg", [None, "small"])
def test_quick_config_trains_both_with_the_same_budget(arg):
  c = quick.get_config(arg)
  assert tuple(c.stage_order) == ("baseline", "ddan", "report")
  base, full = c.stages.baseline.to_dict(), c.stages.ddan.to_dict()
  assert base.pop("ddan").pop("variant") == "baseline"
  assert full.pop("ddan").pop("variant") == "ddan"
  assert base == full  # same data, model, optimizer, epochs, seed and evaluators
  s = c.stages.ddan
  assert s.data.name == "synthetic_reid_dg" and s.ddan.central == "wasserstein"
  num_sources = s.data.source_kwargs.num_sources
  assert tuple(s.ddan.ids_per_domain) == (s.data.source_kwargs.num_ids,) * num_sources
  report = c.stages.report
  assert report.report == "ddan_report" and report.trials == 0
  assert set(s.evals) == set(report.targets) and len(report.targets) >= 2
  for t, name in enumerate(report.targets):
    # Unseen domains only: target t is domain num_sources + t of synthetic_reid_dg.
    assert s.evals[name].data.source_kwargs.target == t
  m = methods.get("ddan")(s, steps_per_epoch=15, total_steps=15 * s.num_epochs)
  assert m.central == -1 and m.num_ids == sum(s.ddan.ids_per_domain)
  if arg == "small":
    assert s.num_epochs < quick.get_config().stages.ddan.num_epochs
