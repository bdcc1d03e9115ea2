"""DTDN vs source-only on the offline synthetic re-ID domains, in one command on a CPU.

The toy UDA check of DTDN (Dai et al., arXiv 2007.13264): procedural persons as 64x32 images seen
by 6 cameras, a labelled "source" domain and an unlabelled "target" domain with another style
(colour cast, brightness, contrast, blur, noise, background; `synthetic_reid`). A CPU-sized
DTDN network from scratch: basic blocks of width 16, stage sizes (1, 1, 2, 1) (two blocks in
stage 3 so that its last block carries the instance norm), a 128-d embedding, gate reduction 4.
Both stages train the same number of steps with Adam; the release's schedule is compressed: the
loss switch after epoch `switch` (the release's 12 of 40) and the memory momentum alpha * epoch
with alpha scaled so that the last epoch's momentum is the release's (0.39).
Report (`reid_report.json`): source_only_accuracy and dtdn_accuracy = target rank-1
(standard query / gallery protocol).
Command:
  python -m launch.main --config=configs/dtdn/quick.py --workdir=/tmp/dtdn_quick
Hardware: any CPU (2 cores); about 3.5 minutes of CPU time (user + sys).
Measured (seed 0, 14 epochs of 20 steps): source_only_accuracy 0.794, dtdn_accuracy 0.563 — the
paper's direction (DTDN > source-only) is NOT reached on this toy: after the switch the exemplar
memory term (about 70, weight 0.3) dominates the source terms (weight 0.35) and the source
classifier, which also sees mixed-in nuisance parts of other samples, stays far behind the
baseline's at the same budget.
Variants: `:small` (fewer persons and epochs, for the slow test).
"""
from __future__ import annotations

import ml_collections

from configs import common
from configs.dtdn import _stages

MODEL = dict(block="basic", stage_sizes=(1, 1, 2, 1), width=16)
SOURCE_AUGMENT = [("flip", {}), ("crop", {"padding": 3})]
TARGET_AUGMENT = [("flip", {}), ("crop", {"padding": 3})]


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, small=False, epochs=0, seed=0, knn=10)
  ids = 40 if args.small else 80
  epochs = args.epochs or (6 if args.small else 14)
  switch = epochs // 3
  kwargs = dict(num_ids=ids, images_per_id=8, num_test_ids=ids, query_per_id=2,
                gallery_per_id=4, image_size=(64, 32))
  source = dict(name="synthetic_reid", source_kwargs=dict(domain="source", **kwargs))
  target = dict(name="synthetic_reid", source_kwargs=dict(domain="target", **kwargs))
  return _stages.dtdn_stages(
      retrieval=True, source=source, target=target, num_classes=ids, num_target=ids * 8,
      model_kwargs=MODEL, epochs=epochs, batch_size=32,
      optim=dict(name="adam", learning_rate=1e-3, weight_decay=5e-4, schedule="multistep",
                 milestones=(epochs - 2,), gamma=0.1),
      dtdn_opts=dict(num_features=128, reduction=4, switch_epoch=switch, knn=args.knn,
                     alpha=0.39 / max(epochs - 1, 1)),
      source_augment=SOURCE_AUGMENT, target_augment=TARGET_AUGMENT, seed=args.seed)
