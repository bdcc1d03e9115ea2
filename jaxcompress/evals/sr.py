"""Super-resolution quality on full images: PSNR and SSIM on the MATLAB Y channel.

The protocol of EDSR and PAMS (arXiv 2011.04212, Tables 1-3): outputs on the uint8 grid, the
luminance of MATLAB's `rgb2ycbcr`, `scale` pixels shaved from every border
(`jaxcompress.metrics.image_quality`). Benchmark images differ in size, so each image is one
jitted call (one compilation per shape) and the scores are computed on the host.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import numpy as np

from jaxcompress import evals
from jaxcompress.data.imresize import imresize
from jaxcompress.metrics import image_quality


def evaluate_sr(predictors: Mapping[str, Callable[[np.ndarray], np.ndarray]], source: Any,
                scale: int, *, rgb_range: float = 255.0, max_images: int = -1,
                bicubic: bool = True, with_ssim: bool = True,
                table_path: str | None = None) -> dict[str, Any]:
  """Full-image evaluation with the paper protocol (MATLAB Y channel, shave = scale, uint8 grid).

  Args:
    predictors: {label: fn((1, h, w, 3) float32 LR in [0, rgb_range]) -> (1, H, W, 3) SR}.
    source: a source of {"lr", "hr"} uint8 examples (e.g. `sources.get("sr_benchmark", "Set5")`).
    scale: upscaling factor (the shave).
    rgb_range: value range of the inputs/outputs.
    max_images: evaluate only the first images (-1: all).
    bicubic: also score the MATLAB bicubic upscaling of the LR image (`imresize(lr, scale)`).
    with_ssim: compute SSIM as well (slower, NumPy).
    table_path: if given, a Markdown table (per image and mean) is written there.

  Returns:
    {"num_images": n, "<label>/psnr": mean, "<label>/ssim": mean, ..., "images": per-image rows}
    with label "bicubic" for the baseline.
  """
  n = len(source) if max_images is None or max_images < 0 else min(max_images, len(source))
  names = getattr(source, "names", None)
  rows = []
  for i in range(n):
    ex = source[i]
    lr, hr = np.asarray(ex["lr"]), np.asarray(ex["hr"])
    outputs = {k: np.asarray(fn(lr[None].astype(np.float32)))[0] for k, fn in predictors.items()}
    if bicubic:
      outputs["bicubic"] = imresize(lr, float(scale)).astype(np.float64) * (rgb_range / 255.0)
    row = {"image": names[i] if names is not None and i < len(names) else str(i)}
    for label, sr in outputs.items():
      h = hr[:sr.shape[0], :sr.shape[1]].astype(np.float64) * (rgb_range / 255.0)
      sr = sr[:h.shape[0], :h.shape[1]]
      row[f"{label}/psnr"] = image_quality.psnr(sr, h, scale, rgb_range)
      if with_ssim:
        row[f"{label}/ssim"] = image_quality.ssim(sr, h, scale, rgb_range)
    rows.append(row)
  keys = [k for k in rows[0] if k != "image"] if rows else []
  result: dict[str, Any] = {"num_images": n}
  result.update({k: float(np.mean([r[k] for r in rows])) for k in keys})
  result["images"] = rows
  if table_path:
    lines = ["| image | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {r['image']} | " + " | ".join(f"{r[k]:.4f}" for k in keys) + " |" for r in rows]
    lines.append("| **mean** | " + " | ".join(f"{result[k]:.4f}" for k in keys) + " |")
    with open(table_path, "w", encoding="utf-8") as f:
      f.write("\n".join(lines) + "\n")
  return result


class FullImageSR(evals.Evaluator):
  """PSNR (and SSIM) of `method.sr_predictors(state)` on every full image of each split.

  Config: `scale` (default `config.model.kwargs.scale`), `rgb_range` (255), `bicubic` (also
  score MATLAB bicubic, True), `ssim` (True), `max_images` (-1: all). Metrics
  "<split>/<predictor>/psnr" and ".../ssim".
  """

  runs_on_host = True
  combine: dict[str, str] = {}

  def batch_outputs(self, state: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    raise NotImplementedError("FullImageSR runs on the host, image by image")

  def finalize(self, outputs: Mapping[str, evals.Outputs]) -> dict[str, Any]:
    raise NotImplementedError("FullImageSR runs on the host, image by image")

  def evaluate_host(self, state: Any, sources: Mapping[str, Any]) -> dict[str, Any]:
    """Scores every split's full images; returns the means."""
    kwargs = dict(self.method.config.model.get("kwargs", {}) or {})
    scale = int(self.cfg.get("scale", kwargs.get("scale", 4)))
    out = {}
    for split, source in sources.items():
      result = evaluate_sr(self.method.sr_predictors(state), source, scale,
                           rgb_range=float(self.cfg.get("rgb_range", 255.0)),
                           max_images=self.cfg.get("max_images", -1),
                           bicubic=self.cfg.get("bicubic", True),
                           with_ssim=self.cfg.get("ssim", True))
      out.update({f"{split}/{k}": v for k, v in result.items() if isinstance(v, float)})
    return out
