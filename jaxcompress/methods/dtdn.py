"""DTDN (dynamic task-oriented disentangling network) and its source-only baseline: "dtdn".

Dai, Chen, Wu, Hong, Ye, Tian, Ji, "Learning Task-oriented Disentangled Representations for
Unsupervised Domain Adaptation", arXiv 2007.13264 (IEEE TIP 31, 2022). The step follows the
official code (PeixianChen/DTDN, `DTDN/reid/trainers.py` `Trainer._forward`, `BaseTrainer.train`,
`DTDN/baseline.py`); formulas in `dtdn_losses`, networks in `dtdn_nets`.

Per step, with a labelled source batch ("image", "label") and an unlabelled target batch of the
same size from the stream `config.data.streams.target` ("target/image", "target/index": the
target image's slot in the exemplar memory and the target head):
  F_s = E(x_s), F_t = E(x_t) (two train-mode passes); g = gate(F) averaged over each domain's
  batch (`config.dtdn.gate`); one permutation pi; TaskNet in train mode on S_c + S_a[pi],
  S_c + T_a[pi], T_c + S_a[pi], T_c + T_a[pi] and T_c, in the release's order (its batch
  statistics move five times, each pass with its own dropout);
  L = w_cls (L_sc_sa + L_sc_ta) + w_nb L_nb + w_agree L_agree (`dtdn_losses.loss_weights`,
  epoch = step // steps_per_epoch); the memory feature is the L2-normalised BN embedding of
  TaskNet(T_c) after dropout; the memory (`state.extra["memory"]`) updates every step with
  momentum alpha * epoch (also while its loss weighs 0, as the release's `InvNet.forward` does).
The release's three SGD optimizers share one learning rate and one gradient, so one optimizer
over encoder, task and gate with regex groups for the release's 0.1 `lr_mult` on the ResNet
parts is the same update.

`config.dtdn.variant = "source_only"`: E and TaskNet (no gate) with CE on the source batch only;
the target stream is not needed.

Test (`predict`): per-sample gate, {"features": max-pooled stage-4 features of TaskNet(g * F)
(the release's "pool5"; the retrieval evaluator L2-normalises them), "logits": the source head}
— retrieval for re-ID, top-1 ("classification" evaluator) for closed-set benchmarks (Office-31).
"""
from __future__ import annotations

import json
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections

from jaxcompress import reid
from jaxcompress.errors import ConfigError
from jaxcompress.methods import dtdn_losses as L
from jaxcompress.methods import dtdn_nets
from jaxcompress.methods.base import Batch, Method, Metrics
from jaxcompress.optim import builder
from jaxcompress.train.state import TrainState

VARIANTS = ("dtdn", "source_only")
_SALT = 0xD7D
_TASK_PASSES = ("sc_sa", "sc_ta", "tc_sa", "tc_ta", "t_c")


def default_dtdn_config() -> ml_collections.ConfigDict:
  """`config.dtdn` with the release's values (`baseline.py`, `trainers.py`, `Disentangle.sh`)."""
  return ml_collections.ConfigDict({
      "variant": "dtdn",
      "num_target": 0,          # target training images (exemplar slots); required for "dtdn"
      "gate": "batch_mean",     # or "per_sample"
      "reduction": 16,
      "num_features": 2048, "dropout": 0.5,
      "switch_epoch": 12,       # loss-weight switch: epoch > switch_epoch
      "knn": 10, "beta": 0.05, "alpha": 0.01,
      "l1_weight": 5e-5, "l1_full_weight": 1e-4,
      "epsilon": 0.0,           # CE label smoothing (the release's plain CrossEntropyLoss)
      "instance_norm": True, "last_stride": 1,
  })


class DTDN(Method):
  """DTDN / source-only baseline on `config.dtdn` (module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict, **kwargs: Any):
    super().__init__(config, **kwargs)
    o = default_dtdn_config()
    o.update(dict(config.get("dtdn", {}) or {}))
    self.opts = o
    if o.variant not in VARIANTS:
      raise ConfigError(f"config.dtdn.variant {o.variant!r}: use one of {VARIANTS}.")
    if o.gate not in L.GATE_MODES:
      raise ConfigError(f"config.dtdn.gate {o.gate!r}: use one of {L.GATE_MODES}.")
    if self.is_dtdn and int(o.num_target) < int(o.knn):
      raise ConfigError(f"config.dtdn.num_target ({o.num_target}) must be the number of target "
                        f"training images, at least knn ({o.knn}); set it from the target split.")
    kw = dict(config.model.get("kwargs", {}) or {})
    backbone = {k: kw[k] for k in ("stage_sizes", "block", "width") if k in kw}
    self.nets = {
        "encoder": dtdn_nets.Encoder(**backbone),
        "task": dtdn_nets.TaskNet(
            num_source=int(config.model.num_classes),
            num_target=int(o.num_target) if self.is_dtdn else 0,
            num_features=int(o.num_features), dropout=float(o.dropout),
            last_stride=int(o.last_stride), instance_norm=bool(o.instance_norm), **backbone),
    }
    if self.is_dtdn:
      self.nets["gate"] = dtdn_nets.DynamicGate(int(o.reduction))
    self.tx: Any = None

  @property
  def is_dtdn(self) -> bool:
    return self.opts.variant == "dtdn"

  def call(self, name: str, params: Any, model_state: Any, x: jax.Array, train: bool,
           rng: jax.Array | None = None) -> tuple[Any, Any]:
    """Network `name` on x: (output, model_state with its batch statistics updated in train)."""
    own = dict(model_state.get(name, {}))
    variables = {"params": params[name], **own}
    if name == "gate":
      return self.nets[name].apply(variables, x), model_state
    if not train:
      return self.nets[name].apply(variables, x, train=False), model_state
    y, updates = self.nets[name].apply(variables, x, train=True, mutable=list(own),
                                       rngs={"dropout": rng} if rng is not None else None)
    return y, {**model_state, name: {**own, **updates}}

  def init(self, rng: jax.Array, example_batch: Batch) -> TrainState:
    k_enc, k_task, k_gate = jax.random.split(rng, 3)
    x = example_batch["image"][:1]
    params, model_state = {}, {}
    for name, key in (("encoder", k_enc), ("gate", k_gate), ("task", k_task)):
      if name not in self.nets:
        continue
      args = (x,) if name == "gate" else (x, False)
      variables = dict(flax.core.unfreeze(self.nets[name].init(key, *args)))
      params[name] = variables.pop("params")
      model_state[name] = variables
      if name == "encoder":  # gate and task read the encoder's map
        x = self.nets[name].apply({"params": params[name], **variables}, x, train=False)
    self.tx = builder.make_optimizer(self.config.optim, params, self.total_steps,
                                     self.steps_per_epoch)
    extra = {}
    if self.is_dtdn:
      extra["memory"] = jnp.zeros((int(self.opts.num_target), int(self.opts.num_features)),
                                  jnp.float32)
    return TrainState.create(params=params, model_state=model_state, rng=rng,
                             optimizers={"model": (self.tx, params)}, extra=extra)

  # -- step ----------------------------------------------------------------------------------
  def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    o = self.opts
    epoch = state.step // self.steps_per_epoch
    keys = jax.random.split(state.step_rng(_SALT), len(_TASK_PASSES) + 2)
    labels = batch["label"]

    def ce(logits):
      return reid.cross_entropy_label_smooth(logits, labels, float(o.epsilon))

    def source_only_loss(params):
      f, ms = self.call("encoder", params, state.model_state, batch["image"], True)
      out, ms = self.call("task", params, ms, f, True, keys[0])
      loss = ce(out["source"])
      return loss, (ms, {"cls": loss}, out["source"], {})

    def dtdn_loss(params):
      ms = state.model_state
      f_s, ms = self.call("encoder", params, ms, batch["image"], True)
      f_t, ms = self.call("encoder", params, ms, batch["target/image"], True)
      g_s = L.training_gate(self.call("gate", params, ms, f_s, True)[0], o.gate)
      g_t = L.training_gate(self.call("gate", params, ms, f_t, True)[0], o.gate)
      perm = jax.random.permutation(keys[-1], f_s.shape[0])
      parts = L.recombine(f_s, f_t, g_s, g_t, perm)
      outs = {}
      for k, name in enumerate(_TASK_PASSES):
        outs[name], ms = self.call("task", params, ms, parts[name], True, keys[k])
      w = L.gate_l1_weight(g_s, float(o.l1_weight), float(o.l1_full_weight))
      terms = {"sc_sa": ce(outs["sc_sa"]["source"]),
               "sc_ta": ce(outs["sc_ta"]["source"]) + w * jnp.sum(jnp.abs(g_s)),
               "agree": L.agreement_loss(outs["tc_sa"]["target"], outs["tc_ta"]["target"])
                        + w * jnp.sum(jnp.abs(g_t))}
      bn = outs["t_c"]["bn"]
      x = bn / jnp.maximum(jnp.linalg.norm(bn, axis=-1, keepdims=True), 1e-12)
      rate = float(o.dropout)
      if rate > 0:
        keep = jax.random.bernoulli(keys[-2], 1.0 - rate, x.shape)
        x = jnp.where(keep, x / (1.0 - rate), 0.0)
      index = batch["target/index"]
      terms["nb"] = L.exemplar_memory_loss(state.extra["memory"], x, index, knn=int(o.knn),
                                           beta=float(o.beta))
      w_cls, w_nb, w_agree = L.loss_weights(epoch, int(o.switch_epoch))
      total = (w_cls * (terms["sc_sa"] + terms["sc_ta"]) + w_nb * terms["nb"]
               + w_agree * terms["agree"])
      memory = L.exemplar_memory_update(state.extra["memory"], x, index,
                                        float(o.alpha) * epoch)
      aux = {"memory": memory, "gate_s": jnp.mean(g_s), "gate_t": jnp.mean(g_t)}
      return total, (ms, terms, outs["sc_sa"]["source"], aux)

    loss_fn = dtdn_loss if self.is_dtdn else source_only_loss
    (loss, (ms, terms, logits, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    params, opt = builder.apply_updates(self.tx, grads, state.opt_state["model"], state.params)
    extra = {**state.extra, "memory": aux.pop("memory")} if self.is_dtdn else state.extra
    metrics = {"loss": loss, **terms, **aux,
               "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}
    return state.replace(step=state.step + 1, params=params, opt_state={"model": opt},
                         model_state=ms, extra=extra), metrics

  # -- evaluation ----------------------------------------------------------------------------
  def predict(self, state: TrainState, batch: Batch) -> dict[str, jax.Array]:
    """{"features": max-pooled stage-4 features after the per-sample gate, "logits": source
    head} in eval mode (module docstring)."""
    f, _ = self.call("encoder", state.params, state.model_state, batch["image"], False)
    if self.is_dtdn:
      g, _ = self.call("gate", state.params, state.model_state, f, False)
      f = g[:, None, None, :] * f
    out, _ = self.call("task", state.params, state.model_state, f, False)
    return {"features": out["pool"], "logits": out["source"]}

  def eval_step(self, state: TrainState, batch: Batch) -> Metrics:
    """Summed feature norm (retrieval and classification are separate evaluators)."""
    f = self.predict(state, batch)["features"].astype(jnp.float32)
    return {"feature_norm": jnp.sum(jnp.linalg.norm(f, axis=-1) * batch["mask"])}


def dtdn_report(config: ml_collections.ConfigDict, inputs: dict[str, str], stage_dir: str,
                root: str) -> dict[str, Any]:
  """`reid_report.json` in the run's workdir: the source-only and DTDN target accuracy.

  Args:
    config: the report stage: `source_only_stage`, `dtdn_stage` (stage names among `inputs`) and
      `metric`, the final metric read from each stage's `stage_done.json` ("target/rank1": rank-1
      on the target query / gallery for re-ID; "target/accuracy": top-1 for classification).
    inputs: {stage: workdir} of the training stages.
    stage_dir: the report stage's workdir (unused).
    root: the staged run's workdir; the report goes there.

  Returns:
    {"source_only_accuracy", "dtdn_accuracy", "gain", "metric"}.
  """
  del stage_dir
  metric = str(config.get("metric", "target/rank1"))
  values = {}
  for key, stage in (("source_only_accuracy", config.get("source_only_stage", "source_only")),
                     ("dtdn_accuracy", config.get("dtdn_stage", "dtdn"))):
    if stage not in inputs:
      raise ConfigError(f"dtdn_report: stage {stage!r} is not among its inputs {list(inputs)}.")
    with open(os.path.join(inputs[stage], "stage_done.json"), encoding="utf-8") as f:
      final = json.load(f)["eval"]
    if metric not in final:
      raise ConfigError(f"dtdn_report: stage {stage!r} has no final metric {metric!r} (has "
                        f"{sorted(final)[:8]}); set the report's `metric`.")
    values[key] = float(final[metric])
  report = {**values, "gain": values["dtdn_accuracy"] - values["source_only_accuracy"],
            "metric": metric}
  with open(os.path.join(root, "reid_report.json"), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)
  return report
