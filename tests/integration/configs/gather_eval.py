"""The quickstart's quick variant with an evaluator whose outputs are gathered (test config).

The evaluator's statistic depends on every row and on the row order, so equal values across
device counts, process counts and eval batch sizes show that gathering keeps every example once,
in dataset order, without padding.
"""
import ml_collections
import numpy as np

from configs.baseline import digits_resnet20
from jaxcompress import evals


@evals.register("ordered_logit_stats")
class OrderedLogitStats(evals.Evaluator):
  """Order-weighted sums of gathered logits and labels."""

  combine = {"logits": evals.GATHER, "labels": evals.GATHER}

  def batch_outputs(self, state, batch):
    return {"logits": self.method.predict(state, batch)["logits"], "labels": batch["label"]}

  def finalize(self, outputs):
    split = outputs[self.splits[0]]
    weights = np.arange(1, len(split["labels"]) + 1, dtype=np.float64)
    return {"weighted_logits": float((split["logits"].astype(np.float64).sum(1) * weights).sum()),
            "weighted_labels": float((split["labels"] * weights).sum()),
            "rows": float(len(split["labels"]))}


def get_config(arg=None):
  c = digits_resnet20.get_config("quick")
  c.data.eval_batch_size = int(arg) if arg else 120
  c.evals = ml_collections.ConfigDict({
      "gather": {"type": "ordered_logit_stats", "split": c.data.eval_split},
      "eval": {"type": "method", "split": c.data.eval_split}})
  return c
