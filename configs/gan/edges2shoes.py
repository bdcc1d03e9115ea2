"""Pix2Pix edges2shoes at paper scale: the full-size DMAD teacher (arXiv 2011.08382 Sec. 4).

The Pix2Pix recipe as DMAD trains it (SJLeo/DMAD `models/Pix2Pix.py`, `options/options.py`,
`scripts/pix2pix/edges2shoes/*.sh`; the teachers are not released, so they are trained first):
U-Net-256 (8 downsamplings) with ngf 64 (the teacher's `--pretrain_ngf` default; DMAD's search
starts from ngf 48), batch norm and dropout 0.5; PatchGAN ndf 128, 3 layers, batch norm, on the
6-channel (edges, photo) pair; hinge loss (`--gan_mode hinge`); L1 x 100; no image pool; Adam
2e-4 (0.5, 0.999); batch 4; 100 epochs at the initial learning rate then 100 of linear decay;
weights N(0, 0.02). Data: edges2shoes in the pix2pix authors' layout (each image edges|photo,
`pix2pix_folder`), 256x256, no flips; evaluation on the val split (DMAD's FID protocol).

Command (download once: http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/edges2shoes.tar.gz):
  python -m launch.main --config=configs/gan/edges2shoes.py --workdir=/tmp/edges2shoes \
      --config.data.source_kwargs.root=/path/to/edges2shoes
Outputs: metrics.jsonl (G_GAN, G_L1, D_real, D_fake; eval psnr and l1 on val), checkpoints/.
Hardware: one GPU (batch 4 on one device; `num_devices` = 1). The full model: 18.6 G MACs,
54.4 M parameters (as DMAD counts them); DMAD reports FID on the val split.
Variant `:quick`: a few steps with tiny networks on 32x32 images.
"""
from __future__ import annotations

import ml_collections

from configs import common
from configs.gan import _common
from configs.gan.pix2pix_quick import UNET


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, quick=False)
  c = _common.gan_config("pix2pix")
  c.model.generator = _common.network(UNET, ngf=64, num_downs=8, use_dropout=True, output_nc=3)
  c.model.discriminator = _common.network("patchgan_discriminator", ndf=128, n_layers=3,
                                          norm="batch")
  c.gan.gan_mode = "hinge"
  c.gan.lambda_L1 = 100.0
  c.gan.pool_size = 0
  c.data.name = "pix2pix_folder"
  c.data.train_split = "train"
  c.data.eval_split = "val"
  c.data.source_kwargs = ml_collections.ConfigDict(
      {"root": ml_collections.config_dict.placeholder(str)})
  c.data.transform_kwargs = ml_collections.ConfigDict(
      {"load_size": 256, "crop_size": 256, "no_flip": True})
  c.data.batch_size = 4
  c.data.eval_batch_size = 4
  c.num_devices = 1
  _common.set_epochs(c, 100, 100)
  c.log_every = 100
  c.checkpoint_every = -1
  if args.quick:
    c.model.generator.kwargs.update({"ngf": 4, "num_downs": 5})
    c.model.discriminator.kwargs.update({"ndf": 4, "n_layers": 2})
    c.data.transform_kwargs.update({"load_size": 32, "crop_size": 32})
    c.num_epochs, c.num_steps = 1, 4
    c.log_every = 1
  return c
