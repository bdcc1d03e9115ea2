"""CycleGAN quick run (arXiv 1703.10593; the DMAD teacher recipe, arXiv 2011.08382 Sec. 4).

The whole official CycleGAN step on a CPU in minutes, no download: `gan_offline_unpaired`
(scikit-image photographs; A = photo crops, B = crops of other photos through a fixed "winter"
colour map), 64x64 crops of 72x72 resizes with flips (the official resize_and_crop at a quarter
of 286/256). A small ResNet generator (ngf 8, 3 blocks) and PatchGAN (ndf 8, 3 layers), LSGAN,
cycle 10 + 10, identity 0.5, pools of 50, Adam 2e-4 (0.5, 0.999), batch 8, 3 epochs of 50 steps
at the initial learning rate and 3 of linear decay (300 steps).
Not a paper number: a CPU-sized check that the recipe trains. Measured (seed 0, one CPU
device): training cycle_A 4.06 -> 2.15 and cycle_B 2.39 -> 1.85 (means of the first and last
25 steps); held-out cycle_error_A 0.359 -> 0.275 and psnr_B_ref (G_A(A) against the known
winter(A)) 16.5 -> 17.8 dB from step 50 to 300; 12 minutes on a loaded 2-core machine.

Command:
  python -m launch.main --config=configs/gan/cyclegan_quick.py --workdir=/tmp/cyclegan_quick
Outputs: metrics.jsonl (G_A, G_B, cycle_A, cycle_B, idt_A, idt_B, D_A, D_B; eval cycle_error_A/B
and mean D outputs on the held-out photos), checkpoints/.
Hardware: any CPU.
Variant `:quick`: a handful of steps on 32x32 crops with the tiniest networks (engine smoke run).
"""
from __future__ import annotations

import ml_collections

from configs import common
from configs.gan import _common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, quick=False)
  c = _common.gan_config("cyclegan")
  c.model.generator = _common.network("cyclegan_resnet_generator", ngf=8, n_blocks=3,
                                      output_nc=3)
  c.model.discriminator = _common.network("patchgan_discriminator", ndf=8, n_layers=3)
  c.gan.gan_mode = "lsgan"
  c.gan.lambda_A = 10.0
  c.gan.lambda_B = 10.0
  c.gan.lambda_identity = 0.5
  c.gan.pool_size = 50
  c.data.name = "gan_offline_unpaired"
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.source_kwargs = ml_collections.ConfigDict({"image_size": 64, "num_examples": 400})
  c.data.transform_kwargs = ml_collections.ConfigDict(
      {"load_size": 72, "crop_size": 64, "no_flip": False})
  c.data.batch_size = 8           # 400 / 8 = 50 steps per epoch
  c.data.eval_batch_size = 8
  _common.set_epochs(c, 3, 3)
  c.log_every = 25
  c.checkpoint_every = 10 ** 9    # one checkpoint, at the end
  if args.quick:
    c.model.generator.kwargs.update({"ngf": 4, "n_blocks": 1})
    c.model.discriminator.kwargs.update({"ndf": 4, "n_layers": 2})
    c.data.source_kwargs = ml_collections.ConfigDict({"image_size": 32, "num_examples": 16})
    c.data.transform_kwargs.update({"load_size": 36, "crop_size": 32})
    _common.set_epochs(c, 1, 1)   # 2 epochs of 2 steps
    c.log_every = 1
    c.steps_per_call = 1          # one compiled step, no multi-step loop, for 4 steps
  return c
