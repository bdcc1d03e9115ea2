"""CoGD convolutional sparse coding, both tasks, one command: the paper's table on CPU.

Cogradient descent (Zhuo, Zhang et al., CVPR 2020, arXiv 2006.09142, Table 1; official MATLAB
code bczhangbczhang/CoGD): FFCSC (Fourier-domain ADMM, 100 filters of 11 x 11) without a
correction (`none`), with the released rule as shipped (`matlab_heuristic`, uint8 saturation on)
and with that rule without the saturation (`matlab_heuristic_unsaturated`), for reconstruction
and for inpainting (75 % of the pixels kept), on 10 of scikit-image's photographs prepared as
the release prepares its sets. Writes `cogd_table.json` in the workdir as
`{task: {hook: {"psnr": float, "ssim": float}}}` (PSNR_bt / SSIM_bt), and per task
`<task>/cogd_report.json` with the final objectives and times.
Command:
  python -m launch.main --config=configs/cogd/csc_quick.py --workdir=/tmp/cogd_csc_quick
Hardware: any CPU (2 cores), float64.
Expected: see BENCHMARKS.md ("CoGD sparse coding").
Variants: `:iters=N` (outer iterations, default 10), `:small` (4 images of 64 x 64, 3 iterations),
`:quick` (2 images of 32 x 32, 8 filters of 5 x 5, 2 iterations, hooks `none` and
`matlab_heuristic`: seconds, a smoke run).
"""
from __future__ import annotations

import ml_collections

from configs import common
from configs.cogd import quick

TASKS = ("reconstruction", "inpainting")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, iters=10, small=False, quick=False)
  c = ml_collections.ConfigDict()
  c.stage_order = TASKS
  c.stages = ml_collections.ConfigDict(
      {task: quick.csc_stage(task, args.iters, args.small, args.quick) for task in TASKS})
  return c
