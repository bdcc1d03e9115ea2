"""Adversarial robustness table: accuracy under clean, FGSM, MI-FGSM and PGD-k inputs.

ABanditNAS ("Anti-Bandit Neural Architecture Search for Model Defense", ECCV 2020,
arXiv:2008.00698, Table 2): white-box L-inf attacks with the config's epsilon and step size.
The method supplies `attack_metrics(state, batch, attacks)` (sums over valid examples).
"""
from __future__ import annotations

from typing import Any, Mapping

import jax

from jaxcompress import evals

ROBUST_TABLE = ("clean", "fgsm", "mi_fgsm", "pgd7", "pgd20")


class RobustAccuracy(evals.Evaluator):
  """`<attack>_accuracy` for each of `attacks` (default: the paper's table) on one split."""

  combine: dict[str, str] = {}  # every output is a sum

  def __init__(self, *args: Any, **kwargs: Any):
    super().__init__(*args, **kwargs)
    self.attacks = tuple(self.cfg.get("attacks", ROBUST_TABLE))

  def batch_outputs(self, state: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return self.method.attack_metrics(state, batch, self.attacks)

  def finalize(self, outputs: Mapping[str, evals.Outputs]) -> dict[str, Any]:
    split = outputs[self.splits[0]]
    count = max(float(split["count"]), 1.0)
    return {f"{a}_accuracy": float(split[f"{a}_accuracy"]) / count for a in self.attacks}
