"""DMAD CycleGAN summer2winter, a row of the paper's table (arXiv 2011.08382).

Paper row (SJLeo/DMAD README): CycleGAN, summer2winter: 3.18 G MACs (17.9x fewer than the
56.8 G generator), 0.24 M parameters (47.1x fewer than 11.4 M), FID 78.24.

The run (`_paper.cyclegan_row`, settings of SJLeo/DMAD `scripts/cyclegan/summer2winter/
{train,finetune}.sh`, the same as horse2zebra's): teacher (the full CycleGAN, ResNet ngf 64, 9
blocks), mask search (lambda_mask 1e-3, group coefficient 1, upconv masks x100, early stop at
4.0 G MACs per generator), materialize, fine-tuning with co-attention (100) and discriminator
(1e-4) distillation and without, report. LSGAN, pools of 50, batch 1, 100 + 100 epochs per
stage on TFDS `cycle_gan/summer2winter_yosemite` (trainA 1231 summer, trainB 962 winter
photographs: 1231 steps per epoch). Quality: FID of G_A(testA) (each of the 309 summer
photographs once) against the winter ones.

Data preparation:
  tfds build cycle_gan/summer2winter_yosemite --file_format=array_record
  pytorch-fid's Inception weights at `config.dmad.inception_weights` (see
  configs/dmad/horse2zebra.py); DMAD's real statistics of summer2winter, real_stat_B.npz.
Command:
  python -m launch.main --config=configs/dmad/summer2winter.py \
      --workdir=runs/dmad_summer2winter --config.dmad.real_stats=path/to/real_stat_B.npz
Outputs: <workdir>/dmad_report.json and one folder per stage, as configs/dmad/horse2zebra.py.
Without `real_stats`, FID compares with the statistics of the winter test photographs the
evaluation reads (the 238 of testB, some twice).
Hardware: one GPU (`num_devices` 1, batch 1); four trainings of 246,200 steps. Not run here at
this scale.
Expected: a G_A at or under 4.0 G MACs (row: 3.18 G, 0.24 M parameters) with an FID near the
row's 78.24.
"""
from __future__ import annotations

import ml_collections

from configs.dmad import _paper

PAPER_ROW = _paper.PaperRow("CycleGAN", "summer2winter", 3.18e9, 17.9, 0.24e6, 47.1, "fid",
                            78.24)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The staged run; `arg` is unused (no `:quick` variant: configs/dmad/quick_cyclegan.py and
  quick_pix2pix.py are the CPU-sized runs)."""
  del arg
  return _paper.cyclegan_row("summer2winter_yosemite", "AtoB")
