"""DTDN paper rows on person re-ID (arXiv 2007.13264): Duke -> Market and Market -> Duke.

The release's recipe (PeixianChen/DTDN, `DTDN/Disentangle.sh`, `DTDN/baseline.py`): ResNet-50
(instance norm in the last stage-3 block, last stride 1), 2048-d embedding, dropout 0.5, batch
128 source + 128 target at 256x128, SGD with Nesterov momentum 0.9 and weight decay 5e-4, the
hand-written learning-rate table (`dtdn_losses.release_lr`, lr 0.08) with the ResNet parts at
0.1x, 40 epochs of max(source, target) batches (the shorter loader is cycled), knn 10, beta 0.05,
memory momentum 0.01 * epoch, loss switch after epoch 12. Source augmentation: pad-crop-flip,
rotation 5 degrees, colour jitter, random erasing 0.5; target: pad-crop-flip. Networks start
from scratch here (the release starts from ImageNet weights; converting a torchvision file into
the encoder / TaskNet layout is not wired yet).
Command:
  python -m launch.main --config=configs/dtdn/reid_paper.py:duke_market --workdir=/tmp/dtdn_dm
  (`--config.stages.<stage>.data.data_dir` and the target stream's data_dir name the folders).
Hardware: one accelerator with >= 40 GB.
"""
from __future__ import annotations

import math

import ml_collections

from configs import common
from configs.dtdn import _stages
from jaxcompress.methods import dtdn_losses

DATASETS = {"market": ("market1501", 751, 12936), "duke": ("dukemtmc_reid", 702, 16522)}
EPOCHS, BATCH, LR = 40, 128, 0.08
# ImageNet-mean fill on raw pixels (erasing after Normalize in the release).
ERASE_FILL = tuple(m + m * s for m, s in zip(common.IMAGENET_MEAN, common.IMAGENET_STD))
SOURCE_AUGMENT = [("crop", {"padding": 10}), ("flip", {}), ("ddan_rotation", {"degrees": 5.0}),
                  ("ddan_color_jitter", {"brightness": (0.5, 2.0), "saturation": (0.5, 2.0),
                                         "hue": (-0.1, 0.1)}),
                  ("random_erasing", {"probability": 0.5, "value": ERASE_FILL})]
TARGET_AUGMENT = [("crop", {"padding": 10}), ("flip", {})]
BACKBONE = r"^(encoder/|task/stage)"


def optim() -> dict:
  """SGD-Nesterov with the release's table; ResNet parts at 0.1x (`lr_mult`)."""
  return dict(name="sgd", momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="piecewise",
              learning_rate=0.0, lr_table=dtdn_losses.release_lr_table(EPOCHS, LR),
              groups=[dict(regex=BACKBONE, learning_rate=0.0,
                           lr_table=dtdn_losses.release_lr_table(EPOCHS, LR, scale=0.1))])


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, duke_market=False, market_duke=False)
  src, tgt = ("market", "duke") if args.market_duke else ("duke", "market")
  (src_name, src_ids, src_n), (tgt_name, _, tgt_n) = DATASETS[src], DATASETS[tgt]
  kwargs = dict(image_size=(256, 128))
  return _stages.dtdn_stages(
      retrieval=True, source=dict(name=src_name, source_kwargs=kwargs),
      target=dict(name=tgt_name, source_kwargs=kwargs), num_classes=src_ids, num_target=tgt_n,
      model_kwargs=dict(block="bottleneck", stage_sizes=(3, 4, 6, 3), width=64),
      epochs=EPOCHS, batch_size=BATCH, optim=optim(),
      steps_per_epoch=math.ceil(max(src_n, tgt_n) / BATCH),
      dtdn_opts=dict(num_features=2048, dropout=0.5, reduction=16, switch_epoch=12, knn=10,
                     beta=0.05, alpha=0.01),
      source_augment=SOURCE_AUGMENT, target_augment=TARGET_AUGMENT)
