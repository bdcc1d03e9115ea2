"""PAMS-RDN x4, 4-bit weights and activations (PAMS, ECCV 2020, arXiv 2011.04212).

Table row: PAMS-RDN x4 4-bit on Set5/Set14/B100/Urban100 (values unconfirmed:
check the paper's table; expected a visible drop below the 8-bit row and the FP
RDN x4, Set5 32.47 dB, RDN paper).

Recipe: as configs/pams/rdn_x4_8bit.py with 4 bits: RDN (D=16, C=8, G=G0=64), DIV2K, 96-px HR
patches, batch 16, 30 epochs of 1000 batches, Adam 1e-4 / alphas 1e-2, StepLR x0.5 every 10
epochs, L1 + 1e3 * SKT, first-epoch EMA calibration, student initialised from the teacher.

Command (teacher from configs/pams/rdn_teacher_x4.py):
  python -m launch.main --config=configs/pams/rdn_x4_4bit.py:data_dir=$TFDS_DATA_DIR,bench=$SR_BENCHMARK_DIR \
      --workdir=/ckpt/pams_rdn_x4_4bit --config.pams.teacher_path=/ckpt/rdn_x4
Official teachers: an EDSR-PyTorch / PAMS RDN `.pt` state_dict works as is,
--config.pams.teacher_path=FILE.pt (converted on load by
`jaxcompress.models.official_weights.convert_sr_teacher`; needs torch).
Hardware: 1 GPU, about a day.
Expected: Set5 x4 PSNR(Y) a few tenths of a dB below the 8-bit row (unconfirmed).
Variants: `:quick` (tiny RDN on the offline photos, teacher trained in place).
"""
from configs.pams import _sr_common

BITS = 4


def get_config(arg=None):
  return _sr_common.pams_paper_config(arg, model="rdn", scale=4, bits=BITS, patch_size=96)
