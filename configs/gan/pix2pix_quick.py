"""Pix2Pix quick run (arXiv 1611.07004; the DMAD teacher recipe, arXiv 2011.08382 Sec. 4).

The whole Pix2Pix step as DMAD trains it on a CPU in minutes, no download: `gan_offline_paired`
(scikit-image photographs; A = the edge map of a photo crop, B = the crop: an edges -> photo
task like edges2shoes), 64x64, no flips (edges2shoes settings). A small U-Net (ngf 8, 6
downsamplings: 64 -> 1, as unet_256 at 256) with batch norm and dropout, a batch-norm PatchGAN
(ndf 16, 3 layers) on the 6-channel pair, hinge loss (DMAD's `--gan_mode hinge`), L1 x 100, no
pool, Adam 2e-4 (0.5, 0.999), batch 8, 3 epochs of 50 steps at the initial learning rate and 3
of linear decay (300 steps).
Not a paper number: a CPU-sized check that the recipe runs and fits its training pairs.
Measured (seed 0, one CPU device): the weighted training G_L1 falls from 45.3 to about 35
(means over 25 steps), while the held-out L1 (0.39 -> 0.38) and PSNR (12.8 dB at step 50 and
300) barely move: 300 steps at 2e-4 are far too few for edges -> photo. 94 s on 2 cores.

Command:
  python -m launch.main --config=configs/gan/pix2pix_quick.py --workdir=/tmp/pix2pix_quick
Outputs: metrics.jsonl (G_GAN, G_L1, D_real, D_fake; eval psnr and l1 on held-out crops),
checkpoints/.
Hardware: any CPU.
Variant `:quick`: a handful of steps on 32x32 images with the tiniest networks (engine smoke run).
"""
from __future__ import annotations

import ml_collections

from configs import common
from configs.gan import _common

UNET = "jaxcompress.models.pix2pix:UnetGenerator"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, quick=False)
  c = _common.gan_config("pix2pix")
  c.model.generator = _common.network(UNET, ngf=8, num_downs=6, use_dropout=True, output_nc=3)
  c.model.discriminator = _common.network("patchgan_discriminator", ndf=16, n_layers=3,
                                          norm="batch")
  c.gan.gan_mode = "hinge"
  c.gan.lambda_L1 = 100.0
  c.gan.pool_size = 0
  c.data.name = "gan_offline_paired"
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.source_kwargs = ml_collections.ConfigDict({"image_size": 64, "num_examples": 400})
  c.data.transform_kwargs = ml_collections.ConfigDict(
      {"load_size": 64, "crop_size": 64, "no_flip": True})
  c.data.batch_size = 8           # 400 / 8 = 50 steps per epoch
  c.data.eval_batch_size = 8
  _common.set_epochs(c, 3, 3)
  c.log_every = 25
  c.checkpoint_every = 10 ** 9
  if args.quick:
    c.model.generator.kwargs.update({"ngf": 4, "num_downs": 5})
    c.model.discriminator.kwargs.update({"ndf": 4, "n_layers": 2})
    c.data.source_kwargs = ml_collections.ConfigDict({"image_size": 32, "num_examples": 16})
    c.data.transform_kwargs.update({"load_size": 32, "crop_size": 32})
    _common.set_epochs(c, 1, 1)   # 2 epochs of 2 steps
    c.log_every = 1
    c.steps_per_call = 1          # one compiled step, no multi-step loop, for 4 steps
  return c
