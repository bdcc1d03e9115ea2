"""DMAD CycleGAN* horse2zebra (mobile generator), a row of the paper's table (arXiv 2011.08382).

Paper row (SJLeo/DMAD README): CycleGAN* (separable convolutions, ngf 32), horse2zebra:
2.41 G MACs (23.6x fewer than the 56.8 G CycleGAN generator), 0.28 M parameters (40.4x fewer
than 11.4 M), FID 62.96.

The run (`_paper.cyclegan_row(..., mobile=True)`, settings of SJLeo/DMAD
`scripts/mobile_cyclegan/horse2zebra/{train,finetune}.sh`): teacher (GAN Compression's mobile
ResNet generator at the teacher width `--pretrain_ngf` 64, 18.3 G MACs, the model
`models/MobileCycleGAN.py` distils from), mask search on the mobile generator at ngf 32
(4.93 G MACs; lambda_mask 2e-3, group coefficient 5, upconv masks x200, early stop of G_A at
2.5 G and of G_B at 4.0 G, as the official search),
materialize, fine-tuning with co-attention (100) and discriminator (1e-4) distillation and
without, report. PatchGAN ndf 64, LSGAN, pools of 50, batch 1, 100 + 100 epochs per stage,
1334 steps per epoch.

Data preparation: as configs/dmad/horse2zebra.py (TFDS `cycle_gan/horse2zebra`, pytorch-fid's
Inception weights, DMAD's real_stat_B.npz).
Command:
  python -m launch.main --config=configs/dmad/horse2zebra_mobile.py \
      --workdir=runs/dmad_horse2zebra_mobile --config.dmad.real_stats=path/to/real_stat_B.npz
Outputs: <workdir>/dmad_report.json (teacher_macs: the mobile ngf 64 teacher's) and one folder
per stage.
Hardware: one GPU (`num_devices` 1, batch 1); four trainings of 266,800 steps. Not run here at
this scale.
Expected: a G_A at or under 2.5 G MACs (row: 2.41 G, 0.28 M parameters) with an FID near the
row's 62.96.
"""
from __future__ import annotations

import ml_collections

from configs.dmad import _paper

PAPER_ROW = _paper.PaperRow("CycleGAN*", "horse2zebra", 2.41e9, 23.6, 0.28e6, 40.4, "fid", 62.96)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The staged run; `arg` is unused (no `:quick` variant: configs/dmad/quick_cyclegan.py and
  quick_pix2pix.py are the CPU-sized runs)."""
  del arg
  return _paper.cyclegan_row("horse2zebra", "AtoB", mobile=True)
