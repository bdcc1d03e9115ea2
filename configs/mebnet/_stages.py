"""MEB-Net as one staged run (arXiv 2007.01546): pretrain each expert -> brainstorm -> report.

Stages, in order (`jaxcompress.train.stages`):
  * "source_<label>" for each expert: "mebnet_source" on the labelled source domain (PK batches,
    a target stream forwarded for the BN statistics, the release's `pretrain.sh`); its final
    evaluation ("target/mAP", standard protocol) is that expert's source-only result on the
    target domain.
  * "adapt": "mebnet" on the unlabelled target train split (`train.sh`): the experts start from
    their pretraining stages (`paths_from` -> `mebnet.init.expert<i>`), pseudo labels from the
    per-epoch clustering feed the PK sampler, every epoch ends with every expert's target mAP
    (experts.jsonl); the evaluated expert's retrieval evaluation at the end.
  * "report": `reid_report.json` (`mebnet_report`) with source_only_map and adapted_map.
"""
from __future__ import annotations

from typing import Any

import ml_collections

from configs import common


def _data(c: ml_collections.ConfigDict, dataset: dict[str, Any], batch_size: int,
          eval_batch_size: int) -> None:
  c.data.name = dataset["name"]
  c.data.source_kwargs = ml_collections.ConfigDict(dict(dataset.get("source_kwargs", {})))
  if dataset.get("data_dir"):
    c.data.data_dir = dataset["data_dir"]
  c.data.mean = common.IMAGENET_MEAN
  c.data.std = common.IMAGENET_STD
  c.data.batch_size = batch_size
  c.data.eval_batch_size = eval_batch_size


def _retrieval(dataset: dict[str, Any]) -> ml_collections.ConfigDict:
  """The standard query/gallery evaluation on `dataset` (mAP, rank-1/5/10)."""
  data = dict(name=dataset["name"], source_kwargs=dict(dataset.get("source_kwargs", {})))
  if dataset.get("data_dir"):
    data["data_dir"] = dataset["data_dir"]
  return ml_collections.ConfigDict(dict(type="retrieval", splits=("query", "gallery"),
                                        ranks=(1, 5, 10), data=data))


def pretrain_stage(expert: dict[str, Any], *, source: dict[str, Any], target: dict[str, Any],
                   num_classes: int, epochs: int, iters: int, batch_size: int,
                   num_instances: int, augment: list[Any], optim: dict[str, Any],
                   eval_batch_size: int = 128, eval_source: bool = False,
                   target_bn: bool = True) -> ml_collections.ConfigDict:
  """One expert's source pretraining ("mebnet_source")."""
  c = common.base_config()
  c.method = "mebnet_source"
  _data(c, source, batch_size, eval_batch_size)
  c.data.sampler = ml_collections.ConfigDict(dict(name="pk", num_instances=num_instances,
                                                  labels="label"))
  c.data.augment = list(augment)
  if target_bn:  # target images forwarded in training mode: BN statistics (release)
    stream = dict(name=target["name"], split="train", batch_size=batch_size,
                  source_kwargs=dict(target.get("source_kwargs", {})), augment=list(augment))
    c.data.streams = ml_collections.ConfigDict({"target": stream})
  c.num_devices = 1
  c.model = ml_collections.ConfigDict(dict(expert))
  c.model.num_classes = num_classes
  c.mebnet = ml_collections.ConfigDict(dict(epsilon=0.1, margin=0.0))
  c.steps_per_epoch = iters
  c.num_epochs = epochs
  c.optim = ml_collections.ConfigDict(dict(optim))
  c.log_every = max(1, iters // 2)
  c.eval_every = 10**9  # at the end only
  c.checkpoint_every = 10**9
  evals = {"target": _retrieval(target)}
  if eval_source:
    evals["source"] = _retrieval(source)
  c.evals = ml_collections.ConfigDict(evals)
  return c


def adapt_stage(experts: list[dict[str, Any]], *, target: dict[str, Any], init_stages: list[str],
                num_clusters: int, epochs: int, iters: int, batch_size: int, num_instances: int,
                augment: list[Any], optim: dict[str, Any], eval_expert: int,
                kmeans_iterations: int = 100, eval_batch_size: int = 128,
                mebnet: dict[str, Any] | None = None) -> ml_collections.ConfigDict:
  """The brainstorming stage ("mebnet") on the target train split."""
  c = common.base_config()
  c.method = "mebnet"
  _data(c, target, batch_size, eval_batch_size)
  c.data.transform = "mebnet_views"  # one independently augmented view per expert
  c.data.transform_kwargs = ml_collections.ConfigDict(dict(num_views=len(experts),
                                                           augment=list(augment)))
  # PK over the pseudo labels the epoch hook writes into the state.
  c.data.sampler = ml_collections.ConfigDict(dict(name="pk", num_instances=num_instances,
                                                  labels="state:pseudo_labels"))
  c.num_devices = 1
  del c["model"]  # the experts are config.mebnet.experts
  c.mebnet = ml_collections.ConfigDict(dict(
      experts=tuple(dict(e) for e in experts), num_clusters=num_clusters,
      kmeans_iterations=kmeans_iterations, ce_soft_weight=0.5, tri_soft_weight=0.8,
      epsilon=0.1, alpha=0.999, scatter=True, eval_expert=eval_expert,
      expert_eval_splits=("query", "gallery"), **dict(mebnet or {})))
  c.paths_from = tuple((f"mebnet.init.expert{i}", stage, "")
                       for i, stage in enumerate(init_stages))
  c.steps_per_epoch = iters
  c.num_epochs = epochs
  c.optim = ml_collections.ConfigDict(dict(optim))
  c.log_every = max(1, iters // 2)
  # The evaluated expert at the end; every expert's mAP after each epoch comes from the epoch
  # hook (expert_eval_splits, experts.jsonl).
  c.eval_every = 10**9
  c.checkpoint_every = -1
  c.evals = ml_collections.ConfigDict({"target": _retrieval(target)})
  return c


def mebnet_stages(experts: dict[str, dict[str, Any]], *, source: dict[str, Any],
                  target: dict[str, Any], pretrain: dict[str, Any], adapt: dict[str, Any]
                  ) -> ml_collections.ConfigDict:
  """The staged config (module docstring).

  Args:
    experts: {label: model block (name, kwargs, head)} in expert order.
    source, target: dataset blocks {name, source_kwargs, data_dir}.
    pretrain: keyword arguments of `pretrain_stage` (besides expert, source, target).
    adapt: keyword arguments of `adapt_stage` (besides experts, target, init_stages).

  Returns:
    The staged config.
  """
  c = ml_collections.ConfigDict()
  stages = {}
  for label, block in experts.items():
    stages[f"source_{label}"] = pretrain_stage(block, source=source, target=target, **pretrain)
  sources_ = [f"source_{label}" for label in experts]
  stages["adapt"] = adapt_stage(list(experts.values()), target=target, init_stages=sources_,
                                **adapt)
  stages["report"] = dict(report="mebnet_report", inputs=(*sources_, "adapt"),
                          source_stages=tuple(sources_), adapted_stage="adapt",
                          labels=tuple(experts), metric="target/mAP")
  c.stages = ml_collections.ConfigDict(stages)
  c.stage_order = (*sources_, "adapt", "report")
  return c
