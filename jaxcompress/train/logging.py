"""Run outputs in the workdir (the contract every run keeps) and the progress display.

`metrics.jsonl` holds one JSON object per logged step: {"step": int, "split": "train"|"eval",
"<metric>": float, ...}; TensorBoard events go to the same workdir through tensorboardX (no
TensorFlow). On a terminal a tqdm bar shows step, rate, ETA and the latest metrics; otherwise
plain log lines. Only process 0 writes.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Mapping

import jax


def _json_default(value: Any) -> Any:
  try:
    return float(value)
  except (TypeError, ValueError):
    return str(value)


class MetricWriter:
  """Writes metrics.jsonl + TensorBoard events and drives the progress display.

  Args:
    workdir: output directory.
    total_steps: length of the run (for rate and ETA).
    initial_step: step the run starts from (resumed runs).
    enabled: False on processes other than 0.
    progress: "auto" (bar on a TTY, lines otherwise), "bar", "lines" or "none".
  """

  def __init__(self, workdir: str, total_steps: int, initial_step: int = 0,
               enabled: bool = True, progress: str = "auto"):
    self.enabled = enabled
    self.total_steps = total_steps
    self._jsonl = None
    self._tb = None
    self._bar = None
    self._t0 = time.time()
    self._step0 = initial_step
    if not enabled:
      return
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._tb = SummaryWriter(logdir=workdir, flush_secs=30)
    if progress == "auto":
      progress = "bar" if sys.stderr.isatty() else "lines"
    self._mode = progress
    if progress == "bar":
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      self._bar = tqdm(total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True)

  def write(self, step: int, split: str, metrics: Mapping[str, Any]) -> None:
    """Appends one line to metrics.jsonl, scalars to TensorBoard, and updates the display."""
    if not self.enabled:
      return
    values = {k: float(jax.device_get(v)) for k, v in metrics.items()}
    record = {"step": int(step), "split": split, **values}
    self._jsonl.write(json.dumps(record, default=_json_default) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in values.items():
        if math.isfinite(v):
          self._tb.add_scalar(f"{split}/{k}", v, step)
    text = " ".join(f"{k}={v:.4g}" for k, v in values.items())
    if self._bar is not None:
      self._bar.set_postfix_str(f"{split}: {text}", refresh=True)
      if split == "eval":
        self._bar.write(f"step {step} eval: {text}")
    elif self._mode == "lines":
      elapsed = time.time() - self._t0
      done = max(step - self._step0, 1)
      rate = done / max(elapsed, 1e-9)
      eta = (self.total_steps - step) / rate if rate > 0 else float("inf")
      print(f"[{split}] step {step}/{self.total_steps} ({rate:.2f} steps/s, ETA {eta:.0f}s) "
            f"{text}", flush=True)

  def advance(self, step: int) -> None:
    """Moves the progress bar to `step`."""
    if self._bar is not None:
      self._bar.update(step - self._bar.n)

  def log(self, message: str) -> None:
    """A plain message (through the bar when one is shown)."""
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.write(message)
    else:
      print(message, flush=True)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
    if self._tb is not None:
      self._tb.close()
    if self._jsonl is not None:
      self._jsonl.close()
