"""The CoGD sparse-coding experiment as an engine stage (`report="cogd_csc"`).

Convolutional sparse coding has no gradient-step training loop: the FFCSC solver (and its CoGD
correction) is one jitted ADMM program (`sparse_coding.ffcsc.learn_filters`), so it runs as a
report stage of the staged engine (`jaxcompress.train.stages`), one command like every paper:
each entry of `config.hooks` is one `run_csc` experiment with `config.csc` as the shared keys.
Each stage writes `cogd_report.json` (PSNR_bt / SSIM_bt / final objective / time per hook), and
per hook `<hook>_history.json` (objective, PSNR, roll-backs, filter and code changes per
iteration) and `<hook>_result.npz` (learned filters, reconstructions) in its own directory and adds its rows to `cogd_table.json` in the run's workdir, the paper's table as
`{task: {hook: {"psnr": float, "ssim": float}}}`, so a run with one stage per task (reconstruction,
inpainting) fills the whole table.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import ml_collections
import numpy as np

from jaxcompress.sparse_coding.run import run_csc


def cogd_csc(config: ml_collections.ConfigDict, inputs: Mapping[str, str], stage_dir: str,
             root: str) -> dict[str, Any]:
  """Runs `run_csc` once per hook; writes `cogd_report.json` in `stage_dir` and adds the rows to
  `root/cogd_table.json`.

  Args:
    config: the stage; `csc` holds the shared `run_csc` keys (task, images, iterations...),
      `hooks` maps a report label (the table's hook name) to its own keys (e.g.
      {"none": {"correction": "none"}, "matlab_heuristic": {"correction": "matlab_heuristic"}}).
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
      json.dump({k: out[k] for k in ("objective", "psnr_history", "rolled_back",
                                     "filter_change", "code_change")}, f)
    np.savez(os.path.join(stage_dir, f"{label}_result.npz"), filters=out["filters"],
             reconstruction=out["reconstruction"])
  _write_json(os.path.join(stage_dir, "cogd_report.json"), report)
  table_path = os.path.join(root, "cogd_table.json")
  table: dict[str, Any] = {}
  if os.path.exists(table_path):
    with open(table_path, encoding="utf-8") as f:
      table = json.load(f)
  table.setdefault(report["task"], {}).update({
      label: {"psnr": report[f"{label}/psnr"], "ssim": report[f"{label}/ssim"]}
      for label in config.hooks})
  _write_json(table_path, table)
  print(format_table(table), flush=True)
  return report


def format_table(table: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
  """`cogd_table.json` as the paper's table: one row per task, PSNR_bt / SSIM_bt per hook."""
  hooks = sorted({h for rows in table.values() for h in rows},
                 key=lambda h: (h != "none", h))
  lines = ["| task | " + " | ".join(hooks) + " |", "|---" * (len(hooks) + 1) + "|"]
  for task, rows in table.items():
    cells = [f"{rows[h]['psnr']:.2f} / {rows[h]['ssim']:.4f}" if h in rows else "-"
             for h in hooks]
    lines.append(f"| {task} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _write_json(path: str, value: Any) -> None:
  # Written beside and renamed into place, so an interrupted run never leaves half a file.
  tmp = f"{path}.tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2)
  os.replace(tmp, path)
