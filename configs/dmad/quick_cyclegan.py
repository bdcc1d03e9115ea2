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
Search: lambda_mask 1e-3, group coefficients (lambda_update 1), sampling masks x100, cube bound
updated after every epoch (20 updates), early stop at 0.43 G MACs (>= 4.5x fewer than the
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
Variant `:quick`: a few steps per stage (smoke run for tests).
"""
from __future__ import annotations

import ml_collections

from configs import common
from configs.dmad import _stages
from configs.gan import _common

MACS_TARGET = 0.43e9


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, quick=False)
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
  c.data.eval_batch_size = 8
  c.log_every = 20
  c.checkpoint_every = 10 ** 9     # one checkpoint, at the end of each stage
  epochs = {"teacher": (10, 10), "search": (10, 10), "finetune": (5, 5)}
  # The official taps of a 9-block generator (after the 2nd downsampling and blocks 3, 6, 9)
  # are every third block; with 3 blocks every block.
  taps = ("down2", "res1", "res2", "res3")
  if args.quick:
    c.model.generator.kwargs.update({"ngf": 4, "n_blocks": 2})
    c.model.discriminator.kwargs.update({"ndf": 4, "n_layers": 2})
    c.data.source_kwargs.update({"image_size": 32, "num_examples": 16, "num_test_examples": 8})
    c.data.batch_size = 8          # divisible by 8 devices (the tests' fake devices)
    c.data.transform_kwargs.update({"load_size": 36, "crop_size": 32})
    c.log_every = 1
    epochs = {"teacher": (1, 1), "search": (1, 1), "finetune": (1, 1)}
    taps = ("down2", "res1", "res2")
  dmad = {"lambda_mask": 1e-3, "lambda_update": 1.0, "sampling_coeff": 100.0,
          "rule": "cube", "update_every": 1, "macs_target": MACS_TARGET,
          "macs_input_size": 256, "lambda_attention": 100.0, "lambda_discriminator": 1e-4,
          "distill_taps": taps, "disc_tap": "hidden1",
          "disc_last_tap": f"hidden{c.model.discriminator.kwargs.n_layers}"}
  return _stages.dmad_stages(c, kind="cyclegan", teacher_epochs=epochs["teacher"],
                             search_epochs=epochs["search"], finetune_epochs=epochs["finetune"],
                             dmad=dmad, report_metric="psnr_B_ref")
