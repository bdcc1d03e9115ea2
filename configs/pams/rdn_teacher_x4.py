"""Full-precision RDN x4 teacher for PAMS (method "sr"; RDN, Zhang et al. CVPR 2018).

Paper: PAMS (ECCV 2020, arXiv 2011.04212) quantizes a pretrained RDN (D=16 RDBs x C=8 layers,
G=G0=64); FP reference Set5 x4 32.47 dB (RDN paper; not stated in the PAMS paper). This config trains
it with the EDSR-PyTorch recipe used for the other teachers (DIV2K 1-800, 96-px HR patches as
PAMS-RDN, batch 16, L1, Adam 1e-4 halved every 200 epochs of 1000 batches, 300 epochs); the RDN
paper's own schedule differs (unconfirmed: check the RDN paper).

Command:
  python -m launch.main --config=configs/pams/rdn_teacher_x4.py:data_dir=$TFDS_DATA_DIR,bench=$SR_BENCHMARK_DIR \
      --workdir=/ckpt/rdn_x4
  Students: configs/pams/rdn_x4_8bit.py, rdn_x4_4bit.py with --config.pams.teacher_path=/ckpt/rdn_x4.
Hardware: 1 GPU (~22 M params), a few days.
Expected: Set5 x4 PSNR(Y) about 32.4 dB.
Variants: `:quick` (tiny RDN, offline scikit-image photos, seconds on CPU).
"""
from configs.pams import _sr_common


def get_config(arg=None):
  return _sr_common.teacher_config(arg, model="rdn", scale=4, patch_size=96)
