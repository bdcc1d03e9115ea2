"""The MEB-Net configs carry the release's recipe (arXiv 2007.01546; YunpengZhai/MEB-Net
`pretrain.sh`, `train.sh`, `main/*.py`) and build with registered methods, models and sources."""
from __future__ import annotations

import importlib

import flax
import jax
import jax.numpy as jnp
import pytest

from jaxcompress import methods, models
from jaxcompress.data import samplers, sources, transforms
from jaxcompress.methods import mebnet_nets, mebnet_source
from jaxcompress.models import torchvision_weights
from jaxcompress.optim import builder

ROWS = {"duke2market": ("dukemtmc_reid", "market1501", 702),
        "market2duke": ("market1501", "dukemtmc_reid", 751)}
SOURCES = ("source_densenet", "source_resnet50", "source_inceptionv3")


def _config(name, arg=None):
  return importlib.import_module(f"configs.mebnet.{name}").get_config(arg)


@pytest.mark.parametrize("name", [*ROWS, "quick"])
def test_every_stage_names_known_parts(name):
  transforms.load_providers()
  c = _config(name)
  for stage in c.stage_order:
    s = c.stages[stage]
    if s.get("report", None):
      assert methods.get_report(s.report)
      assert set(s.inputs) == set(s.source_stages) | {s.adapted_stage}
      continue
    assert methods.get(s.method)
    assert s.data.name in sources.names()
    assert s.data.sampler.name in samplers.names()
    assert s.optim.schedule in builder.schedule_names()
    blocks = [s.model] if s.method == "mebnet_source" else list(s.mebnet.experts)
    for block in blocks:
      assert block["name"] == "reid_resnet" or block["name"] in models.names()
    if s.data.get("transform", ""):
      assert transforms.get(s.data.transform, train=True, **s.data.transform_kwargs)
    assert s.evals.target.type == "retrieval"


@pytest.mark.parametrize("name", ROWS)
def test_pretraining_recipe(name):
  source, target, ids = ROWS[name]
  c = _config(name, "data_dir=/data,weights_dir=/weights")
  assert c.stage_order == (*SOURCES, "adapt", "report")
  for stage, arch in zip(SOURCES, ("densenet121", "resnet50", "inception_v3")):
    p = c.stages[stage]
    assert p.method == "mebnet_source" and p.model.num_classes == ids
    assert p.data.name == source and p.data.data_dir == "/data"
    assert tuple(p.data.source_kwargs.image_size) == (256, 128)
    assert (p.data.batch_size, p.data.sampler.num_instances) == (64, 4)
    assert p.data.sampler.labels == "label"
    assert [a[0] for a in p.data.augment] == ["flip", "crop"] and p.data.augment[1][1] == {
        "padding": 10}
    assert p.data.streams.target.name == target  # target batches for the BN statistics
    o = p.optim
    assert (o.name, o.learning_rate, o.weight_decay) == ("adam", 3.5e-4, 5e-4)
    assert (o.schedule, o.warmup_epochs, o.warmup_factor) == ("mebnet_warmup_multistep", 10,
                                                              0.01)
    assert tuple(o.milestones) == (40, 70) and o.gamma == 0.1
    assert (p.num_epochs, p.steps_per_epoch) == (80, 200)
    assert (p.mebnet.epsilon, p.mebnet.margin) == (0.1, 0.0)
    assert p.model.torchvision.arch == arch and p.model.torchvision.path.startswith("/weights/")
    assert set(p.evals) == {"target", "source"}


@pytest.mark.parametrize("name", ROWS)
def test_brainstorming_recipe(name):
  _, target, _ = ROWS[name]
  a = _config(name).stages.adapt
  assert a.method == "mebnet" and a.data.name == target
  assert (a.num_epochs, a.steps_per_epoch) == (40, 800)
  assert (a.data.batch_size, a.data.sampler.num_instances) == (64, 4)
  assert (a.data.sampler.name, a.data.sampler.labels) == ("pk", "state:pseudo_labels")
  o = a.optim
  assert (o.name, o.learning_rate, o.weight_decay, o.schedule) == ("adam", 3.5e-4, 5e-4,
                                                                   "constant")
  m = mebnet_source.options(a)
  assert (m.num_clusters, m.kmeans_iterations) == (500, 100)
  assert (m.ce_soft_weight, m.tri_soft_weight, m.epsilon, m.alpha) == (0.5, 0.8, 0.1, 0.999)
  assert m.scatter and m.reset_optimizer and m.centroids == "consensus"
  assert m.eval_expert == 0 and m.eval_teacher  # the DenseNet-121 expert's EMA teacher
  names = [e["name"] for e in m.experts]
  assert names == ["densenet121", "reid_resnet", "inception_v3"]
  assert m.experts[0]["head"] == {"duplicate": True}
  assert m.experts[1]["kwargs"] == dict(block="bottleneck", stage_sizes=(3, 4, 6, 3), width=64,
                                        last_stride=1, stem_relu=False)
  assert m.experts[2]["kwargs"] == dict(aux_logits=False, transform_input=False)
  assert a.data.transform == "mebnet_views" and a.data.transform_kwargs.num_views == 3
  erase = dict(a.data.transform_kwargs.augment)["random_erasing"]
  assert erase["probability"] == 0.5
  # The release erases after Normalize with the ImageNet mean: mean + mean * std in raw pixels.
  assert erase["value"] == pytest.approx((0.485 * 1.229, 0.456 * 1.224, 0.406 * 1.225))
  assert [p[1] for p in a.paths_from] == list(SOURCES)


@pytest.mark.parametrize("arch,index", [("densenet121", 0), ("resnet50", 1),
                                        ("inception_v3", 2)])
def test_paper_experts_take_every_torchvision_array(arch, index):
  block = _config("duke2market").stages.adapt.mebnet.experts[index]
  net = mebnet_nets.build_net(block, 500)
  x = jax.ShapeDtypeStruct((1, 96, 96, 3), jnp.float32)
  ours = jax.eval_shape(lambda v: net.init(jax.random.key(0), v), x)
  tv = jax.eval_shape(lambda v: torchvision_weights.torchvision_model(
      arch, aux_logits=False).init(jax.random.key(0), v) if arch == "inception_v3" else
      torchvision_weights.torchvision_model(arch).init(jax.random.key(0), v), x)
  for col in ("params", "batch_stats"):
    flat = lambda t: {k: v.shape for k, v in flax.traverse_util.flatten_dict(  # noqa: E731
        t, sep="/").items() if not k.startswith(("classifier", "fc"))}
    assert flat(ours[col]["backbone"]) == flat(tv[col])
  assert ours["params"]["classifier"]["kernel"].shape == (2048, 500)


def test_quick_report_and_budget():
  c = _config("quick")
  r = c.stages.report
  assert r.report == "mebnet_report" and r.adapted_stage == "adapt"
  assert len(r.source_stages) == 3
  assert len({e["name"] for e in c.stages.adapt.mebnet.experts}) == 3
  small = _config("quick", "small")
  assert small.stages.adapt.num_epochs * small.stages.adapt.steps_per_epoch < (
      c.stages.adapt.num_epochs * c.stages.adapt.steps_per_epoch)
  assert c.stages.adapt.mebnet.num_clusters == c.stages.adapt.data.source_kwargs.num_ids
