"""Linear evaluation of a frozen pretrained backbone: only a new linear classifier learns.

The standard protocol for self-supervised representations (MoCo, He et al. arXiv 1911.05722,
Sec. 4.1): the backbone runs in inference mode (batch-norm running statistics, no gradient) and
a linear classifier on its pooled features is trained with cross-entropy. As in MAE's linear
probing (He et al. arXiv 2111.06377, Sec. A.2), the features first pass an affine-free batch
norm, which makes one learning rate work for backbones whose feature scales and spreads differ
by orders of magnitude (a contrastive backbone's pooled features are not normalised by its
pretraining head); it is a per-feature affine map, so the classifier stays linear.

The backbone is `config.model` built without its classifier (`include_top=False`); its
parameters and statistics live under "backbone", the classifier's under "head", so a pretraining
stage hands its backbone over with
`init_from = dict(stage=..., rename=(("^", "backbone/"),), exclude=".*classifier.*",
collections=("params", "batch_stats"))`.
"""
from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxcompress import models
from jaxcompress.methods.base import Batch, Method, Metrics
from jaxcompress.methods.classification import cross_entropy
from jaxcompress.optim import builder
from jaxcompress.train.state import TrainState


class ProbeHead(nn.Module):
  """Affine-free batch norm, then a linear classifier."""
  num_classes: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = nn.BatchNorm(use_running_average=not train, use_bias=False, use_scale=False,
                     momentum=0.9, epsilon=1e-6, name="bn")(x)
    return nn.Dense(self.num_classes, name="classifier")(x)


class LinearProbe(Method):
  """A linear classifier (`config.model.num_classes` outputs) on frozen backbone features."""

  def __init__(self, config: ml_collections.ConfigDict, **kwargs: Any):
    super().__init__(config, **kwargs)
    m = config.model
    self.backbone = models.build(m.name, layers=m.get("layers", "float"),
                                 layer_kwargs=dict(m.get("layer_kwargs", {})),
                                 include_top=False, **dict(m.get("kwargs", {})))
    self.head = ProbeHead(m.num_classes)

  def features(self, params: Any, model_state: Any, images: jax.Array) -> jax.Array:
    """Pooled backbone features in inference mode, held constant."""
    variables = {"params": params["backbone"],
                 **{k: v["backbone"] for k, v in model_state.items()}}
    feats = self.backbone.apply(variables, images, train=False).astype(jnp.float32)
    return jax.lax.stop_gradient(feats)

  def logits(self, params: Any, model_state: Any, feats: jax.Array, train: bool
             ) -> tuple[jax.Array, Any]:
    """Head logits and the model state with the head's updated statistics (train mode)."""
    variables = {"params": params, "batch_stats": model_state["batch_stats"]["head"]}
    if not train:
      return self.head.apply(variables, feats, train=False), model_state
    out, updates = self.head.apply(variables, feats, train=True, mutable=["batch_stats"])
    stats = {**model_state["batch_stats"], "head": updates["batch_stats"]}
    return out, {**model_state, "batch_stats": stats}

  def init(self, rng: jax.Array, example_batch: Batch) -> TrainState:
    k_backbone, k_head = jax.random.split(rng)
    variables = flax.core.unfreeze(
        self.backbone.init(k_backbone, example_batch["image"][:1], train=False))
    params = {"backbone": variables.pop("params")}
    model_state = {k: {"backbone": v} for k, v in variables.items()}
    feats = self.features(params, model_state, example_batch["image"][:1])
    head = flax.core.unfreeze(self.head.init(k_head, feats, train=False))
    params["head"] = head["params"]
    model_state.setdefault("batch_stats", {})["head"] = head["batch_stats"]
    # Only the head is optimised: the backbone is not an optimizer argument at all.
    self.tx = builder.make_optimizer(self.config.optim, params["head"], self.total_steps,
                                     self.steps_per_epoch)
    return TrainState.create(params=params, model_state=model_state, rng=rng,
                             optimizers={"model": (self.tx, params["head"])})

  def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    feats = self.features(state.params, state.model_state, batch["image"])

    def loss_fn(head):
      logits, model_state = self.logits(head, state.model_state, feats, True)
      return jnp.mean(cross_entropy(logits, batch["label"])), (logits, model_state)

    (loss, (logits, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params["head"])
    head, opt = builder.apply_updates(self.tx, grads, state.opt_state["model"],
                                      state.params["head"])
    new_state = state.replace(step=state.step + 1, params={**state.params, "head": head},
                              opt_state={**state.opt_state, "model": opt},
                              model_state=model_state)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return new_state, {"loss": loss, "accuracy": accuracy}

  def predict(self, state: TrainState, batch: Batch) -> dict[str, jax.Array]:
    feats = self.features(state.params, state.model_state, batch["image"])
    logits, _ = self.logits(state.params["head"], state.model_state, feats, False)
    return {"logits": logits, "features": feats}

  def eval_step(self, state: TrainState, batch: Batch) -> Metrics:
    logits = self.predict(state, batch)["logits"]
    mask = batch["mask"]
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return {"loss": jnp.sum(cross_entropy(logits, batch["label"]) * mask),
            "accuracy": jnp.sum(correct * mask)}
