"""CycleGAN horse2zebra at paper scale: the full-size DMAD teacher (arXiv 2011.08382 Sec. 4).

The official CycleGAN recipe (junyanz/pytorch-CycleGAN-and-pix2pix, SJLeo/DMAD `models/
CycleGAN.py` and `options/options.py` defaults; DMAD trains its teachers this way as they are not
released): ResNet generator ngf 64, 9 blocks, reflection padding, instance norm, transposed convs;
70x70 PatchGAN ndf 64, 3 layers, instance norm; LSGAN; cycle lambda_A = lambda_B = 10; identity
0.5; pools of 50; Adam 2e-4 (0.5, 0.999) for G and D; batch 1; 100 epochs at the initial
learning rate then 100 of linear decay to 0; weights N(0, 0.02). Data: TFDS `cycle_gan/
horse2zebra` (trainA 1067 horses, trainB 1334 zebras: 1334 steps per epoch), resize to 286,
random 256 crop, random flip; the test split (testA + testB) resized to 256 for evaluation.

Command (prepare TFDS once: `tfds build cycle_gan/horse2zebra --file_format=array_record`):
  python -m launch.main --config=configs/gan/horse2zebra.py --workdir=/tmp/horse2zebra
Outputs: metrics.jsonl (training losses; eval cycle L1 and D outputs on the test split),
checkpoints/ (the teacher for DMAD's fine-tune stage).
Hardware: one GPU (batch 1, as the official code; `num_devices` = 1). The generator: 56.8 G
MACs, 11.4 M parameters (as DMAD counts them); DMAD reports FID on the test split.
Variant `:quick`: a few steps with tiny networks on 64x64 crops.
"""
from __future__ import annotations

import ml_collections

from configs import common
from configs.gan import _common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, quick=False, task="horse2zebra")
  c = _common.gan_config("cyclegan")
  c.model.generator = _common.network("cyclegan_resnet_generator", ngf=64, n_blocks=9,
                                      output_nc=3)
  c.model.discriminator = _common.network("patchgan_discriminator", ndf=64, n_layers=3)
  c.gan.gan_mode = "lsgan"
  c.gan.lambda_A = 10.0
  c.gan.lambda_B = 10.0
  c.gan.lambda_identity = 0.5
  c.gan.pool_size = 50
  c.data.name = "cycle_gan"
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.source_kwargs = ml_collections.ConfigDict({"task": args.task})
  c.data.transform_kwargs = ml_collections.ConfigDict(
      {"load_size": 286, "crop_size": 256, "no_flip": False})
  c.data.batch_size = 1
  c.data.eval_batch_size = 1
  c.num_devices = 1               # batch 1: one device, as the official single-GPU runs
  _common.set_epochs(c, 100, 100)
  c.log_every = 100
  c.checkpoint_every = -1         # every epoch
  if args.quick:
    c.model.generator.kwargs.update({"ngf": 4, "n_blocks": 1})
    c.model.discriminator.kwargs.update({"ndf": 4})
    c.data.transform_kwargs.update({"load_size": 72, "crop_size": 64})
    c.num_epochs, c.num_steps = 1, 4
    c.log_every = 1
  return c
