"""DMAD Pix2Pix* cityscapes (mobile generator), a row of the paper's table (arXiv 2011.08382),
scored by FID.

Paper row (SJLeo/DMAD README): Pix2Pix* (GAN Compression's mobile ResNet generator),
cityscapes: 4.39 G MACs (4.24x fewer than the 18.6 G U-Net), 0.55 M parameters (98.9x fewer
than 54.4 M), mIoU 41.47.

The paper's metric is the mIoU of a DRN-D-105 segmentation network on the generated
photographs; that checkpoint is not provided here, so this config reports FID against the val
photographs (metric "fid"), which the paper does not give for this row.

The run (`_paper.pix2pix_row(..., mobile=True)`, settings of SJLeo/DMAD
`scripts/mobile_pix2pix/cityscapes/{train,finetune}.sh`): labels -> photographs (`--direction
BtoA`), teacher (the mobile ResNet generator at `--pretrain_ngf` 64), mask search on the mobile
generator at ngf 48 (lambda_mask 2e-3, group coefficient 2, stem and upsampling masks with the
bound penalty x200, early stop at 4.5 G MACs), materialize, fine-tuning with co-attention (10)
and discriminator (1e-4) distillation and without, report. PatchGAN ndf 128 with instance
norm, hinge loss, L1 x 100, no pool, load 256 without flips, batch 1, 100 + 100 epochs per
stage (2975 steps per epoch). The official target weighs the D map 0.25 here (0.5 elsewhere),
`distill.co_attention_loss` uses 0.5.

Data preparation: as configs/dmad/cityscapes.py (SJLeo/DMAD
`datasets/prepare_cityscapes_dataset.py`, pytorch-fid's weights).
Command:
  python -m launch.main --config=configs/dmad/cityscapes_mobile.py \
      --workdir=runs/dmad_cityscapes_mobile --config.dmad.dataroot=path/to/cityscapes
Outputs: <workdir>/dmad_report.json and one folder per stage.
Hardware: one GPU (`num_devices` 1, batch 1); four trainings of 595,000 steps. Not run here at
this scale.
Expected: a generator at or under 4.5 G MACs (row: 4.39 G, 0.55 M parameters); the FID has no
paper value to compare with.
"""
from __future__ import annotations

import ml_collections

from configs.dmad import _paper

PAPER_ROW = _paper.PaperRow("Pix2Pix*", "cityscapes", 4.39e9, 4.24, 0.55e6, 98.9, "miou", 41.47)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The staged run; `arg` is unused (no `:quick` variant: configs/dmad/quick_cyclegan.py and
  quick_pix2pix.py are the CPU-sized runs)."""
  del arg
  return _paper.pix2pix_row("cityscapes", mobile=True)
