"""DMAD CycleGAN horse2zebra, the first row of the paper's table (arXiv 2011.08382).

Paper row (SJLeo/DMAD README): CycleGAN, horse2zebra: 3.97 G MACs (14.3x fewer than the
56.8 G generator), 0.42 M parameters (26.9x fewer than 11.4 M), FID 62.41.

The run (`_paper.cyclegan_row`, settings of SJLeo/DMAD `scripts/cyclegan/horse2zebra/
{train,finetune}.sh`): teacher (the full CycleGAN: ResNet ngf 64, 9 blocks; the DMAD teachers
are not released), mask search (lambda_mask 1e-3, group coefficient 1, upconv masks x100,
early stop at 4.0 G MACs per generator), materialize, fine-tuning with co-attention (100) and
discriminator (1e-4) distillation and the same without, report. LSGAN, pools of 50, batch 1,
100 + 100 epochs per stage; TFDS trainA 1067 / trainB 1334 images: 1334 steps per epoch.
Quality: FID of G_A(testA) (each of the 120 horses once) against the zebras.

Data preparation:
  tfds build cycle_gan/horse2zebra --file_format=array_record
  pytorch-fid's Inception weights (pt_inception-2015-12-05-6726825d.pth, from the pytorch-fid
  release "fid_weights") at `config.dmad.inception_weights` (default: pytorch-fid's download
  place, ~/.cache/torch/hub/checkpoints/); DMAD's real statistics of horse2zebra (README,
  "pre-prepared real statistic"), real_stat_B.npz, for the official FID.
Command:
  python -m launch.main --config=configs/dmad/horse2zebra.py --workdir=runs/dmad_horse2zebra \
      --config.dmad.real_stats=path/to/horse2zebra/real_stat_B.npz
Outputs: <workdir>/{teacher,search,materialize,distilled,undistilled,report}/ and
<workdir>/dmad_report.json (teacher_macs 56.8 G, student_macs, parameters, and fid/fid of
teacher, distilled and undistilled). Without `real_stats`, FID compares with the first 120 test
zebras' statistics.
Hardware: one GPU (`num_devices` 1, batch 1 as the official runs); four trainings of 266,800
steps. Not run here at this scale.
Expected: a G_A at or under 4.0 G MACs (row: 3.97 G, 0.42 M parameters) with an FID near the
row's 62.41; the report says whether distillation beat the undistilled fine-tuning.
"""
from __future__ import annotations

import ml_collections

from configs.dmad import _paper

PAPER_ROW = _paper.PaperRow("CycleGAN", "horse2zebra", 3.97e9, 14.3, 0.42e6, 26.9, "fid", 62.41)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The staged run; `arg` is unused (no `:quick` variant: configs/dmad/quick_cyclegan.py and
  quick_pix2pix.py are the CPU-sized runs)."""
  del arg
  return _paper.cyclegan_row("horse2zebra", "AtoB")
