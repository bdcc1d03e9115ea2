"""Per-batch-sum evaluators: the method's own eval metrics, and top-1 accuracy from logits."""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax

from jaxcompress import evals


class MethodMetrics(evals.Evaluator):
  """The method's `eval_step` sums over a split, divided by the number of valid examples.

  Every method's default evaluator (`config.evals` absent): accuracy and loss for classifiers,
  PSNR on eval crops for super-resolution, clean and attacked accuracy for adversarial training.
  """

  combine: dict[str, str] = {}  # every output is a sum

  def __init__(self, *args: Any, **kwargs: Any):
    super().__init__(*args, **kwargs)
    # The method's own function, so compiled programs, profiles and cache entries say eval_step.
    self.batch_outputs = self.method.eval_step

  def batch_outputs(self, state: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return self.method.eval_step(state, batch)

  def finalize(self, outputs: Mapping[str, evals.Outputs]) -> dict[str, Any]:
    split = outputs[self.splits[0]]
    count = max(float(split["count"]), 1.0)
    return {k: float(v) / count for k, v in split.items() if k != "count"}


class Accuracy(evals.Evaluator):
  """Top-1 accuracy and mean cross-entropy from `method.predict(state, batch)["logits"]`.

  Config: `label_key` (default "label").
  """

  combine = {"correct": evals.SUM, "loss": evals.SUM}

  def batch_outputs(self, state: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    logits = self.method.predict(state, batch)["logits"].astype(jnp.float32)
    labels = batch[self.cfg.get("label_key", "label")]
    mask = batch["mask"]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return {"correct": jnp.sum((jnp.argmax(logits, -1) == labels) * mask),
            "loss": jnp.sum(loss * mask)}

  def finalize(self, outputs: Mapping[str, evals.Outputs]) -> dict[str, Any]:
    split = outputs[self.splits[0]]
    count = max(float(split["count"]), 1.0)
    return {"accuracy": float(split["correct"]) / count, "loss": float(split["loss"]) / count}
