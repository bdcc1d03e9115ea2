"""Linear evaluation of a frozen pretrained backbone: only a new linear classifier learns.

The standard protocol for self-supervised representations (e.g. MoCo, He et al. arXiv
1911.05722, Sec. 4.1): the backbone runs in inference mode (batch-norm running statistics, no
gradient) and a linear layer on its pooled features is trained with cross-entropy. The backbone
is `config.model` built without its classifier (`include_top=False`); its parameters live under
"backbone", the classifier under "head", so a pretraining stage hands its parameters over with
`init_from = dict(stage=..., rename=(("^", "backbone/"),), exclude=".*classifier.*")`.

`config.probe.normalize` (default True) L2-normalises the features before the classifier, so
one learning rate suits backbones whose feature scales differ by orders of magnitude (a
contrastive backbone's pooled features are not normalised by its pretraining head).
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


class LinearProbe(Method):
  """A linear classifier (`config.model.num_classes` outputs) on frozen backbone features."""

  def __init__(self, config: ml_collections.ConfigDict, **kwargs: Any):
    super().__init__(config, **kwargs)
    m = config.model
    self.backbone = models.build(m.name, layers=m.get("layers", "float"),
                                 layer_kwargs=dict(m.get("layer_kwargs", {})),
                                 include_top=False, **dict(m.get("kwargs", {})))
    self.head = nn.Dense(m.num_classes)
    self.normalize = bool(config.get("probe", {}).get("normalize", True))

  def features(self, params: Any, model_state: Any, images: jax.Array) -> jax.Array:
    """Pooled backbone features in inference mode, held constant."""
    variables = {"params": params["backbone"], **model_state}
    feats = self.backbone.apply(variables, images, train=False).astype(jnp.float32)
    if self.normalize:
      feats = feats / jnp.maximum(jnp.linalg.norm(feats, axis=-1, keepdims=True), 1e-12)
    return jax.lax.stop_gradient(feats)

  def init(self, rng: jax.Array, example_batch: Batch) -> TrainState:
    k_backbone, k_head = jax.random.split(rng)
    variables = self.backbone.init(k_backbone, example_batch["image"][:1], train=False)
    backbone = variables.pop("params")
    model_state = dict(flax.core.unfreeze(variables))
    params = {"backbone": backbone}
    feats = self.features(params, model_state, example_batch["image"][:1])
    params["head"] = self.head.init(k_head, feats)["params"]
    # Only the head is optimised: the backbone is not an optimizer argument at all.
    self.tx = builder.make_optimizer(self.config.optim, params["head"], self.total_steps,
                                     self.steps_per_epoch)
    return TrainState.create(params=params, model_state=model_state, rng=rng,
                             optimizers={"model": (self.tx, params["head"])})

  def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    feats = self.features(state.params, state.model_state, batch["image"])

    def loss_fn(head):
      logits = self.head.apply({"params": head}, feats)
      return jnp.mean(cross_entropy(logits, batch["label"])), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params["head"])
    head, opt = builder.apply_updates(self.tx, grads, state.opt_state["model"],
                                      state.params["head"])
    new_state = state.replace(step=state.step + 1, params={**state.params, "head": head},
                              opt_state={**state.opt_state, "model": opt})
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return new_state, {"loss": loss, "accuracy": accuracy}

  def predict(self, state: TrainState, batch: Batch) -> dict[str, jax.Array]:
    feats = self.features(state.params, state.model_state, batch["image"])
    return {"logits": self.head.apply({"params": state.params["head"]}, feats),
            "features": feats}

  def eval_step(self, state: TrainState, batch: Batch) -> Metrics:
    logits = self.predict(state, batch)["logits"]
    mask = batch["mask"]
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return {"loss": jnp.sum(cross_entropy(logits, batch["label"]) * mask),
            "accuracy": jnp.sum(correct * mask)}
