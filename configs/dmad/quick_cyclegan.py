"""DMAD quick run on CycleGAN (arXiv 2011.08382): teacher -> mask search -> materialize ->
distilled and undistilled fine-tuning -> report, on a CPU in minutes, no download.

Data: `gan_offline_unpaired` (scikit-image photographs; A = photo crops, B = crops of OTHER photos
through a fixed "winter" colour map; held-out photos for evaluation), 32x32 crops of 36x36
resizes with flips. Because the map from A to B is known, the held-out A crops carry their ideal
translation and every stage reports `psnr_B_ref`, the PSNR of G_A(A) against it (the quality the
report compares; FID needs the pytorch-fid Inception weights, see configs/dmad/horse2zebra.py).
Networks: the CycleGAN ResNet generator at ngf 16 with 3 blocks (1.97 G MACs on 1x3x256x256,
GAN convention) and the 70x70 PatchGAN at ndf 16; LSGAN, cycle 10 + 10, identity 0.5, pools of
50, Adam 2e-4 (0.5, 0.999), batch 4, epochs of 20 steps.
Teacher and search 400 steps each (10 epochs constant, 10 decaying), fine-tuning 200.
Search: lambda_mask 1e-2 (the paper's 1e-3 scaled to this short run, see LAMBDA_MASK), group
coefficients (lambda_update 1), sampling masks x100, cube bound updated after every epoch (20
updates), masks at Adam 1e-2 (they travel per bound update as far as in the official run, whose
updates are 1334 steps of Adam 2e-4 apart), early stop at 0.43 G MACs (>= 4.5x fewer than the
teacher). Fine-tuning: attention distillation 100, discriminator distillation 1e-4, and the
same budget without distillation.
Not a paper row: a CPU-sized check of the method's claims (a really smaller generator, >= 4x
fewer MACs, trained to a quality near the teacher's).

Command:
  python -m launch.main --config=configs/dmad/quick_cyclegan.py --workdir=/tmp/dmad_cyclegan
Outputs: <workdir>/{teacher,search,materialize,distilled,undistilled,report}/ and
<workdir>/dmad_report.json (teacher_macs, student_macs, teacher_params, student_params,
teacher/psnr_B_ref, distilled/psnr_B_ref, undistilled/psnr_B_ref).
Hardware: any CPU. Expected: see BENCHMARKS.md (DMAD quick runs).
Variants: `:small` (ngf 8, half the steps: the slow test's CPU-sized check of the same promises);
`:quick` (a few steps per stage: smoke run for tests).
"""
from __future__ import annotations

import ml_collections

from configs import common
from configs.dmad import _stages
from configs.gan import _common

MACS_TARGET = 0.43e9
MASK_LR = 1e-2  # Adam learning rate of the masks in the search (see get_config)
# The paper's 1e-3 pushes in-band masks over 267k steps (200 epochs of 1334); over this run's
# 400 the same push needs 10x the weight: with 1e-3 the search ends at 2.6x fewer MACs, with 1e-2
# both generators meet the 4.5x target before the bound reaches 0 (BENCHMARKS.md).
LAMBDA_MASK = 1e-2
SMALL_MACS = 0.569 / 1.969  # ngf 8 / ngf 16 generator MACs (the `:small` target keeps the ratio)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, quick=False, small=False)
  c = _common.gan_config("cyclegan")
  c.model.generator = _common.network("cyclegan_resnet_generator", ngf=16, n_blocks=3,
                                      output_nc=3)
  c.model.discriminator = _common.network("patchgan_discriminator", ndf=16, n_layers=3)
  c.gan.update({"gan_mode": "lsgan", "lambda_A": 10.0, "lambda_B": 10.0,
                "lambda_identity": 0.5, "pool_size": 50})
  c.data.name = "gan_offline_unpaired"
  c.data.eval_split = "test"
  c.data.source_kwargs = ml_collections.ConfigDict(
      {"image_size": 32, "num_examples": 80, "num_test_examples": 32})
  c.data.transform_kwargs = ml_collections.ConfigDict({"load_size": 36, "crop_size": 32})
  c.data.batch_size = 4            # 80 / 4 = 20 steps per epoch
  c.num_devices = 1                # a batch of 4 on one device, whatever the machine has
  c.data.eval_batch_size = 8
  c.log_every = 20
  c.checkpoint_every = 10 ** 9     # one checkpoint, at the end of each stage
  epochs = {"teacher": (10, 10), "search": (10, 10), "finetune": (5, 5)}
  # The official taps of a 9-block generator (after the 2nd downsampling and blocks 3, 6, 9)
  # are every third block; with 3 blocks every block.
  taps = ("down2", "res1", "res2", "res3")
  macs_target, lambda_mask = MACS_TARGET, LAMBDA_MASK
  if args.small:
    c.model.generator.kwargs.ngf = 8
    c.model.discriminator.kwargs.ndf = 8
    epochs = {"teacher": (5, 5), "search": (5, 5), "finetune": (3, 3)}
    macs_target = MACS_TARGET * SMALL_MACS
    # Half the search steps: a stronger push, so that both generators stop early at the target
    # (3e-2 and 5e-2 left G_A at 3.9x and 4.5x when the bound reached 0; BENCHMARKS.md).
    lambda_mask = 1e-1
  if args.quick:
    c.model.generator.kwargs.update({"ngf": 4, "n_blocks": 2})
    c.model.discriminator.kwargs.update({"ndf": 4, "n_layers": 2})
    c.data.source_kwargs.update({"image_size": 32, "num_examples": 16, "num_test_examples": 8})
    c.data.batch_size = 8          # divisible by 8 devices (the tests' fake devices)
    c.num_devices = -1
    c.data.transform_kwargs.update({"load_size": 36, "crop_size": 32})
    c.log_every = 1
    epochs = {"teacher": (1, 1), "search": (1, 1), "finetune": (1, 1)}
    taps = ("down2", "res1", "res2")
  dmad = {"lambda_mask": lambda_mask, "lambda_update": 1.0, "sampling_coeff": 100.0,
          "rule": "cube", "update_every": 1, "macs_target": macs_target,
          "macs_input_size": 256, "lambda_attention": 100.0, "lambda_discriminator": 1e-4,
          "distill_taps": taps, "disc_tap": "hidden1",
          "disc_last_tap": f"hidden{c.model.discriminator.kwargs.n_layers}"}
  staged = _stages.dmad_stages(c, kind="cyclegan", teacher_epochs=epochs["teacher"],
                               search_epochs=epochs["search"],
                               finetune_epochs=epochs["finetune"], dmad=dmad,
                               report_metric="psnr_B_ref")
  # Masks travel per bound update as far as in the official run: there an update comes every
  # epoch of 1334 steps at Adam 2e-4 (~0.27 per update); here every 20 steps, so 1e-2.
  staged.stages.search.optim.groups = [{"regex": ".*/mask", "learning_rate": MASK_LR}]
  return staged
