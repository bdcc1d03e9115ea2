"""DMAD CycleGAN zebra2horse, a row of the paper's table (arXiv 2011.08382).

Paper row (SJLeo/DMAD README): CycleGAN, zebra2horse: 3.50 G MACs (16.2x fewer than the
56.8 G generator), 0.30 M parameters (37.7x fewer than 11.4 M), FID 139.3.

Officially this row is the BtoA generator (G_B, `--BtoA_macs_threshold 4.0`) of the
horse2zebra run (`scripts/cyclegan/horse2zebra/train.sh`). The report here measures G_A, so
this config is `configs/dmad/horse2zebra.py` with the domains swapped (`direction="BtoA"`):
the same symmetric training, G_A translating zebras into horses. (The horse2zebra run's own
G_B is in its materialize/student.json, "G_B/macs" and "G_B/params".) Settings: teacher (the
full CycleGAN, ResNet ngf 64, 9 blocks), search (lambda_mask 1e-3, group coefficient 1, upconv
masks x100, early stop at 4.0 G MACs), fine-tuning with co-attention 100 and discriminator
distillation 1e-4, and without; LSGAN, pools of 50, batch 1, 100 + 100 epochs per stage.
Quality: FID of G_A(testB) (each of the 140 zebras once) against the horses.

Data preparation:
  tfds build cycle_gan/horse2zebra --file_format=array_record
  pytorch-fid's Inception weights at `config.dmad.inception_weights` (see
  configs/dmad/horse2zebra.py); DMAD's real statistics of horse2zebra, real_stat_A.npz (the
  horses), for the official FID.
Command:
  python -m launch.main --config=configs/dmad/zebra2horse.py --workdir=runs/dmad_zebra2horse \
      --config.dmad.real_stats=path/to/horse2zebra/real_stat_A.npz
Outputs: <workdir>/dmad_report.json and one folder per stage, as configs/dmad/horse2zebra.py.
Without `real_stats`, FID compares with the statistics of the horses the evaluation reads (120
test horses, 20 of them twice).
Hardware: one GPU (`num_devices` 1, batch 1); four trainings of 266,800 steps. Not run here at
this scale.
Expected: a generator at or under 4.0 G MACs (row: 3.50 G, 0.30 M parameters) with an FID near
the row's 139.3.
"""
from __future__ import annotations

import ml_collections

from configs.dmad import _paper

PAPER_ROW = _paper.PaperRow("CycleGAN", "zebra2horse", 3.50e9, 16.2, 0.30e6, 37.7, "fid", 139.3)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The staged run; `arg` is unused (no `:quick` variant: configs/dmad/quick_cyclegan.py and
  quick_pix2pix.py are the CPU-sized runs)."""
  del arg
  return _paper.cyclegan_row("horse2zebra", "BtoA")
