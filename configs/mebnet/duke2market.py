"""MEB-Net paper row DukeMTMC-reID -> Market-1501 (arXiv 2007.01546, Table 1: mAP 76.0, rank-1
89.9 with the DenseNet-121 expert; community reruns of the release: ~70 mAP).

Recipe and experts: configs/mebnet/_paper.py; stages: configs/mebnet/_stages.py.
Command:
  python -m launch.main --config=configs/mebnet/duke2market.py:data_dir=/data,weights_dir=/w \
      --workdir=/tmp/mebnet_duke2market
  (/data holds DukeMTMC-reID and Market-1501 in their standard layouts, /w torchvision's
  ImageNet files of DenseNet-121, ResNet-50 and Inception-v3.)
Hardware: one accelerator with ~40 GB.
Expected: target/mAP of the "adapt" stage near 0.70-0.76; reid_report.json.
"""
from __future__ import annotations

import ml_collections

from configs.mebnet import _paper


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return _paper.paper_row("duke", "market", arg)
