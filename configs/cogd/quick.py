"""CoGD convolutional sparse coding on CPU: FFCSC with and without the released CoGD rule.

Cogradient descent (Zhuo, Zhang et al., CVPR 2020, arXiv 2006.09142; official MATLAB code
bczhangbczhang/CoGD): the FFCSC solver (Fourier-domain ADMM, 100 filters of 11 x 11) on 10 of
scikit-image's photographs prepared as the release prepares its sets (grey, local contrast
normalisation, zero mean, padded to 110 x 110), once without a correction ("none"), once with
the released rule as shipped ("matlab_heuristic", uint8 saturation on) and once with the
released rule without its uint8 saturation ("cogd_unsaturated"). One report stage runs all
three (`jaxcompress/sparse_coding/stages.py`) and writes `cogd_report.json` with PSNR_bt,
SSIM_bt and the final objective of each.
Command:
  python -m launch.main --config=configs/cogd/quick.py --workdir=/tmp/cogd_quick
Hardware: any CPU (2 cores), float64.
Expected: see BENCHMARKS.md (the shipped rule changes one filter entry per iteration, so it
matches FFCSC; the unsaturated rule moves the result).
Variants: `:inpainting` (75 % of the pixels kept), `:iters=N` (outer iterations, default 10),
`:small` (4 images of 64 x 64, 3 iterations: the slow test), `:quick` (2 images of 32 x 32,
8 filters of 5 x 5, 2 iterations, the first two hooks: seconds, a smoke run).
"""
from __future__ import annotations

import ml_collections

from configs import common

HOOKS = dict(none=dict(correction="none"), matlab_heuristic=dict(correction="matlab_heuristic"),
             matlab_heuristic_unsaturated=dict(correction="matlab_heuristic", saturate=False))


def csc_stage(task: str, iters: int, small: bool, quick: bool = False
              ) -> ml_collections.ConfigDict:
  """One report stage: the three hooks on one task over the offline photographs."""
  csc = dict(task=task, images="skimage", num_images=10, image_size=100, num_iters=iters)
  if small:
    csc.update(num_images=4, image_size=64, num_iters=3, num_filters=24)
  hooks = HOOKS
  if quick:  # seconds: a smoke run of the whole path, too short to learn filters
    csc.update(num_images=2, image_size=32, num_iters=2, num_filters=8, filter_size=5,
               num_iters_d=3, num_iters_z=3)
    hooks = {k: HOOKS[k] for k in ("none", "matlab_heuristic")}
  return ml_collections.ConfigDict(dict(report="cogd_csc", csc=csc, hooks=hooks))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, inpainting=False, iters=10, small=False, quick=False)
  task = "inpainting" if args.inpainting else "reconstruction"
  c = ml_collections.ConfigDict()
  c.stage_order = ("csc",)
  c.stages = ml_collections.ConfigDict({"csc": csc_stage(task, args.iters, args.small,
                                                         args.quick)})
  return c
