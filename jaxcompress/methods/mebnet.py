"""MEB-Net's multiple expert brainstorming on the unlabelled target domain, and its report.

Zhai, Ye, Lu, Jia, Ji and Tian, "Multiple Expert Brainstorming for Domain Adaptive Person
Re-identification", ECCV 2020, arXiv 2007.01546, Sec. 3.2-3.3; official code YunpengZhai/MEB-Net
(`main/target_train.py`, `mebnet/trainers.py` `MEBTrainer`, `train.sh`). Source pretraining,
`config.mebnet` and the `mebnet_views` transform: `jaxcompress.methods.mebnet_source`.

"mebnet": E experts (`config.mebnet.experts`, heterogeneous architectures whose eval features
have one size), each with its mean teacher in `state.extra["teachers"]`, all started from their
pretraining runs (`config.mebnet.init.expert<i>`, filled by a stage's `paths_from`). Each epoch
starts with a host hook (`jaxcompress.methods.mebnet_cluster`): every EMA teacher's eval features
(L2-normalised BN output) of the whole target train split, averaged over the experts; k-means
(`reid.kmeans`, 500 clusters in the paper) into pseudo labels for the PK sampler
(`config.data.sampler.labels = "state:pseudo_labels"`); every student's and teacher's classifier
set to the L2-normalised centroids; the authorities a = `reid.expert_authority(J)` from
`reid.j_scatter` of a k-means of each expert's OWN features (Eq. 6-7); a fresh optimizer state
(the release builds a new Adam every epoch). One step is one official iteration: every student
and every EMA teacher (training mode; the teachers' BN statistics come from their own forwards)
on the expert's own augmented view, `reid.meb_loss` (Eq. 8-10), one optimizer step on the sum,
then `ema_update(teacher, student, mean_teacher_decay(step))` for every expert (Eq. 11), step =
epoch * iterations + iteration.

Differences from the release: the k-means is a seeded full Lloyd k-means on the device instead of
an unseeded scikit-learn MiniBatchKMeans; batch norm runs over the whole batch (the release shards
it over 4 GPUs); the PK sampler does not prefer other cameras; the final model is the last one
(the release keeps the epoch of best target test mAP). `config.mebnet.centroids = "own"` sets each
expert's classifier from the means of its own features over the consensus clusters instead of the
consensus centroids (the release's choice, the default).
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcompress import distributed, reid
from jaxcompress.data import sources, transforms
from jaxcompress.errors import ConfigError
from jaxcompress.methods import mebnet_cluster
from jaxcompress.methods.base import Batch, HookContext, Method, Metrics
from jaxcompress.methods.mebnet_nets import build_net
from jaxcompress.methods.mebnet_source import (
    MEBNetSource,
    merged_except_classifier,
    options,
    put_like,
    views_of,
)
from jaxcompress.optim import builder
from jaxcompress.train import checkpoint as checkpoint_lib
from jaxcompress.train.state import TrainState

EXPERTS_FILE = "experts.jsonl"  # per-epoch target mAP of every expert (adaptation workdir)
REPORT_FILE = "reid_report.json"


class MEBNet(MEBNetSource):
  """Multiple expert brainstorming on the unlabelled target (module docstring)."""

  host_hooks = frozenset({"on_epoch_start", "on_epoch_end"})

  def __init__(self, config: ml_collections.ConfigDict, **kwargs: Any):
    Method.__init__(self, config, **kwargs)
    self.opts = opts = options(config)
    if len(opts.experts) < 2:
      raise ConfigError(f"mebnet needs at least two experts in config.mebnet.experts, got "
                        f"{len(opts.experts)}.")
    if opts.centroids not in ("consensus", "own"):
      raise ConfigError(f"config.mebnet.centroids must be 'consensus' or 'own', got "
                        f"{opts.centroids!r}.")
    self.names = tuple(f"expert{i}" for i in range(len(opts.experts)))
    if not 0 <= opts.eval_expert < len(self.names):
      raise ConfigError(f"config.mebnet.eval_expert {opts.eval_expert} is not an expert index.")
    self.nets = {n: build_net(b, opts.num_clusters) for n, b in zip(self.names, opts.experts)}
    data = config.data
    if data.get("transform", "") == "mebnet_views" and (
        data.get("augment", None) or data.get("crop_padding", 0) or data.get("flip", False)):
      raise ConfigError("With data.transform 'mebnet_views' give the augmentation in "
                        "data.transform_kwargs.augment (one draw per view) and leave "
                        "data.augment, data.crop_padding and data.flip unset.")
    transforms.load_providers()
    self.num_train = len(sources.get_configured(data.name, data.train_split,
                                                data.get("data_dir", None),
                                                data.get("source_kwargs", {})))
    if not 1 <= opts.num_clusters <= self.num_train:
      raise ConfigError(f"config.mebnet.num_clusters {opts.num_clusters} must be in [1, "
                        f"{self.num_train}] (the target training images).")
    self._extract = self.teacher_features  # one function object: map_batches compiles it once

  def _variables(self, state: TrainState, name: str, teacher: bool) -> dict[str, Any]:
    if teacher:
      return state.extra["teachers"][name]
    return {"params": state.params[name], "batch_stats": state.model_state["batch_stats"][name]}

  def _forward(self, name: str, variables: dict[str, Any], images: jax.Array,
               rng: jax.Array) -> tuple[dict[str, jax.Array], Any]:
    """Training-mode outputs of one expert and its new BN statistics."""
    out, updates = self.nets[name].apply(variables, images, train=True, mutable=["batch_stats"],
                                         rngs={"dropout": rng})
    return out, updates["batch_stats"]

  def init(self, rng: jax.Array, example_batch: Batch) -> TrainState:
    image = views_of(example_batch["image"])[0][:1]
    params, stats = {}, {}
    for key, name in zip(jax.random.split(rng, len(self.names)), self.names):
      variables = self.nets[name].init(key, image, train=False)
      params[name], stats[name] = variables["params"], variables["batch_stats"]
    self.tx = builder.make_optimizer(self.config.optim, params, self.total_steps,
                                     self.steps_per_epoch)
    k = self.opts.num_clusters
    extra = {"teachers": {n: {"params": params[n], "batch_stats": stats[n]} for n in self.names},
             # Valid labels until the first epoch's clustering replaces them.
             self.opts.pseudo_label_key: jnp.arange(self.num_train, dtype=jnp.int32) % k,
             "authority": jnp.ones((len(self.names),), jnp.float32)}
    return TrainState.create(params=params, model_state={"batch_stats": stats}, rng=rng,
                             optimizers={"model": (self.tx, params)}, extra=extra)

  def load_initial(self, state: TrainState) -> TrainState:
    """Students and teachers from the experts' pretraining runs (classifiers excepted)."""
    init = dict(self.opts.get("init", None) or {})
    if not init:
      return state
    params, stats = jax.device_get((state.params, state.model_state["batch_stats"]))
    params, stats, teachers = dict(params), dict(stats), {}
    for name in self.names:
      if name not in init:
        raise ConfigError(f"config.mebnet.init has no {name!r} (the workdir of its pretraining "
                          f"run); it has {sorted(init)}.")
      run = checkpoint_lib.load_run_state(init[name])
      params[name] = merged_except_classifier(params[name], run["params"], f"{name} parameters")
      stats[name] = merged_except_classifier(stats[name], run["model_state"]["batch_stats"],
                                             f"{name} BN statistics")
      teachers[name] = jax.tree.map(np.array, {"params": params[name],
                                               "batch_stats": stats[name]})
    return state.replace(params=params, model_state={"batch_stats": stats},
                         extra={**state.extra, "teachers": teachers})

  def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    opts = self.opts
    views = views_of(batch["image"])
    view = lambda e: views[e % len(views)]  # noqa: E731  (expert e's own view)
    targets = jnp.take(state.extra[opts.pseudo_label_key], batch["index"], axis=0)
    teachers = state.extra["teachers"]
    t_out, t_stats = [], {}
    for e, name in enumerate(self.names):
      out, t_stats[name] = self._forward(name, teachers[name], view(e), state.step_rng(0x7E, e))
      t_out.append(jax.tree.map(jax.lax.stop_gradient, out))

    def loss_fn(params):
      outs, stats = [], {}
      for e, name in enumerate(self.names):
        variables = {"params": params[name],
                     "batch_stats": state.model_state["batch_stats"][name]}
        out, stats[name] = self._forward(name, variables, view(e), state.step_rng(0x57, e))
        outs.append(out)
      total, parts = reid.meb_loss(
          [o["logits"] for o in outs], [o["pooled"] for o in outs],
          [t["logits"] for t in t_out], [t["pooled"] for t in t_out], targets,
          state.extra["authority"], opts.ce_soft_weight, opts.tri_soft_weight, opts.epsilon)
      return total, (parts, stats, [o["logits"] for o in outs])

    (loss, (parts, stats, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    new_state = state.apply_gradients(self.tx, grads, model_state={"batch_stats": stats})
    momentum = reid.mean_teacher_decay(state.step, opts.alpha)
    teachers = {n: {"params": reid.ema_update(teachers[n]["params"], new_state.params[n],
                                              momentum),
                    "batch_stats": t_stats[n]} for n in self.names}
    metrics = {"loss": loss, **parts, "ema_momentum": momentum}
    for name, lg in zip(self.names, logits):
      metrics[f"accuracy_{name}"] = jnp.mean(jnp.argmax(lg, -1) == targets)
    return new_state.replace(extra={**state.extra, "teachers": teachers}), metrics

  def predict(self, state: TrainState, batch: Batch) -> dict[str, jax.Array]:
    """{"features": the eval features of expert `eval_expert` (its teacher by default)}."""
    name = self.names[self.opts.eval_expert]
    out = self.nets[name].apply(self._variables(state, name, self.opts.eval_teacher),
                                views_of(batch["image"])[0], train=False)
    return {"features": out["feature"]}

  def teacher_features(self, state: TrainState, batch: Batch) -> dict[str, jax.Array]:
    """Every EMA teacher's eval features of `batch` (plus its labels and cameras)."""
    images = views_of(batch["image"])[0]
    out = {n: self.nets[n].apply(self._variables(state, n, True), images, train=False)["feature"]
           for n in self.names}
    return {**out, **{k: batch[k] for k in ("label", "camera") if k in batch}}

  # -- epoch hooks (host) ----------------------------------------------------------------------
  def on_epoch_start(self, state: TrainState, epoch: int, context: HookContext) -> TrainState:
    """Clustering, classifier reset, authorities and optimizer reset (module docstring)."""
    opts = self.opts
    out = context.map_batches(self._extract, state, self.config.data.train_split)
    features = [np.asarray(out[n], np.float32) for n in self.names]
    key = jax.random.fold_in(jax.random.key(self.config.seed), epoch)
    result = mebnet_cluster.brainstorm_targets(
        features, opts.num_clusters, key, iterations=opts.kmeans_iterations,
        scatter=opts.scatter, centroids=opts.centroids)
    params, teachers = dict(state.params), dict(state.extra["teachers"])
    for name, weight in zip(self.names, result.classifiers):
      kernel = weight.T  # flax Dense kernels are (in, out)
      params[name] = mebnet_cluster.with_classifier(params[name], kernel, put_like)
      teachers[name] = {**teachers[name], "params": mebnet_cluster.with_classifier(
          teachers[name]["params"], kernel, put_like)}
    extra = {**state.extra, "teachers": teachers,
             opts.pseudo_label_key: put_like(result.labels, state.extra[opts.pseudo_label_key]),
             "authority": put_like(result.authority, state.extra["authority"])}
    state = state.replace(params=params, extra=extra)
    if opts.reset_optimizer:
      fresh = self.tx.init(params)
      state = state.replace(opt_state={**state.opt_state, "model": jax.device_put(
          fresh, jax.tree.map(lambda x: x.sharding, state.opt_state["model"]))})
    metrics = mebnet_cluster.cluster_metrics(result, self.names, context.train_source)
    context.writer.write(int(jax.device_get(state.step)), "cluster", metrics)
    return state

  def on_epoch_end(self, state: TrainState, epoch: int, context: HookContext) -> TrainState:
    """With `expert_eval_splits`, every EMA expert's mAP and rank-1 on (query, gallery),
    logged and appended to experts.jsonl in the workdir."""
    splits = tuple(self.opts.expert_eval_splits or ())
    if not splits:
      return state
    query, gallery = (context.map_batches(self._extract, state, s) for s in splits[:2])
    row = {n: mebnet_cluster.retrieval_scores(query, gallery, n) for n in self.names}
    step = int(jax.device_get(state.step))
    context.writer.write(step, "experts", {f"{n}/{k}": v for n, r in row.items()
                                           for k, v in r.items()})
    if context.workdir and distributed.is_main_process():
      with open(os.path.join(context.workdir, EXPERTS_FILE), "a", encoding="utf-8") as f:
        f.write(json.dumps({"epoch": epoch, "step": step, **row}) + "\n")
    return state


def _final_metric(workdir: str, metric: str) -> float:
  with open(os.path.join(workdir, "stage_done.json"), encoding="utf-8") as f:
    final = json.load(f)["eval"]
  if metric in final:
    return float(final[metric])
  values = [v for k, v in final.items() if k.split("/")[-1] == metric]
  if len(values) != 1:
    raise ConfigError(f"{workdir}: no single final metric {metric!r} (it has {sorted(final)}); "
                      "set the report's `metric` to one of them.")
  return float(values[0])


def mebnet_report(config: ml_collections.ConfigDict, inputs: dict[str, str], stage_dir: str,
                  root: str) -> dict[str, Any]:
  """`reid_report.json` in the run's workdir: target mAP before and after brainstorming.

  Args:
    config: the report stage: `source_stages` (the pretraining stage of each expert, in the
      adaptation's expert order), `adapted_stage`, `labels` (a name per expert), `metric` (the
      retrieval evaluator's target metric, default "target/mAP").
    inputs: {stage: workdir} of those stages.
    stage_dir: the report stage's workdir (unused).
    root: the staged run's workdir; the report goes there.

  Returns:
    {"source_only_map", "adapted_map"}: the target mAP of the adaptation's evaluated expert
    (`mebnet.eval_expert`) after its pretraining and after adaptation, both in [0, 1]; per expert
    "<label>_source_only_map" and, when the adaptation logged experts.jsonl,
    "<label>_adapted_map"; the best expert of each; "selected_adapted_map", the best target mAP
    over all epochs and experts (the release's checkpoint choice, selected on the test set);
    "metric" and "expert".
  """
  del stage_dir
  metric = config.get("metric", "target/mAP")
  source_stages = tuple(config.source_stages)
  adapted = inputs[config.adapted_stage]
  labels = tuple(config.get("labels", None) or source_stages)
  with open(os.path.join(adapted, "config.json"), encoding="utf-8") as f:
    expert = int(options(ml_collections.ConfigDict(json.load(f))).eval_expert)
  before = [_final_metric(inputs[s], metric) for s in source_stages]
  report: dict[str, Any] = {"metric": metric, "expert": labels[expert],
                            "source_only_map": before[expert],
                            "adapted_map": _final_metric(adapted, metric)}
  for label, value in zip(labels, before):
    report[f"{label}_source_only_map"] = value
  report["best_source_only_map"] = max(before)
  rows = os.path.join(adapted, EXPERTS_FILE)
  if os.path.exists(rows):
    with open(rows, encoding="utf-8") as f:
      epochs = [json.loads(line) for line in f if line.strip()]
    after = [float(epochs[-1][f"expert{i}"]["mAP"]) for i in range(len(labels))]
    for label, value in zip(labels, after):
      report[f"{label}_adapted_map"] = value
    report["best_adapted_map"] = max(after)
    # The release keeps the epoch and expert of best target test mAP (test-set selection).
    report["selected_adapted_map"] = max(float(r[f"expert{i}"]["mAP"]) for r in epochs
                                         for i in range(len(labels)))
  with open(os.path.join(root, REPORT_FILE), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)
  return report
