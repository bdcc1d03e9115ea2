"""DMAD quick run on Pix2Pix (arXiv 2011.08382): teacher -> mask search -> materialize ->
distilled and undistilled fine-tuning -> report, on a CPU in minutes, no download.

Data: `gan_offline_paired` (scikit-image photographs: A = the edge map of a photo crop, B = the
crop; held-out photos for evaluation), 32x32, no flips, 400 training pairs of which every epoch
of 20 steps draws 80 (each pair is seen about once per stage: with the 80 pairs of earlier
versions the models over-fitted them and the held-out PSNR drifted down as training went on).
Networks: the pix2pix U-Net at ngf 16 with 5 downsamplings (1.10 G MACs on 1x3x256x256, GAN
convention), batch norm and dropout, and the batch-norm PatchGAN at ndf 16 (6-channel input);
hinge loss, L1 100, Adam 2e-4 (0.5, 0.999), batch 4. Teacher and search 400 steps each,
fine-tuning 200. Search: lambda_mask 3e-2 (the official 1e-2 scaled to this short run, see
LAMBDA_MASK), masks at Adam 1e-2 (as in quick_cyclegan.py), every mask ordinary, layers frozen
past 0.8 sparsity (`frozen_threshold`, the official edges2shoes script), cube bound updated
after every epoch, early stop at 0.27 G MACs (>= 4x fewer than the teacher). Fine-tuning:
attention distillation 10 at the taps whose size equals the teacher D's second-conv feature
("down2", "up3_norm", the official 64x64 pair at this depth), discriminator distillation 1e-4,
and the same budget without distillation. Quality: PSNR of G(A) against B on the held-out pairs
(`psnr`). Not a paper row: a CPU-sized check (>= 4x fewer MACs, student within 1 dB of the
teacher).

Command:
  python -m launch.main --config=configs/dmad/quick_pix2pix.py --workdir=/tmp/dmad_pix2pix
Outputs: <workdir>/{teacher,search,materialize,distilled,undistilled,report}/ and
<workdir>/dmad_report.json (teacher_macs, student_macs, teacher_params, student_params,
teacher/psnr, distilled/psnr, undistilled/psnr).
Hardware: any CPU (about 2 minutes on 2 cores). Expected: see BENCHMARKS.md (DMAD quick runs).
Variants: `:small` (ngf 8, half the steps: the slow test's CPU-sized check of the same promises);
`:quick` (a few steps per stage: smoke run for tests); `:seed=N`.
"""
from __future__ import annotations

import ml_collections

from configs import common
from configs.dmad import _stages
from configs.gan import _common

UNET = "jaxcompress.models.pix2pix:UnetGenerator"
MACS_TARGET = 0.27e9  # 4.08x under the teacher's 1.103 G
MASK_LR = 1e-2
# The official 1e-2 scaled to this short run as in configs/dmad/quick_cyclegan.py; measured on
# this config: 1e-2 ends at 3.0x fewer MACs, 3e-2 meets the 4.5x target, 1e-1 stops at 5.1x
# after 100 steps (BENCHMARKS.md).
LAMBDA_MASK = 3e-2
SMALL_MACS = 0.304 / 1.103  # ngf 8 / ngf 16 U-Net MACs (the `:small` target keeps the ratio)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, quick=False, small=False, seed=0)
  c = _common.gan_config("pix2pix")
  c.model.generator = _common.network(UNET, ngf=16, num_downs=5, use_dropout=True, output_nc=3)
  c.model.discriminator = _common.network("patchgan_discriminator", ndf=16, n_layers=3,
                                          norm="batch")
  c.gan.update({"gan_mode": "hinge", "lambda_L1": 100.0, "pool_size": 0})
  c.data.name = "gan_offline_paired"
  c.data.eval_split = "test"
  c.data.source_kwargs = ml_collections.ConfigDict(
      {"image_size": 32, "num_examples": 400, "num_test_examples": 32})
  c.data.transform_kwargs = ml_collections.ConfigDict(
      {"load_size": 32, "crop_size": 32, "no_flip": True})
  c.data.batch_size = 4
  c.steps_per_epoch = 20           # 80 of the 400 pairs per epoch
  c.seed = args.seed
  c.num_devices = 1                # a batch of 4 on one device, whatever the machine has
  c.data.eval_batch_size = 8
  c.log_every = 20
  c.checkpoint_every = 10 ** 9
  epochs = {"teacher": (10, 10), "search": (10, 10), "finetune": (5, 5)}
  macs_target, lambda_mask = MACS_TARGET, LAMBDA_MASK
  if args.small:
    c.model.generator.kwargs.ngf = 8
    c.model.discriminator.kwargs.ndf = 8
    epochs = {"teacher": (5, 5), "search": (5, 5), "finetune": (3, 3)}
    macs_target = MACS_TARGET * SMALL_MACS
    lambda_mask = 1e-1            # half the search steps: a stronger push (measured, BENCHMARKS.md)
  if args.quick:
    c.model.generator.kwargs.update({"ngf": 4})
    c.model.discriminator.kwargs.update({"ndf": 4, "n_layers": 2})
    c.data.source_kwargs.update({"num_examples": 16, "num_test_examples": 8})
    c.steps_per_epoch = -1         # one pass over the 16 pairs
    c.data.batch_size = 8          # divisible by 8 devices (the tests' fake devices)
    c.num_devices = -1
    c.log_every = 1
    epochs = {"teacher": (1, 1), "search": (1, 1), "finetune": (1, 1)}
  dmad = {"lambda_mask": lambda_mask, "lambda_update": 1.0, "rule": "cube", "update_every": 1,
          "macs_target": macs_target, "macs_input_size": 256, "frozen_threshold": 0.8,
          "lambda_attention": 10.0, "lambda_discriminator": 1e-4,
          "distill_taps": ("down2", "up3_norm"), "disc_tap": "hidden1",
          "disc_last_tap": f"hidden{c.model.discriminator.kwargs.n_layers}"}
  staged = _stages.dmad_stages(c, kind="pix2pix", teacher_epochs=epochs["teacher"],
                               search_epochs=epochs["search"],
                               finetune_epochs=epochs["finetune"], dmad=dmad, report_metric="psnr")
  # Masks travel per bound update as far as in the official run (configs/dmad/quick_cyclegan.py).
  staged.stages.search.optim.groups = [{"regex": ".*/mask", "learning_rate": MASK_LR}]
  return staged
