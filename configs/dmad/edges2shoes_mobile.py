"""DMAD Pix2Pix* edges2shoes (mobile generator), a row of the paper's table (arXiv 2011.08382).

Paper row (SJLeo/DMAD README): Pix2Pix* (GAN Compression's mobile ResNet generator),
edges2shoes: 4.30 G MACs (4.32x fewer than the 18.6 G U-Net), 0.54 M parameters (100.7x fewer
than 54.4 M), FID 24.08.

The run (`_paper.pix2pix_row(..., mobile=True)`, settings of SJLeo/DMAD
`scripts/mobile_pix2pix/edges2shoes/{train,finetune}.sh`): teacher (the mobile ResNet generator
at `--pretrain_ngf` 64, 18.3 G MACs, the model `models/MobilePix2Pix.py` distils from), mask
search on the mobile generator at ngf 48 (10.6 G; lambda_mask 6e-3, group coefficient 2, stem
and upsampling masks with the bound penalty x100, early stop at 4.5 G MACs), materialize,
fine-tuning with co-attention (10) and discriminator (1e-4) distillation and without, report.
PatchGAN ndf 128 with instance norm on the 6-channel pair, hinge loss, L1 x 100, no pool, load
256 without flips, batch 1 (the scripts keep the default), 100 + 100 epochs per stage.
Attention at "down2", "res3", "res6", "res9" (official model.9/12/15/18); the official target
weighs the D map 0.25 here (0.5 elsewhere), `distill.co_attention_loss` uses 0.5.

Data preparation: as configs/dmad/edges2shoes.py (edges2shoes-r, pytorch-fid's weights, DMAD's
real_stat_B.npz).
Command:
  python -m launch.main --config=configs/dmad/edges2shoes_mobile.py \
      --workdir=runs/dmad_edges2shoes_mobile --config.dmad.dataroot=path/to/edges2shoes-r \
      --config.dmad.real_stats=path/to/edges2shoes-r/real_stat_B.npz
Outputs: <workdir>/dmad_report.json (teacher_macs: the mobile ngf 64 teacher's) and one folder
per stage.
Hardware: one GPU (`num_devices` 1, batch 1); four trainings of 200 epochs of the training set.
Not run here at this scale.
Expected: a generator at or under 4.5 G MACs (row: 4.30 G, 0.54 M parameters) with an FID near
the row's 24.08.
"""
from __future__ import annotations

import ml_collections

from configs.dmad import _paper

PAPER_ROW = _paper.PaperRow("Pix2Pix*", "edges2shoes", 4.30e9, 4.32, 0.54e6, 100.7, "fid", 24.08)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The staged run; `arg` is unused (no `:quick` variant: configs/dmad/quick_cyclegan.py and
  quick_pix2pix.py are the CPU-sized runs)."""
  del arg
  return _paper.pix2pix_row("edges2shoes", mobile=True)
