"""The CoGD sparse-coding experiment as an engine stage (`report="cogd_csc"`).

Convolutional sparse coding has no gradient-step training loop: the FFCSC solver (and its CoGD
correction) is one jitted ADMM program (`sparse_coding.ffcsc.learn_filters`), so it runs as a
report stage of the staged engine (`jaxcompress.train.stages`), one command like every paper:
each entry of `config.hooks` is one `run_csc` experiment with `config.csc` as the shared keys,
and `cogd_report.json` in the run's workdir holds PSNR_bt / SSIM_bt / final objective per hook.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import ml_collections

from jaxcompress.sparse_coding.run import run_csc


def cogd_csc(config: ml_collections.ConfigDict, inputs: Mapping[str, str], stage_dir: str,
             root: str) -> dict[str, Any]:
  """Runs `run_csc` once per hook and writes `cogd_report.json` in `root`.

  Args:
    config: the stage; `csc` holds the shared `run_csc` keys (task, images, iterations...),
      `hooks` maps a report label to its own keys (e.g. {"ffcsc": {"correction": "none"},
      "cogd": {"correction": "matlab_heuristic"}}).
    inputs: unused (the stage reads no earlier stage).
    stage_dir: the stage's workdir (per-hook histories go there).
    root: the staged run's workdir; the report goes there.

  Returns:
    {"<label>/psnr", "<label>/ssim", "<label>/objective", "<label>/wall_time_s", ...}.
  """
  del inputs
  shared = dict(config.get("csc", {}) or {})
  report: dict[str, Any] = {"task": shared.get("task", "reconstruction")}
  for label, keys in dict(config.hooks).items():
    out = run_csc({**shared, **dict(keys)})
    report.update({f"{label}/psnr": out["psnr"], f"{label}/ssim": out["ssim"],
                   f"{label}/objective": out["objective"][-1],
                   f"{label}/wall_time_s": out["wall_time_s"]})
    with open(os.path.join(stage_dir, f"{label}_history.json"), "w", encoding="utf-8") as f:
      json.dump({k: out[k] for k in ("objective", "psnr_history", "rolled_back")}, f)
  with open(os.path.join(root, "cogd_report.json"), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)
  return report
