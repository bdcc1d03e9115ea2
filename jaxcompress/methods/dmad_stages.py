"""DMAD stages without training: materialize the searched generators, and the final report.

DMAD (Li et al., arXiv 2011.08382) runs teacher -> search -> prune -> fine-tune (SJLeo/DMAD
`train.py`, then `prune.py --finetune`). Between search and fine-tune, `dmad_materialize` cuts
each searched generator down with `jaxcompress.prune.materialize` (channels with m > 0, the
residual-group rule, empty blocks removed): a really smaller network, not a masked float one. At
the end `dmad_report` compares teacher, distilled and undistilled students: MACs and parameters of
the generators (GAN convention, one 1x3xSxS input, S = `dmad.macs_input_size`, 256, as thop counts
them in the official code) and the quality each stage's last evaluation measured.

Both are report stages (`config.stages.<name> = dict(report=..., inputs=...)`,
`jaxcompress.train.stages`).
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np

from jaxcompress import methods as methods_lib
from jaxcompress import prune
from jaxcompress.errors import ConfigError
from jaxcompress.gan.base import build_network
from jaxcompress.methods import dmad_finetune
from jaxcompress.methods.dmad_search import generator_macs
from jaxcompress.prune import student as student_lib
from jaxcompress.train import checkpoint as checkpoint_lib
from jaxcompress.train import stages as stages_lib


def _count(tree: Any) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


def dmad_materialize(config: ml_collections.ConfigDict, inputs: Mapping[str, str],
                     stage_dir: str, root: str) -> dict[str, Any]:
  """Cuts the searched generators down to really smaller ones (a report stage).

  Args:
    config: the search stage's config (its `method` and `model` rebuild the gated generators).
    inputs: {"search": the search stage's workdir}.
    stage_dir: where `student.json` and `student.msgpack` are written (the fine-tune stage
      reads them through `paths_from`).
    root: the staged run's workdir (unused).

  Returns:
    {"<G>/macs", "<G>/params"} of each materialized generator.
  """
  del root
  if "search" not in inputs:
    raise ConfigError("The dmad_materialize stage needs inputs=('search',).")
  run = checkpoint_lib.load_run_state(inputs["search"])
  method = methods_lib.get(config.method)(config)
  size = int((config.get("dmad", {}) or {}).get("macs_input_size", 256))
  threshold = float((config.get("dmad", {}) or {}).get("threshold", 0))
  params, model_state = dict(run["params"]), dict(run.get("model_state", {}))
  widths, summary = {}, {}
  for g in method.GENERATORS:
    own = {k: v for k, v in dict(model_state.get(g, {})).items()
           if k != prune.BOUND_COLLECTION}
    masks = prune.mask_params(params[g])
    small, variables = prune.materialize(method.nets[g], {"params": params[g], **own}, masks,
                                         threshold=threshold)
    variables = dict(variables)
    params[g] = variables.pop("params")
    model_state[g] = variables
    widths[g] = dict(small.widths)
    summary[f"{g}/macs"] = generator_macs(small, size, 3)
    summary[f"{g}/params"] = _count(params[g])
  student_lib.write_student(stage_dir, {"widths": widths, **summary},
                            {"params": params, "model_state": model_state})
  return summary


def dmad_report(config: ml_collections.ConfigDict, inputs: Mapping[str, str], stage_dir: str,
                root: str) -> dict[str, Any]:
  """`dmad_report.json` in the run's workdir: sizes and quality of teacher and students.

  Args:
    config: a config whose `model.generator` is the full-size generator; `dmad.report_metric`
      names the eval metric to compare (e.g. "psnr" for Pix2Pix, "psnr_B_ref" or "fid" for
      CycleGAN) and `dmad.student` the materialize stage's student.json.
    inputs: {"teacher", "distilled", "undistilled"} -> workdirs (the last two optional).
    stage_dir: the report stage's workdir (unused).
    root: the staged run's workdir; the report goes there.

  Returns:
    The report: teacher_macs, student_macs, teacher_params, student_params (first generator),
    and "<label>/<metric>" for every input stage with that metric in its last evaluation.
  """
  del stage_dir
  d = config.get("dmad", None) or ml_collections.ConfigDict()
  size = int(d.get("macs_input_size", 256))
  student = dmad_finetune.load_student(d.get("student", ""))
  g = sorted(student["widths"])[0]
  teacher = build_network(config.model.generator)
  student_net = build_network(config.model.generator, widths=student["widths"][g])
  teacher_params = _count(checkpoint_lib.load_run_state(inputs["teacher"])["params"][g])
  report: dict[str, Any] = {
      "generator": g,
      "teacher_macs": generator_macs(teacher, size, 3),
      "student_macs": generator_macs(student_net, size, 3),
      "teacher_params": teacher_params,
      "student_params": int(student[f"{g}/params"]),
      "macs_input": [1, 3, size, size],
  }
  report["macs_reduction"] = report["teacher_macs"] / max(report["student_macs"], 1)
  report["params_reduction"] = report["teacher_params"] / max(report["student_params"], 1)
  metric = d.get("report_metric", "")
  report["metric"] = metric
  for label, workdir in inputs.items():
    row = stages_lib.last_eval(workdir)
    for key, value in row.items():
      # The last evaluation's value (never a "best_" one), plain or from a named evaluator.
      if metric and not key.startswith("best_") and key.split("/")[-1] == metric:
        report[f"{label}/{metric}"] = float(value)
  with open(os.path.join(root, "dmad_report.json"), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)
  return {k: v for k, v in report.items() if isinstance(v, (int, float))}
