"""CoGD paper rows: reconstruction and inpainting on the fruit and city sets (Table 1).

Cogradient descent (Zhuo, Zhang et al., CVPR 2020, arXiv 2006.09142; official MATLAB code
bczhangbczhang/CoGD, whose README lists FFCSC -> CoGD PSNR / SSIM: fruit reconstruction 26.70 /
0.9602 -> 27.60 / 0.9635, city 26.98 / 0.9618 -> 28.10 / 0.9642; inpainting fruit 23.65 / 0.9000
-> 25.31 / 0.9211, city 24.31 / 0.9199 -> 25.58 / 0.9314). FFCSC with 100 filters of 11 x 11,
20 outer iterations as released, hooks `none`, `matlab_heuristic` (uint8 saturation on, as
shipped) and `matlab_heuristic_unsaturated`; both tasks in one command, `cogd_table.json` in the
workdir in the paper's format.
Data: the `fruit_100_100` or `city_100_100` folder of the official archive
(`CSC/datasets/Images/`), 10 images of 100 x 100, passed as `:set=fruit` / `:set=city` with the
folder given by `--config.stages.reconstruction.csc.images=DIR
--config.stages.inpainting.csc.images=DIR`.
Command:
  python -m launch.main --config=configs/cogd/csc_paper.py:set=fruit --workdir=/tmp/cogd_fruit \
      --config.stages.reconstruction.csc.images=CoGD/CSC/datasets/Images/fruit_100_100 \
      --config.stages.inpainting.csc.images=CoGD/CSC/datasets/Images/fruit_100_100
Hardware: any CPU, float64 (about two minutes per hook and task on 2 cores).
Expected: the README rows above; measured values in BENCHMARKS.md ("CoGD sparse coding").
"""
from __future__ import annotations

import ml_collections

from configs import common
from configs.cogd import quick

SETS = ("fruit", "city")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, set="fruit", quick=False)
  if args.set not in SETS:
    raise ValueError(f"configs/cogd/csc_paper.py takes :set= one of {SETS}, got {args.set!r}.")
  c = ml_collections.ConfigDict()
  c.stage_order = ("reconstruction", "inpainting")
  stages = {}
  for task in c.stage_order:
    stage = quick.csc_stage(task, iters=2 if args.quick else 20, small=False)
    stage.csc.images = f"{args.set}_100_100"  # a local folder: override with the archive's path
    stages[task] = stage
  c.stages = ml_collections.ConfigDict(stages)
  return c
