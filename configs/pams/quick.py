"""PAMS quick run (ECCV 2020, arXiv 2011.04212): FP teacher, 8-bit and 4-bit EDSR x2 students.

The whole method on a CPU in minutes, no download: scikit-image's real photographs
(`sr_offline`: train on astronaut, rocket, immunohistochemistry, hubble_deep_field, motorcycle;
HELD-OUT test photos chelsea and coffee; LR by MATLAB bicubic imresize). A tiny EDSR x2 (4
blocks, 16 feats, 48-px HR patches, batch 16) is trained in float (1500 steps: L1, Adam 1e-3
halved every 15 epochs of 25 steps), then an 8-bit and a 4-bit PAMS student are initialised
from it and fine-tuned for 3 epochs each with L1 + 1e3 * SKT (Adam 1e-4, alphas 1e-2; the
first student epoch is the EMA alpha calibration).
Not a paper table row: the sheet's CPU-sized check ("8-bit ~ FP PSNR; visible 4-bit drop").

Command (one command, four stages: teacher -> 8-bit student -> 4-bit student -> table):
  python -m launch.main --config=configs/pams/quick.py --workdir=/tmp/pams_quick
Outputs: <workdir>/fp, <workdir>/8bit, <workdir>/4bit (ordinary run workdirs), <workdir>/table,
and <workdir>/pams_table.md / pams_table.json: PSNR (MATLAB Y, shave 2) and SSIM of fp / 8bit /
4bit / bicubic on the full held-out photos. Rerunning skips finished stages.
Hardware: any CPU; measured 99 s wall (1500 teacher + 2 x 75 student steps) on an otherwise idle
2-core machine (204 s at load average 8).
Expected (measured, seed 0; full held-out photos, PSNR-Y dB / SSIM):
  | fp 33.88 / 0.923 | 8bit 33.87 / 0.922 | 4bit 32.93 / 0.892 | bicubic 32.92 / 0.901 |
8-bit is within 0.02 dB of FP; 4-bit drops 0.95 dB (16-feature layers leave 4 bits little room).
On a GPU the EDSR-baseline-sized variant (`:baseline`: 64 feats, 16 blocks, repeat 400, 60 teacher
epochs + 3 per student) ran in 95 s on an H200:
fp 34.68 / 0.935, 8bit 34.73 / 0.935, 4bit 34.62 / 0.932 (BENCHMARKS.md).
Checked by the slow test tests/methods/pams_test.py::test_quick_pipeline_meets_its_promise
(`pytest -m slow`): |fp - 8bit| <= 0.1 dB, 4bit < 8bit, under 10 minutes.
Variants: `:quick` (a few steps per stage; the colab's and the unit tests' smoke run);
`:student_only` (one 8-bit PAMS run that trains its own teacher first, no stages).
"""
import ml_collections

from configs import common
from configs.pams import _sr_common


def get_config(arg=None):
  args = common.parse_arg(arg, quick=False, student_only=False, baseline=False)
  c = _sr_common.sr_config(method="pams", model="edsr", scale=2, patch_size=48, quick=True)
  c.model.kwargs = ml_collections.ConfigDict({"scale": 2, "n_resblocks": 4, "n_feats": 16})
  c.data.batch_size = 16
  c.data.eval_batch_size = 8         # the 2 eval crops, padded (divisible by 8 devices)
  c.data.source_kwargs = ml_collections.ConfigDict({"scale": 2, "repeat": 80})  # 25 steps/epoch
  c.data.transform_kwargs = ml_collections.ConfigDict({"patch_size": 48, "eval_patch_size": 192})
  _sr_common.pams_optim(c)
  c.pams = _sr_common.pams_block(8, None)
  c.pams.teacher_epochs = 60          # 1500 teacher steps
  c.pams.teacher_optim = ml_collections.ConfigDict(
      {"learning_rate": 1e-3, "schedule": "step", "decay_epochs": 15, "decay_factor": 0.5})
  c.num_epochs = 63                   # + 3 student epochs (1 calibration) per bit width
  c.optim.decay_epochs = 10
  c.final_eval = []                   # the eval split's full images (the held-out photos)
  c.final_eval_max_images = -1
  c.final_eval_ssim = True
  c.log_every = 25
  c.checkpoint_every = 10 ** 9        # one checkpoint, at the end of each stage
  if args.quick:
    c.data.source_kwargs.repeat = 8   # 40 / 16 = 2 steps per epoch
    c.data.transform_kwargs.eval_patch_size = 96
    c.pams.teacher_epochs = 1
    c.num_epochs = 2
    c.final_eval_max_images = 1
    c.final_eval_ssim = False
    c.log_every = 1
  if args.baseline:                  # EDSR-baseline sized, for an accelerator
    c.model.kwargs.n_feats = 64
    c.model.kwargs.n_resblocks = 16
    c.data.source_kwargs.repeat = 400
    c.pams.teacher_epochs = 60
    c.num_epochs = 66
  if args.student_only:
    return c
  teacher_epochs = c.pams.teacher_epochs
  return _sr_common.pams_stages(c, bits=(8, 4), teacher_epochs=teacher_epochs,
                                student_epochs=c.num_epochs - teacher_epochs,
                                teacher_optim=c.pams.teacher_optim.to_dict())
