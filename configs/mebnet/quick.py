"""MEB-Net source-only vs adapted on the offline synthetic re-ID domains, in one command on a CPU.

The toy UDA check of MEB-Net (Zhai et al., ECCV 2020, arXiv 2007.01546): procedural persons as
64x32 images seen by 6 cameras, a labelled "source" domain and an unlabelled "target" domain with
another style (colour cast, brightness, contrast, blur, noise, background; `synthetic_reid`).
Three heterogeneous CPU-sized experts, trained from scratch (no ImageNet weights):
  * resnet: the re-ID ResNet (no stem ReLU, last stride 1) with basic blocks, one per stage,
    width 32;
  * densenet: DenseNet-BC with growth 16, blocks (2, 4, 6, 4), 32 stem channels;
  * mobilenet: MobileNetV2 at width 0.5 with one inverted residual per stage;
each with a 256-wide embedding before the BN neck (the release's `--features`), so the three
experts' features can be averaged. Stages (configs/mebnet/_stages.py): source pretraining of each
expert (its final target evaluation is the source-only result), brainstorming on the target with
k = 100 clusters (the true number of target persons), the report.
Command:
  python -m launch.main --config=configs/mebnet/quick.py --workdir=/tmp/mebnet_quick
Hardware: any CPU (2 cores).
Expected: adapted_map > source_only_map in reid_report.json (see BENCHMARKS.md for the values).
Variants: `:small` (fewer persons and steps, for the slow test), `:quick` (a few steps of every
stage with narrower experts, for the tests and colab smoke runs; too few to adapt anything).
"""
from __future__ import annotations

import ml_collections

from configs import common
from configs.mebnet import _stages

HEAD = dict(num_features=256)
MOBILENET_SETTING = ((1, 16, 1, 1), (6, 24, 1, 2), (6, 32, 1, 2), (6, 64, 1, 2), (6, 96, 1, 1),
                     (6, 160, 1, 2), (6, 320, 1, 1))
EXPERTS = {
    "resnet": dict(name="reid_resnet", kwargs=dict(block="basic", stage_sizes=(1, 1, 1, 1),
                                                   width=32, last_stride=1), head=HEAD),
    "densenet": dict(name="densenet121", kwargs=dict(growth_rate=16, block_config=(2, 4, 6, 4),
                                                     num_init_features=32), head=HEAD),
    "mobilenet": dict(name="mobilenet_v2", kwargs=dict(width_mult=0.5, setting=MOBILENET_SETTING),
                      head=HEAD),
}
# Random erasing fills with the ImageNet mean in normalised units, as the release's erasing after
# `Normalize`; on raw pixels that is mean + mean * std (augment.random_erasing).
ERASE_FILL = tuple(m + m * s for m, s in zip(common.IMAGENET_MEAN, common.IMAGENET_STD))
PRETRAIN_AUGMENT = [("flip", {}), ("crop", {"padding": 3})]
ADAPT_AUGMENT = PRETRAIN_AUGMENT + [("random_erasing", {"probability": 0.5,
                                                        "value": ERASE_FILL})]


def _narrow(experts: dict[str, dict]) -> dict[str, dict]:
  """The experts at a fraction of their width (`:quick`): compile and run in seconds."""
  narrow = {k: dict(v, kwargs=dict(v["kwargs"])) for k, v in experts.items()}
  narrow["resnet"]["kwargs"]["width"] = 8
  narrow["densenet"]["kwargs"].update(growth_rate=4, block_config=(1, 1, 1, 1),
                                      num_init_features=8)
  narrow["mobilenet"]["kwargs"]["width_mult"] = 0.25
  for v in narrow.values():
    v["head"] = dict(num_features=32)
  return narrow


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, small=False, quick=False)
  ids = 16 if args.quick else 50 if args.small else 100
  experts = _narrow(EXPERTS) if args.quick else EXPERTS
  kwargs = dict(num_ids=ids, images_per_id=8, num_test_ids=ids, query_per_id=2,
                gallery_per_id=4, image_size=(64, 32))
  source = dict(name="synthetic_reid", source_kwargs=dict(domain="source", **kwargs))
  target = dict(name="synthetic_reid", source_kwargs=dict(domain="target", **kwargs))
  pre_epochs, iters = (3, 2) if args.quick else (5, 16) if args.small else (10, 25)
  adapt_epochs, adapt_iters = (2, 2) if args.quick else (3, 16) if args.small else (5, 30)
  return _stages.mebnet_stages(
      experts, source=source, target=target,
      pretrain=dict(num_classes=ids, epochs=pre_epochs, iters=iters, batch_size=32,
                    num_instances=4, augment=PRETRAIN_AUGMENT,
                    optim=dict(name="adam", learning_rate=1e-3, weight_decay=5e-4,
                               schedule="mebnet_warmup_multistep", warmup_epochs=2,
                               warmup_factor=0.01, milestones=(pre_epochs - 2,), gamma=0.1)),
      adapt=dict(num_clusters=ids, epochs=adapt_epochs, iters=adapt_iters, batch_size=32,
                 num_instances=4, augment=ADAPT_AUGMENT, eval_expert=0,
                 optim=dict(name="adam", learning_rate=3.5e-4, weight_decay=5e-4,
                            schedule="constant")))
