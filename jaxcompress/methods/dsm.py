"""DSM video self-supervision and its MoCo baseline as an engine method.

Wang et al., "Enhancing Unsupervised Video Representation Learning by Decoupling the Scene and
the Motion", AAAI 2021, arXiv 2009.05757 (official code FingerRec/DSM-decoupling-scene-motion,
`src/pt.py` `train_dsm`, `train_dsm_triplet`, `train_moco`).

One step (`config.dsm.variant = "dsm"`):
  q = f_q(anchor clip), k = stop_gradient(f_k(positive clip)), n = f_q(intra-video negative),
  logits = [q.k, q.queue_1..K, q.n] / T, loss = InfoNCE (cross-entropy with label 0);
then the keys k replace the oldest queue slots (`selfsup.queue_push`) and the key encoder moves
towards the query encoder, `theta_k <- m theta_k + (1 - m) theta_q` (`selfsup.ema_update`,
m = 0.999). The encoder is the configured video model with its classifier as the 128-d
projection head (official: global pooling -> Linear(C, 128)), L2-normalised. The key encoder's
batch norm runs in train mode on its own batches; its running statistics come from its own
forward passes, never averaged from the query encoder (the official moment update touches
parameters only).

The anchor clip arrives already disturbed when the data transform applies DSM's spatial warp
(`dsm_clips(warp=True)`); the anchor and positive read the same frames, the negative another
start of the same video.

Variants:
  * "moco": the baseline, no intra-video negative (logits [q.k, q.queue] / T).
  * "triplet": DSM(Triplet): no key encoder and no queue; k = f_q(positive) with gradient and
    `TripletMarginLoss(q, k, n) + TripletMarginLoss(q, k, n reversed over the batch)` (the second
    term uses other videos' negatives), margin 0.5, L2 distance with the +1e-6 of
    `torch.nn.functional.pairwise_distance`.
"""
from __future__ import annotations

import json
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections

from jaxcompress import models, selfsup
from jaxcompress.errors import ConfigError
from jaxcompress.methods.base import Batch, Method, Metrics
from jaxcompress.optim import builder
from jaxcompress.train.state import TrainState

VARIANTS = ("dsm", "moco", "triplet")


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Rows divided by max(||row||_2, eps) (`torch.nn.functional.normalize`)."""
  x = x.astype(jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def triplet_margin_loss(anchor: jax.Array, positive: jax.Array, negative: jax.Array,
                        margin: float = 0.5, eps: float = 1e-6) -> jax.Array:
  """`torch.nn.TripletMarginLoss(margin, p=2)`: mean of max(d(a, p) - d(a, n) + margin, 0) with
  d(x, y) = ||x - y + eps||_2 (`pairwise_distance` adds eps to the difference)."""
  d_ap = jnp.linalg.norm(anchor - positive + eps, axis=-1)
  d_an = jnp.linalg.norm(anchor - negative + eps, axis=-1)
  return jnp.mean(jnp.maximum(d_ap - d_an + margin, 0.0))


def default_dsm_config() -> ml_collections.ConfigDict:
  """`config.dsm`: the official pretraining options (`src/option.py`, released scripts)."""
  return ml_collections.ConfigDict({
      "variant": "dsm",          # "dsm", "moco" (baseline) or "triplet"
      "embed_dim": 128,          # projection head width
      "temperature": 0.07,
      "queue_size": 3569,        # K in every released script
      "momentum": 0.999,         # key encoder EMA
      "triplet_margin": 0.5,
  })


class DSM(Method):
  """DSM / MoCo pretraining of `config.model` (a video model whose classifier is the head)."""

  def __init__(self, config: ml_collections.ConfigDict, **kwargs: Any):
    super().__init__(config, **kwargs)
    self.opts = opts = config.get("dsm", default_dsm_config())
    if opts.variant not in VARIANTS:
      raise ConfigError(f"config.dsm.variant {opts.variant!r}: use one of {VARIANTS}.")
    if opts.temperature <= 0 or not 0.0 <= opts.momentum <= 1.0:
      raise ConfigError(f"config.dsm needs temperature > 0 and momentum in [0, 1], got "
                        f"{opts.temperature} and {opts.momentum}.")
    m = config.model
    self.model = models.build(m.name, layers=m.get("layers", "float"),
                              layer_kwargs=dict(m.get("layer_kwargs", {})),
                              num_classes=opts.embed_dim, **dict(m.get("kwargs", {})))

  # -- model ---------------------------------------------------------------------------------
  def encode(self, params: Any, model_state: Any, clips: jax.Array, train: bool
             ) -> tuple[jax.Array, Any]:
    """L2-normalised embeddings of `clips` and the updated model state (train mode)."""
    variables = {"params": params, **model_state}
    if train:
      mutable = [k for k in model_state if k != "params"]
      out, updates = self.model.apply(variables, clips, train=True, mutable=mutable)
      return l2_normalize(out), {**model_state, **updates}
    return l2_normalize(self.model.apply(variables, clips, train=False)), model_state

  def _uses_queue(self) -> bool:
    return self.opts.variant != "triplet"

  def init(self, rng: jax.Array, example_batch: Batch) -> TrainState:
    self._check_batch(example_batch)
    k_init, k_queue = jax.random.split(rng)
    variables = self.model.init(k_init, example_batch["image"][:1], train=False)
    params = variables.pop("params")
    model_state = dict(flax.core.unfreeze(variables))
    self.tx = builder.make_optimizer(self.config.optim, params, self.total_steps,
                                     self.steps_per_epoch)
    extra = {}
    if self._uses_queue():
      # The key encoder starts as a copy of the query encoder (official `moment_update(.., 0)`).
      extra = {"key_params": params, "key_state": model_state,
               "queue": selfsup.init_queue(k_queue, self.opts.queue_size, self.opts.embed_dim),
               "queue_index": jnp.zeros((), jnp.int32)}
    return TrainState.create(params=params, model_state=model_state, rng=rng,
                             optimizers={"model": (self.tx, params)}, extra=extra)

  def _check_batch(self, batch: Batch) -> None:
    need = ["image", "positive"] + (["negative"] if self.opts.variant != "moco" else [])
    missing = [k for k in need if k not in batch]
    if missing:
      raise ConfigError(
          f"DSM variant {self.opts.variant!r} needs batch entries {need}, missing {missing}; "
          "use config.data.transform = 'dsm_clips' (inter_video=True only for 'moco').")
    if batch["image"].ndim != 5:
      raise ConfigError(f"DSM trains on clips (N, T, H, W, C), got {batch['image'].shape}.")

  # -- step ----------------------------------------------------------------------------------
  def loss_fn(self, params: Any, state: TrainState, batch: Batch
              ) -> tuple[jax.Array, tuple[Any, dict[str, jax.Array], jax.Array, Any]]:
    """The variant's loss; aux = (model_state, metrics, keys, key_state)."""
    opts = self.opts
    q, model_state = self.encode(params, state.model_state, batch["image"], True)
    if opts.variant == "triplet":
      k, model_state = self.encode(params, model_state, batch["positive"], True)
      n, model_state = self.encode(params, model_state, batch["negative"], True)
      loss = (triplet_margin_loss(q, k, n, opts.triplet_margin)
              + triplet_margin_loss(q, k, n[::-1], opts.triplet_margin))
      metrics = {"pos_sim": jnp.mean(jnp.sum(q * k, -1)), "neg_sim": jnp.mean(jnp.sum(q * n, -1))}
      return loss, (model_state, metrics, k, None)
    k, key_state = self.encode(state.extra["key_params"], state.extra["key_state"],
                               batch["positive"], True)
    k = jax.lax.stop_gradient(k)
    n = None
    if opts.variant == "dsm":
      n, model_state = self.encode(params, model_state, batch["negative"], True)
    logits = selfsup.moco_logits(q, k, state.extra["queue"], negatives=n,
                                 temperature=opts.temperature)
    loss = selfsup.info_nce(logits)
    metrics = {"contrast_accuracy": jnp.mean(jnp.argmax(logits, -1) == 0),
               "pos_sim": jnp.mean(jnp.sum(q * k, -1))}
    if n is not None:
      metrics["neg_sim"] = jnp.mean(jnp.sum(q * n, -1))
      # How often the intra-video negative outranks the positive (the scene shortcut).
      metrics["negative_wins"] = jnp.mean(logits[:, -1] > logits[:, 0])
    return loss, (model_state, metrics, k, key_state)

  def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    (loss, (model_state, metrics, keys, key_state)), grads = jax.value_and_grad(
        self.loss_fn, has_aux=True)(state.params, state, batch)
    new_state = state.apply_gradients(self.tx, grads, model_state=model_state)
    if self._uses_queue():
      queue, index = selfsup.queue_push(state.extra["queue"], state.extra["queue_index"], keys)
      extra = {**state.extra, "queue": queue, "queue_index": index, "key_state": key_state,
               "key_params": selfsup.ema_update(state.extra["key_params"], new_state.params,
                                                self.opts.momentum)}
      new_state = new_state.replace(extra=extra)
    return new_state, {"loss": loss, **metrics}

  # -- evaluation ----------------------------------------------------------------------------
  def predict(self, state: TrainState, batch: Batch) -> dict[str, jax.Array]:
    """{"features": the query encoder's normalised embedding} of `batch["image"]` clips."""
    features, _ = self.encode(state.params, state.model_state, batch["image"], False)
    return {"features": features}

  def eval_step(self, state: TrainState, batch: Batch) -> Metrics:
    """Pretraining has no labelled objective: the mean embedding norm (1 for valid rows) as a
    sanity check. Evaluate representations with a fine-tuning or retrieval stage."""
    f = self.predict(state, batch)["features"]
    return {"feature_norm": jnp.sum(jnp.linalg.norm(f, axis=-1) * batch["mask"])}


def dsm_report(config: ml_collections.ConfigDict, inputs: dict[str, str], stage_dir: str,
               root: str) -> dict[str, Any]:
  """`dsm_report.json` in the run's workdir: the same evaluation of each pretraining.

  Args:
    config: the report stage; `metric` names the final evaluation metric compared (default
      "video_accuracy") and `labels` maps input stages to report names (default: stage names).
    inputs: {stage: workdir} of the evaluation stages (e.g. probes of the DSM, MoCo and
      randomly initialised backbones).
    stage_dir: the report stage's workdir (unused).
    root: the staged run's workdir; the report goes there.

  Returns:
    {"<label>_accuracy": the stage's final metric, ...} plus "metric".
  """
  del stage_dir
  metric = config.get("metric", "video_accuracy")
  labels = dict(config.get("labels", {}) or {})
  report: dict[str, Any] = {"metric": metric}
  for stage, workdir in inputs.items():
    with open(os.path.join(workdir, "stage_done.json"), encoding="utf-8") as f:
      final = json.load(f)["eval"]
    values = [v for k, v in final.items() if k.split("/")[-1] == metric]
    if not values:
      raise ConfigError(f"Stage {stage!r} has no final metric {metric!r} (it has "
                        f"{sorted(final)}); set the report's `metric`.")
    report[f"{labels.get(stage, stage)}_accuracy"] = float(values[0])
  with open(os.path.join(root, "dsm_report.json"), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)
  return report
