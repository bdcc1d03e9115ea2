"""PAMS-EDSR x2, 4-bit weights and activations (PAMS, ECCV 2020, arXiv 2011.04212).

Table row: benchmark aggregators list PAMS-EDSR x2 as Set5 37.67 / Set14 33.20 / B100 31.94 /
Urban100 31.10 dB without a bit width, most likely the 4-bit x2 row (bits and table number
unconfirmed: check the paper).

Recipe: as configs/pams/edsr_x2_8bit.py with 4 bits: EDSR-baseline (16 blocks, 64 feats), DIV2K,
96-px HR patches (48 LR), batch 16, 30 epochs of 1000 batches, Adam 1e-4 / alphas 1e-2, StepLR
x0.5 every 10 epochs, L1 + 1e3 * SKT, first-epoch EMA alpha calibration.

Command (teacher from configs/pams/edsr_teacher_x2.py):
  python -m launch.main --config=configs/pams/edsr_x2_4bit.py:data_dir=$TFDS_DATA_DIR,bench=$SR_BENCHMARK_DIR \
      --workdir=/ckpt/pams_edsr_x2_4bit --config.pams.teacher_path=/ckpt/edsr_x2
Official teachers: an EDSR-PyTorch / PAMS `.pt` state_dict (e.g. the model zoo's
edsr_baseline_x2-1bc95232.pt) works as is, --config.pams.teacher_path=FILE.pt (converted on load by
`jaxcompress.models.official_weights.convert_sr_teacher`; needs torch).
Hardware: 1 GPU, a few hours.
Expected: Set5 x2 PSNR(Y) about 37.67 dB (if the aggregators' row is the 4-bit one).
Variants: `:quick` (tiny EDSR on the offline photos, teacher trained in place; CPU seconds).
"""
from configs.pams import _sr_common

BITS = 4


def get_config(arg=None):
  return _sr_common.pams_paper_config(arg, model="edsr_baseline", scale=2, bits=BITS,
                                      patch_size=96)
