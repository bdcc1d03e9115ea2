"""MEB-Net paper row Market-1501 -> DukeMTMC-reID (arXiv 2007.01546, Table 1: mAP 66.1, rank-1
79.6 with the DenseNet-121 expert; community reruns of the release: ~59.5 mAP).

Recipe and experts: configs/mebnet/_paper.py; stages: configs/mebnet/_stages.py.
Command:
  python -m launch.main --config=configs/mebnet/market2duke.py:data_dir=/data,weights_dir=/w \
      --workdir=/tmp/mebnet_market2duke
  (/data holds Market-1501 and DukeMTMC-reID in their standard layouts, /w torchvision's
  ImageNet files of DenseNet-121, ResNet-50 and Inception-v3.)
Hardware: one accelerator with ~40 GB.
Expected: target/mAP of the "adapt" stage near 0.60-0.66; reid_report.json.
"""
from __future__ import annotations

import ml_collections

from configs.mebnet import _paper


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return _paper.paper_row("market", "duke", arg)
