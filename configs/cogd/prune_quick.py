"""CoGD channel pruning of a ResNet-20 on scikit-learn's digits, in one command on a CPU.

Cogradient descent (Zhuo, Zhang et al., CVPR 2020, arXiv 2006.09142) applied to soft channel masks
(`jaxcompress.methods.cogd_prune`; the official pruning code was never released, so the mask
placement, the loss and the constants are this library's, documented there). Stages:

1. `unpruned`: the float ResNet-20 (the quickstart recipe);
2. `search`: from it, CoGD on soft masks after every block's inner batch norm (x-step with
   soft threshold, A-step, the released correction of A);
3. `cut`: channels ranked by |mask|, removed until the MACs are at most `flops_target` (0.5)
   of the unpruned network's, masks folded into the batch norms, `prune.materialize`;
4. `finetune`: the cut network trained on;
5. `report`: `cogd_prune_report.json` with `unpruned/accuracy`, `search/accuracy`,
   `finetune/accuracy`, `unpruned_macs`, `pruned_macs`, `target_macs`, `macs_ratio`,
   `reached_target` and both parameter counts.
Command:
  python -m launch.main --config=configs/cogd/prune_quick.py --workdir=/tmp/cogd_prune_quick
Hardware: any CPU (2 cores).
Expected: see BENCHMARKS.md ("CoGD channel pruning").
Variants: `:variant=none` (plain alternation, no correction), `:target=F` (FLOPs fraction kept),
`:epochs=N` (epochs of each training stage, default 20), `:l1=F` (the masks' l1 weight, 1e-3), `:small` (2 epochs each: the slow test).
"""
from __future__ import annotations

import ml_collections

from configs import common
from configs.baseline import digits_resnet20


def _stage(method: str, epochs: int) -> ml_collections.ConfigDict:
  c = digits_resnet20.get_config()
  c.method = method
  c.num_epochs = epochs
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, variant="matlab_heuristic", target=0.5, epochs=20, small=False,
                          quick=False, l1=1e-3)
  epochs = 2 if args.small else args.epochs
  cogd = ml_collections.ConfigDict(dict(variant=args.variant, flops_target=args.target,
                                        input_shape=(8, 8, 1), lambda_l1=args.l1, mask_lr=0.05))
  unpruned = _stage("classification", epochs)
  search = _stage("cogd_prune", epochs)
  search.cogd = cogd
  search.optim.learning_rate = 0.01  # from a trained network
  search.init_from = ml_collections.ConfigDict(dict(
      stage="unpruned", include=".*", exclude="", rename=(),
      collections=("params", "batch_stats")))
  cut = _stage("cogd_prune", epochs)
  cut.cogd = cogd
  cut.report = "cogd_materialize"
  cut.inputs = ("search",)
  finetune = _stage("cogd_finetune", epochs)
  finetune.optim.learning_rate = 0.01
  finetune.cogd = ml_collections.ConfigDict(dict(student=""))
  finetune.paths_from = (("cogd.student", "cut", "student.json"),)
  report = ml_collections.ConfigDict(dict(
      report="cogd_prune_report", inputs=("unpruned", "search", "finetune"),
      cogd=dict(student=""), paths_from=(("cogd.student", "cut", "student.json"),)))
  c = ml_collections.ConfigDict()
  c.stage_order = ("unpruned", "search", "cut", "finetune", "report")
  c.stages = ml_collections.ConfigDict(dict(unpruned=unpruned, search=search, cut=cut,
                                            finetune=finetune, report=report))
  return c
