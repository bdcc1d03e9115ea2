"""Full-precision EDSR-baseline x4 teacher for PAMS (method "sr"; EDSR, Lim et al. CVPRW 2017).

Paper: PAMS: Quantized Super-Resolution via Parameterized Max Scale (ECCV 2020, arXiv 2011.04212),
full-precision row "EDSR x4" (Set5 32.095 dB, abstract). PAMS starts from EDSR-PyTorch's
`edsr_baseline_x4` weights; this config retrains the same model with the EDSR-PyTorch recipe:
DIV2K 1-800, 192-px HR patches (48 LR), batch 16, L1, Adam 1e-4 halved every 200 epochs of 1000
batches, 300 epochs.

Command:
  python -m launch.main --config=configs/pams/edsr_teacher_x4.py:data_dir=$TFDS_DATA_DIR,bench=$SR_BENCHMARK_DIR \
      --workdir=/ckpt/edsr_x4
  (DIV2K: `tfds build div2k/bicubic_x4 --file_format=array_record` once; the final report scores
  Set5/Set14/B100/Urban100 under `bench` (layout in jaxcompress/data/sr.py).)
  Students: configs/pams/edsr_x4_8bit.py, edsr_x4_4bit.py with --config.pams.teacher_path=/ckpt/edsr_x4.
Hardware: 1 GPU (A100/H100 class), about 1-2 days; any GPU works.
Expected: Set5 x4 PSNR(Y) about 32.1 dB, Set14 about 28.6 (EDSR-baseline published numbers).
Variants: `:quick` (tiny EDSR, offline scikit-image photos, seconds on CPU).
"""
from configs.pams import _sr_common


def get_config(arg=None):
  return _sr_common.teacher_config(arg, model="edsr_baseline", scale=4, patch_size=192)
