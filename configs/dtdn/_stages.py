"""DTDN runs as stages (arXiv 2007.13264): source-only baseline, DTDN, `dtdn_report`.

Both training stages read the labelled source split as the main stream; the DTDN stage also
reads the unlabelled target training split as the stream "target" (same batch size, its index
is the exemplar slot); both end with the target evaluation named "target" (retrieval on query /
gallery for re-ID, the "classification" evaluator for closed-set data), which `dtdn_report`
reads into `reid_report.json`.
"""
from __future__ import annotations

from typing import Any

import ml_collections

from configs import common
from jaxcompress.methods import dtdn


def train_stage(variant: str, *, source: dict[str, Any], target: dict[str, Any],
                num_classes: int, num_target: int, model_kwargs: dict[str, Any],
                epochs: int, batch_size: int, optim: dict[str, Any], dtdn_opts: dict[str, Any],
                source_augment: list[Any], target_augment: list[Any], retrieval: bool,
                steps_per_epoch: int = -1, eval_batch_size: int = 128,
                seed: int = 0) -> ml_collections.ConfigDict:
  """One training stage ("source_only" or "dtdn") evaluated on the target test data."""
  c = common.base_config()
  c.method = "dtdn"
  c.seed = seed
  c.data.name = source["name"]
  c.data.source_kwargs = ml_collections.ConfigDict(dict(source.get("source_kwargs", {})))
  if source.get("data_dir"):
    c.data.data_dir = source["data_dir"]
  c.data.mean, c.data.std = common.IMAGENET_MEAN, common.IMAGENET_STD
  c.data.batch_size = batch_size
  c.data.eval_batch_size = eval_batch_size
  c.data.augment = list(source_augment)
  if variant == "dtdn":
    stream = dict(name=target["name"], split="train", batch_size=batch_size,
                  source_kwargs=dict(target.get("source_kwargs", {})),
                  augment=list(target_augment))
    if target.get("data_dir"):
      stream["data_dir"] = target["data_dir"]
    c.data.streams = ml_collections.ConfigDict({"target": stream})
  c.num_devices = 1
  c.model.name = "dtdn"
  c.model.num_classes = num_classes
  c.model.kwargs = ml_collections.ConfigDict(dict(model_kwargs))
  c.dtdn = dtdn.default_dtdn_config()
  c.dtdn.update(dict(dtdn_opts))
  c.dtdn.variant = variant
  c.dtdn.num_target = num_target
  c.steps_per_epoch = steps_per_epoch
  c.num_epochs = epochs
  c.optim = ml_collections.ConfigDict(dict(optim))
  c.log_every = 10
  c.steps_per_call = 1
  c.eval_every = 10**9  # at the end only (the release's best-epoch pick reads the test set)
  c.checkpoint_every = 10**9
  # The target test data may be read at another size than the training stream (random crops).
  eval_kwargs = target.get("eval_source_kwargs", target.get("source_kwargs", {}))
  data = dict(name=target["name"], source_kwargs=dict(eval_kwargs))
  if target.get("data_dir"):
    data["data_dir"] = target["data_dir"]
  if retrieval:
    ev = dict(type="retrieval", splits=("query", "gallery"), ranks=(1, 5, 10), data=data)
  else:
    ev = dict(type="classification", split=target.get("test_split", "test"), data=data)
  c.evals = ml_collections.ConfigDict({"target": ev})
  return c


def dtdn_stages(retrieval: bool = True, **kwargs: Any) -> ml_collections.ConfigDict:
  """source_only -> dtdn -> report; `kwargs` are those of `train_stage`."""
  c = ml_collections.ConfigDict()
  c.stage_order = ("source_only", "dtdn", "report")
  c.stages = ml_collections.ConfigDict({
      "source_only": train_stage("source_only", retrieval=retrieval, **kwargs),
      "dtdn": train_stage("dtdn", retrieval=retrieval, **kwargs),
      "report": dict(report="dtdn_report", inputs=("source_only", "dtdn"),
                     source_only_stage="source_only", dtdn_stage="dtdn",
                     metric="target/rank1" if retrieval else "target/accuracy"),
  })
  return c
