"""DMAD Pix2Pix edges2shoes, a row of the paper's table (arXiv 2011.08382).

Paper row (SJLeo/DMAD README): Pix2Pix, edges2shoes: 2.99 G MACs (6.22x fewer than the 18.6 G
U-Net), 2.13 M parameters (25.5x fewer than 54.4 M), FID 46.95.

The run (`_paper.pix2pix_row`, settings of SJLeo/DMAD `scripts/pix2pix/edges2shoes/
{train,finetune}.sh`): teacher (the U-Net-256 at `--pretrain_ngf` 64, 18.1 G MACs counted here;
batch norm, dropout; PatchGAN ndf 128 with batch norm), mask search from the U-Net at ngf 48
(10.3 G; lambda_mask 1e-2, every mask ordinary, gates frozen past 0.8 sparsity, early stop at
3.0 G MACs), materialize, fine-tuning with co-attention (10) and discriminator (1e-4)
distillation from the ngf 64 teacher and without, report. Hinge loss, L1 x 100, no pool, load
256 without flips, batch 4, 100 + 100 epochs per stage. Attention is distilled at the two 64x64
taps ("down2", "up6_norm") of the official four (the 16x16 pair compares with a resized D map,
not reproduced). Quality: FID of G(edges) against the photographs of the val split.

Data preparation: GAN Compression's edges2shoes-r (the redistribution with a large validation
set that DMAD's `datasets/download_pix2pix_dataset.sh edges2shoes-r` fetches from
hanlab.mit.edu/files/gan_compression/datasets/), extracted to a folder with train/ and val/ of
edges|photo images; pytorch-fid's Inception weights at `config.dmad.inception_weights` (see
configs/dmad/horse2zebra.py); DMAD's real statistics of edges2shoes (README), real_stat_B.npz.
Command:
  python -m launch.main --config=configs/dmad/edges2shoes.py --workdir=runs/dmad_edges2shoes \
      --config.dmad.dataroot=path/to/edges2shoes-r \
      --config.dmad.real_stats=path/to/edges2shoes-r/real_stat_B.npz
Outputs: <workdir>/dmad_report.json (teacher_macs, student_macs, parameters, fid/fid of
teacher, distilled and undistilled) and one folder per stage.
Hardware: one GPU (`num_devices` 1, batch 4); four trainings of 200 epochs of the training set
at batch 4. Not run here at this scale. The bound reaches 0 at 75% of the search's steps (the
paper); the official loop, counting samples against size x batch x epochs, leaves it near 0.31
at batch 4 (`--config.stages.search.dmad.official_total=True` reproduces that).
Expected: a generator at or under 3.0 G MACs (row: 2.99 G, 2.13 M parameters) with an FID near
the row's 46.95.
"""
from __future__ import annotations

import ml_collections

from configs.dmad import _paper

PAPER_ROW = _paper.PaperRow("Pix2Pix", "edges2shoes", 2.99e9, 6.22, 2.13e6, 25.5, "fid", 46.95)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The staged run; `arg` is unused (no `:quick` variant: configs/dmad/quick_cyclegan.py and
  quick_pix2pix.py are the CPU-sized runs)."""
  del arg
  return _paper.pix2pix_row("edges2shoes")
