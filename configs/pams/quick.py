"""PAMS quick run (ECCV 2020, arXiv 2011.04212): FP teacher, 8-bit and 4-bit EDSR x2 students.

The whole method on a CPU in minutes, no download: scikit-image's real photographs
(`sr_offline`: train on astronaut, rocket, immunohistochemistry, hubble_deep_field, motorcycle;
HELD-OUT test photos chelsea and coffee; LR by MATLAB bicubic imresize). A tiny EDSR x2 (4
blocks, 16 feats, 48-px HR patches, batch 16) is trained in float (1500 steps: L1, Adam 1e-3
halved every 15 epochs of 25 steps), then an 8-bit and a 4-bit PAMS student are initialised
from it and fine-tuned with L1 + 1e3 * SKT (Adam 1e-4 for weights; the first student epoch is
the EMA alpha calibration): the 8-bit student for 3 epochs, the 4-bit one for 10.
Not a paper table row: a CPU-sized check of the paper's claims at x2 (8-bit ~ FP PSNR, 4-bit well
above bicubic).

Alpha learning rate (why 0.4, not the paper's 1e-2): Adam moves alpha by about its learning rate
per step, so in the paper (colorjam/PAMS main.py: 1e-2, epochs of 1000 batches, 30 epochs) an
alpha can travel ~10 per epoch and ~175 in all, on activations of rgb_range 255. This run's
epochs have 25 batches: at 1e-2 the alphas stay where the calibration put them, at the mean
per-sample max |x| (here 35-128), a 4-bit step of up to 18. Measured on this teacher (full
held-out photos, PSNR-Y dB): 4-bit quantization of the activations alone costs 1.16 dB
(weights alone 0.16 dB), and halving every calibrated alpha gains 0.46 dB before any
training; after calibration every alpha falls at Adam's full rate (~lr per step, the gradient's
sign never changes), but at 1e-2 by only 2.5 in 500 steps. With 1e-2 * 1000 / 25 = 0.4
(`_sr_common.alpha_learning_rate`) alphas travel as far per epoch as in the paper. No defect
was found: quantizers, layer placement, calibration and SKT match the official code
(model/quant_ops.py, model/edsr.py, main.py).
Measured 4-bit student (PSNR-Y dB; bicubic 32.92, FP 33.88):
  | alpha lr / student epochs | 1e-2 / 3 | 1e-2 / 20 | 0.4 / 3 | 0.4 / 10 (this config) |
  | 4bit                      | 32.95    | 33.31     | 33.14   | 33.47                   |
The 8-bit student at alpha lr 0.4 and 3 epochs: 33.88 (FP 33.88).

Command (one command, four stages: teacher -> 8-bit student -> 4-bit student -> table):
  python -m launch.main --config=configs/pams/quick.py --workdir=/tmp/pams_quick
Outputs: <workdir>/fp, <workdir>/8bit, <workdir>/4bit (ordinary run workdirs), <workdir>/table,
and <workdir>/pams_table.md / pams_table.json: PSNR (MATLAB Y, shave 2) and SSIM of fp / 8bit /
4bit / bicubic on the full held-out photos. Rerunning skips finished stages.
Hardware: any CPU; 1500 teacher + 75 (8-bit) + 250 (4-bit) student steps took 4 min 19 s of
CPU time (8 min 47 s wall at load average 8 on 2 cores; the former 1500 + 2 x 75 steps took
2 min 11 s CPU, 99 s wall on an idle 2-core machine).
Expected (measured, seed 0; full held-out photos, PSNR-Y dB / SSIM):
  | fp 33.88 / 0.923 | 8bit 33.88 / 0.922 | 4bit 33.47 / 0.910 | bicubic 32.92 / 0.901 |
8-bit is within 0.01 dB of FP; 4-bit is 0.55 dB above bicubic and 0.41 dB below FP.
On a GPU the EDSR-baseline-sized variant (`:baseline`: 64 feats, 16 blocks, repeat 400, 60 teacher
epochs + 6 per student, alpha lr 1e-2) ran in 95 s on an H200:
fp 34.68 / 0.935, 8bit 34.73 / 0.935, 4bit 34.62 / 0.932 (BENCHMARKS.md).
Checked by the slow test tests/methods/pams_test.py::test_quick_pipeline_meets_its_promise
(`pytest -m slow`): |fp - 8bit| <= 0.1 dB, 4bit - bicubic >= 0.3 dB, under 10 minutes.
Variants: `:quick` (a few steps per stage; the colab's and the unit tests' smoke run);
`:student_only` (one 8-bit PAMS run that trains its own teacher first, no stages).
"""
from __future__ import annotations

import ml_collections

from configs import common
from configs.pams import _sr_common

EPOCH_STEPS = 25       # 5 training photos x repeat 80 / batch 16
FOUR_BIT_EPOCHS = 10   # 1 calibration + 9 fine-tuning epochs (250 steps)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, quick=False, student_only=False, baseline=False)
  c = _sr_common.sr_config(method="pams", model="edsr", scale=2, patch_size=48, quick=True)
  c.model.kwargs = ml_collections.ConfigDict({"scale": 2, "n_resblocks": 4, "n_feats": 16})
  c.data.batch_size = 16
  c.data.eval_batch_size = 8         # the 2 eval crops, padded (divisible by 8 devices)
  c.data.source_kwargs = ml_collections.ConfigDict({"scale": 2, "repeat": 80})  # 25 steps/epoch
  c.data.transform_kwargs = ml_collections.ConfigDict({"patch_size": 48, "eval_patch_size": 192})
  # Alphas keep the paper's travel per epoch (1e-2 * 1000 / 25 = 0.4, `alpha_learning_rate`).
  _sr_common.pams_optim(c, epoch_steps=EPOCH_STEPS)
  c.pams = _sr_common.pams_block(8, None)
  c.pams.teacher_epochs = 60          # 1500 teacher steps
  c.pams.teacher_optim = ml_collections.ConfigDict(
      {"learning_rate": 1e-3, "schedule": "step", "decay_epochs": 15, "decay_factor": 0.5})
  c.num_epochs = 63                   # + 3 student epochs (1 calibration) for the 8-bit student
  c.optim.decay_epochs = 10
  c.final_eval = []                   # the eval split's full images (the held-out photos)
  c.final_eval_max_images = -1
  c.final_eval_ssim = True
  c.log_every = 25
  c.checkpoint_every = 10 ** 9        # one checkpoint, at the end of each stage
  student_epochs = {8: 3, 4: FOUR_BIT_EPOCHS}
  if args.quick:
    c.data.source_kwargs.repeat = 8   # 40 / 16 = 2 steps per epoch
    c.data.transform_kwargs.eval_patch_size = 96
    c.pams.teacher_epochs = 1
    c.num_epochs = 2
    c.final_eval_max_images = 1
    c.final_eval_ssim = False
    c.log_every = 1
    student_epochs = {8: 1, 4: 1}
  if args.baseline:                  # EDSR-baseline sized, for an accelerator
    c.model.kwargs.n_feats = 64
    c.model.kwargs.n_resblocks = 16
    c.data.source_kwargs.repeat = 400
    c.pams.teacher_epochs = 60
    c.num_epochs = 66
    _sr_common.pams_optim(c)          # the paper's 1e-2, as its numbers were measured
    student_epochs = {8: 6, 4: 6}
  if args.student_only:
    return c
  return _sr_common.pams_stages(c, bits=(8, 4), teacher_epochs=c.pams.teacher_epochs,
                                student_epochs=student_epochs,
                                teacher_optim=c.pams.teacher_optim.to_dict())
