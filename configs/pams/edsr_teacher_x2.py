"""Full-precision EDSR-baseline x2 teacher for PAMS (method "sr"; EDSR, Lim et al. CVPRW 2017).

Paper: PAMS (ECCV 2020, arXiv 2011.04212) starts its x2 students from EDSR-PyTorch's
`edsr_baseline_x2` weights (Set5 x2 about 37.99 dB in the EDSR-PyTorch model zoo; not stated in
the PAMS paper, unconfirmed). This config retrains it with the EDSR-PyTorch recipe: DIV2K 1-800,
96-px HR patches (48 LR), batch 16, L1, Adam 1e-4 halved every 200 epochs of 1000 batches,
300 epochs.

Command:
  python -m launch.main --config=configs/pams/edsr_teacher_x2.py:data_dir=$TFDS_DATA_DIR,bench=$SR_BENCHMARK_DIR \
      --workdir=/ckpt/edsr_x2
  Students: configs/pams/edsr_x2_8bit.py, edsr_x2_4bit.py with --config.pams.teacher_path=/ckpt/edsr_x2.
Hardware: 1 GPU, about a day.
Expected: Set5 x2 PSNR(Y) about 38.0 dB (EDSR-baseline published number).
Variants: `:quick` (tiny EDSR, offline scikit-image photos, seconds on CPU).
"""
from configs.pams import _sr_common


def get_config(arg=None):
  return _sr_common.teacher_config(arg, model="edsr_baseline", scale=2, patch_size=96)
