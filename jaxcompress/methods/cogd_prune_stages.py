"""CoGD pruning stages without training: cut the searched network to its FLOPs target, report.

After the `cogd_prune` search (`jaxcompress.methods.cogd_prune`; CoGD, arXiv 2006.09142), the
`cogd_materialize` report stage ranks every channel of the gated layers by the magnitude of its
soft mask, removes the smallest until the network's MACs (counted by `jaxcompress.summary` on the
configured input) are at most `flops_target` of the unpruned network's (channels whose mask the
soft threshold set to 0 are always removed), folds the kept masks into the following batch norm
(scale and offset times m, so the cut network computes what the soft-masked one did on the kept
channels) and cuts the network with `jaxcompress.prune.materialize`: a really smaller network,
written for `cogd_finetune`. `cogd_prune_report` then writes `cogd_prune_report.json` with the
accuracy of the unpruned network, of the masked network after the search and of the pruned one
after fine-tuning, next to the MACs and parameters of both networks.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcompress import models, prune
from jaxcompress.errors import ConfigError
from jaxcompress.methods import cogd_prune
from jaxcompress.prune import student as student_lib
from jaxcompress.summary import summary
from jaxcompress.train import checkpoint as checkpoint_lib
from jaxcompress.train import stages as stages_lib

REPORT_FILE = "cogd_prune_report.json"


def _macs(model: Any, input_shape: tuple[int, ...]) -> int:
  x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  return int(summary(model, x, train=False).total_macs)


def _count(tree: Any) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


def select_channels(model: Any, scores: Mapping[str, np.ndarray], input_shape: tuple[int, ...],
                    target_macs: float) -> dict[str, np.ndarray]:
  """Keep-sets of the gates: the fewest smallest-score channels removed to reach `target_macs`.

  Args:
    model: the gated model (`prune_spec`, `layer_widths`, `clone(widths=...)`).
    scores: gate path -> (C,) non-negative channel scores (|m|); a 0 score is always removed.
    input_shape: (H, W, C) of one example, for the MAC count.
    target_macs: MACs the cut network may have at most.

  Returns:
    gate path -> boolean keep mask. When even removing every scored channel misses the target,
    every scored channel is removed (the report shows the MACs reached).
  """
  names = sorted(scores)
  flat = np.concatenate([np.asarray(scores[g], np.float64) for g in names])
  order = np.argsort(flat, kind="stable")
  offsets = np.cumsum([0] + [len(scores[g]) for g in names])

  def keep_after(k: int) -> dict[str, np.ndarray]:
    keep = np.ones(len(flat), bool)
    keep[order[:k]] = False
    keep &= flat > 0
    return {g: keep[offsets[i]:offsets[i + 1]] for i, g in enumerate(names)}

  def macs(k: int) -> int:
    binary = {g: np.where(v, 1.0, -1.0) for g, v in keep_after(k).items()}
    widths = prune.pruned_widths(model, binary)
    return _macs(model.clone(widths=widths, layers=model.layers.replace(gate=None)), input_shape)

  lo, hi = 0, len(flat)  # removing hi channels always meets the target or nothing does
  while lo < hi:  # MACs fall as channels are removed: the smallest k that meets the target
    mid = (lo + hi) // 2
    if macs(mid) <= target_macs:
      hi = mid
    else:
      lo = mid + 1
  return keep_after(lo)


def _fold(params: dict, gates: Mapping[str, tuple[str, ...]], masks: Mapping[str, np.ndarray]
          ) -> dict:
  """Multiplies each gate's norm scale and offset by its mask (y = BN(x) * m)."""
  params = jax.tree.map(np.asarray, params)
  for gate, modules in gates.items():
    m = np.asarray(masks[gate], np.float32)
    for path in modules[1:]:
      node = params
      for part in path.split("/"):
        node = node[part]
      for leaf in ("scale", "bias"):
        if leaf in node:
          node[leaf] = node[leaf] * m
  return params


def cogd_materialize(config: ml_collections.ConfigDict, inputs: Mapping[str, str],
                     stage_dir: str, root: str) -> dict[str, Any]:
  """Cuts the searched network to `config.cogd.flops_target` of the unpruned MACs.

  Args:
    config: the search stage's config (`method: cogd_prune`, its model and `cogd` block) with
      `cogd.input_shape`, the (H, W, C) of one example.
    inputs: {"search": the search stage's workdir}.
    stage_dir: where `student.json` and `student.msgpack` go (`cogd_finetune` reads them).
    root: unused.

  Returns:
    {"unpruned_macs", "pruned_macs", "target_macs", "pruned_params", "removed_channels",
     "zero_masks", ...}, also written to `student.json` with the widths.
  """
  del root
  if "search" not in inputs:
    raise ConfigError("The cogd_materialize stage needs inputs=('search',).")
  shape = tuple((config.get("cogd", {}) or {}).get("input_shape", ()) or ())
  if len(shape) != 3:
    raise ConfigError("cogd_materialize counts MACs on one example: set config.cogd.input_shape "
                      "to its (H, W, C), e.g. (8, 8, 1) for digits.")
  method = cogd_prune.CoGDPrune(config)
  opts = method.cogd
  run = checkpoint_lib.load_run_state(inputs["search"])
  params, model_state = dict(run["params"]), dict(run.get("model_state", {}) or {})
  masks = {g: np.asarray(prune.mask_params(params)[g]) for g in method.gates}
  plain = models.build(config.model.name, num_classes=config.model.num_classes,
                       **dict(config.model.get("kwargs", {})))
  unpruned = _macs(plain, shape)
  keep = select_channels(method.model, {g: np.abs(m) for g, m in masks.items()}, shape,
                         float(opts["flops_target"]) * unpruned)
  folded = _fold(flax.core.unfreeze(params), method.gates, masks)
  binary = {g: np.where(k, 1.0, -1.0) for g, k in keep.items()}
  example = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
  small, variables = prune.materialize(method.model, {"params": folded, **model_state}, binary,
                                       example_input=example)
  variables = dict(variables)
  small_params = variables.pop("params")
  info = {"widths": {k: int(v) for k, v in dict(small.widths).items()},
          "unpruned_macs": unpruned,
          "pruned_macs": _macs(small, shape),
          "target_macs": float(opts["flops_target"]) * unpruned,
          "flops_target": float(opts["flops_target"]),
          "unpruned_params": _count(plain.init(jax.random.key(0), jnp.zeros((1, *shape)),
                                               train=False)["params"]),
          "pruned_params": _count(small_params),
          "removed_channels": int(sum((~k).sum() for k in keep.values())),
          "gated_channels": int(sum(k.size for k in keep.values())),
          "zero_masks": int(sum((m == 0).sum() for m in masks.values()))}
  student_lib.write_student(stage_dir, info,
                            {"params": small_params, "model_state": variables})
  return {k: v for k, v in info.items() if k != "widths"}


def cogd_prune_report(config: ml_collections.ConfigDict, inputs: Mapping[str, str],
                      stage_dir: str, root: str) -> dict[str, Any]:
  """`cogd_prune_report.json` in the run's workdir: accuracy and size, unpruned and pruned.

  Args:
    config: `cogd.student` is the materialize stage's student.json.
    inputs: stage label -> workdir of a training stage (e.g. "unpruned", "search", "pruned");
      each label's last evaluated accuracy is reported as "<label>/accuracy".
    stage_dir: unused.
    root: the staged run's workdir; the report goes there.

  Returns:
    The report.
  """
  del stage_dir
  student = cogd_prune.load_student((config.get("cogd", {}) or {}).get("student", ""))
  report: dict[str, Any] = {k: v for k, v in student.items()
                            if k not in ("widths", "variables_file")}
  report["macs_ratio"] = student["pruned_macs"] / max(student["unpruned_macs"], 1)
  report["reached_target"] = student["pruned_macs"] <= student["target_macs"]
  for label, workdir in inputs.items():
    row = stages_lib.last_eval(workdir)
    if "accuracy" in row:
      report[f"{label}/accuracy"] = float(row["accuracy"])
  tmp = os.path.join(root, REPORT_FILE + ".tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)
  os.replace(tmp, os.path.join(root, REPORT_FILE))
  return report
