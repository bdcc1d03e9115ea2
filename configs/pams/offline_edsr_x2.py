"""CPU quickstart for PAMS (ECCV 2020, arXiv 2011.04212): 8-bit EDSR x2 on offline photographs.

No download: real photographs shipped with scikit-image (`sr_offline`: train on astronaut,
rocket, immunohistochemistry, hubble_deep_field, motorcycle; test on chelsea and coffee; LR made
with MATLAB bicubic imresize). A small EDSR (4 blocks, 16 feats, x2, 48-px HR patches) is first
trained in place as the full-precision teacher (`pams.teacher_epochs`, L1, Adam 1e-3), then the
8-bit PAMS student is initialised from it and fine-tuned with L1 + 1e3 * SKT (Adam 1e-4,
alphas 1e-2, first student epoch = EMA alpha calibration). Not a paper table row: a CPU-sized
check that 8-bit PSNR matches FP.

Command:
  python -m launch.main --config=configs/pams/offline_edsr_x2.py --workdir=/tmp/pams_offline
Hardware: any CPU (2 cores); about 1.5 CPU-minutes of compute (measured 5.5 min wall on a
2-core machine shared with other jobs: 1m35s user time, 300 steps).
Expected (measured, seed 0): final_report.json on the two full test photos (MATLAB Y-channel
PSNR, shave 2): student (8-bit) 33.14 dB / SSIM 0.907, FP teacher 32.87 / 0.902, MATLAB bicubic
32.92 / 0.901. The 200-step teacher is still under-trained (slightly below bicubic); the 100
student steps keep improving it, so the 8-bit student ends above both.
Variants: `:quick` (a handful of steps, a smoke test), `bits=4`.
"""
import ml_collections

from configs import common
from configs.pams import _sr_common


def get_config(arg=None):
  args = common.parse_arg(arg, quick=False, bits=8)
  c = _sr_common.sr_config(method="pams", model="edsr", scale=2, patch_size=48, quick=True)
  c.model.kwargs = ml_collections.ConfigDict({"scale": 2, "n_resblocks": 4, "n_feats": 16})
  c.data.batch_size = 16
  c.data.eval_batch_size = 2
  c.data.source_kwargs = ml_collections.ConfigDict({"scale": 2, "repeat": 80})  # 400 / 16 = 25 steps
  c.data.transform_kwargs = ml_collections.ConfigDict({"patch_size": 48, "eval_patch_size": 192})
  _sr_common.pams_optim(c)
  c.pams = _sr_common.pams_block(args.bits, None)
  c.pams.teacher_epochs = 8          # 200 teacher steps
  c.pams.teacher_optim = ml_collections.ConfigDict({"learning_rate": 1e-3, "schedule": "constant"})
  c.num_epochs = 12                  # 8 teacher + 4 student epochs (1 calibration)
  c.optim.decay_epochs = 10
  c.final_eval = []                  # full images of the eval split (the 2 test photos)
  c.final_eval_max_images = -1
  c.final_eval_ssim = True
  c.log_every = 25
  c.checkpoint_every = -1
  if args.quick:
    c.data.source_kwargs.repeat = 8  # 40 / 16 = 2 steps per epoch
    c.pams.teacher_epochs = 1
    c.num_epochs = 2
    c.final_eval_ssim = False
  return c
