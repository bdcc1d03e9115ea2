"""DMAD Pix2Pix cityscapes, a row of the paper's table (arXiv 2011.08382), scored by FID.

Paper row (SJLeo/DMAD README): Pix2Pix, cityscapes: 3.96 G MACs (4.70x fewer than the 18.6 G
U-Net), 1.73 M parameters (31.4x fewer than 54.4 M), mIoU 40.53.

The paper's metric is the mIoU of a DRN-D-105 segmentation network (drn-d-105_ms_cityscapes,
SJLeo/DMAD `metric/mIoU_score.py`) on the generated photographs; that checkpoint is not
provided here, so this config reports FID of the generated photographs against the val
photographs (metric "fid"), which the paper does not give for this row.

The run (`_paper.pix2pix_row`, settings of SJLeo/DMAD `scripts/pix2pix/cityscapes/
{train,finetune}.sh`): labels -> photographs (`--direction BtoA`), teacher (U-Net-256 at
`--pretrain_ngf` 64; PatchGAN ndf 128 with batch norm), mask search from the U-Net at ngf 48
(lambda_mask 1e-2, every mask ordinary, gates frozen past 0.7 sparsity, early stop at 4.0 G
MACs), materialize, fine-tuning with co-attention (10) and discriminator (1e-4) distillation and
without, report. Hinge loss, L1 x 100, no pool, load 256 without flips, batch 1, 100 + 100
epochs per stage (2975 training pairs: 2975 steps per epoch). Attention at the two 64x64 taps
("down2", "up6_norm") of the official four.

Data preparation: the Cityscapes archives gtFine_trainvaltest.zip and
leftImg8bit_trainvaltest.zip (cityscapes-dataset.com, licence required) through SJLeo/DMAD
`datasets/prepare_cityscapes_dataset.py` (256x256 photo|label pairs in train/ and val/);
pytorch-fid's Inception weights at `config.dmad.inception_weights` (see
configs/dmad/horse2zebra.py).
Command:
  python -m launch.main --config=configs/dmad/cityscapes.py --workdir=runs/dmad_cityscapes \
      --config.dmad.dataroot=path/to/cityscapes
Outputs: <workdir>/dmad_report.json (teacher_macs, student_macs, parameters, fid/fid of
teacher, distilled and undistilled; FID against the 500 val photographs' own statistics unless
`config.dmad.real_stats` is given) and one folder per stage.
Hardware: one GPU (`num_devices` 1, batch 1); four trainings of 595,000 steps. Not run here at
this scale.
Expected: a generator at or under 4.0 G MACs (row: 3.96 G, 1.73 M parameters); the FID has no
paper value to compare with.
"""
from __future__ import annotations

import ml_collections

from configs.dmad import _paper

PAPER_ROW = _paper.PaperRow("Pix2Pix", "cityscapes", 3.96e9, 4.70, 1.73e6, 31.4, "miou", 40.53)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The staged run; `arg` is unused (no `:quick` variant: configs/dmad/quick_cyclegan.py and
  quick_pix2pix.py are the CPU-sized runs)."""
  del arg
  return _paper.pix2pix_row("cityscapes")
