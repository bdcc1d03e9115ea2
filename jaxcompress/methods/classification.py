"""Supervised image classification with cross-entropy: the float baseline every paper compares to.

Also the base of the binary/quantized classification methods (RBNN), which change the layer set
and add epoch hooks but keep this step.
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from jaxcompress import models
from jaxcompress.methods.base import Batch, Method, Metrics
from jaxcompress.optim import builder
from jaxcompress.train.state import TrainState


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example softmax cross-entropy with integer labels."""
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


class Classification(Method):
  """Float classification: `config.model` on `config.data`, optimizer from `config.optim`."""

  def __init__(self, config, **kwargs):
    super().__init__(config, **kwargs)
    m = config.model
    self.model = models.build(m.name, layers=m.get("layers", "float"),
                              layer_kwargs=dict(m.get("layer_kwargs", {})),
                              num_classes=m.num_classes, **dict(m.get("kwargs", {})))

  def apply(self, params: Any, model_state: Any, images: jax.Array, train: bool,
            **kwargs: Any) -> tuple[jax.Array, Any]:
    """Model forward; returns (logits, new model_state) (model_state unchanged in eval)."""
    variables = {"params": params, **model_state}
    if train:
      mutable = [k for k in model_state if k != "params"]
      logits, updates = self.model.apply(variables, images, train=True, mutable=mutable, **kwargs)
      return logits, {**model_state, **updates}
    return self.model.apply(variables, images, train=False, **kwargs), model_state

  def init(self, rng: jax.Array, example_batch: Batch) -> TrainState:
    # The optimizer is built here because regex groups need the parameter paths; the engine
    # always calls init (also before restoring a checkpoint into its structure).
    variables = self.model.init(rng, example_batch["image"][:1], train=False)
    params = variables.pop("params")
    model_state = dict(flax.core.unfreeze(variables))
    self.tx = builder.make_optimizer(self.config.optim, params, self.total_steps,
                                     self.steps_per_epoch)
    return TrainState.create(params=params, model_state=model_state, rng=rng,
                             optimizers={"model": (self.tx, params)})

  def loss_fn(self, params: Any, state: TrainState, batch: Batch) -> tuple[jax.Array, Any]:
    """Mean cross-entropy and (logits, new model_state)."""
    # A per-step dropout key (models without dropout ignore it).
    logits, model_state = self.apply(params, state.model_state, batch["image"], train=True,
                                     rngs={"dropout": state.step_rng(0xD50)})
    return jnp.mean(cross_entropy(logits, batch["label"])), (logits, model_state)

  def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    (loss, (logits, model_state)), grads = jax.value_and_grad(self.loss_fn, has_aux=True)(
        state.params, state, batch)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    new_state = state.apply_gradients(self.tx, grads, model_state=model_state)
    return new_state, {"loss": loss, "accuracy": accuracy}

  def predict(self, state: TrainState, batch: Batch) -> dict[str, jax.Array]:
    logits, _ = self.apply(state.params, state.model_state, batch["image"], train=False)
    return {"logits": logits}

  def eval_step(self, state: TrainState, batch: Batch) -> Metrics:
    logits = self.predict(state, batch)["logits"]
    mask = batch["mask"]
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return {"loss": jnp.sum(cross_entropy(logits, batch["label"]) * mask),
            "accuracy": jnp.sum(correct * mask)}

  def summary(self, example_batch: Batch) -> str:
    from jaxcompress.summary import summary as summarize  # pylint: disable=g-import-not-at-top
    image = jax.ShapeDtypeStruct((1, *example_batch["image"].shape[1:]), jnp.float32)
    return str(summarize(self.model, image, train=False))
