"""PAMS-EDSR x4, 4-bit weights and activations (PAMS, ECCV 2020, arXiv 2011.04212).

Table row: PAMS-EDSR x4 4-bit on Set5/Set14/B100/Urban100 (values unconfirmed: check the
paper's table; expected a visible drop below the 8-bit row, Set5 32.124 dB, and the FP EDSR x4,
32.095). Paper setting: student initialised
from the FP teacher.

Recipe: as configs/pams/edsr_x4_8bit.py with 4 bits: EDSR-baseline (16 blocks, 64 feats),
DIV2K, 192-px HR patches, batch 16, 30 epochs of 1000 batches, Adam 1e-4 / alphas 1e-2, StepLR
x0.5 every 10 epochs, L1 + 1e3 * SKT, first-epoch EMA alpha calibration.

Command (teacher from configs/pams/edsr_teacher_x4.py):
  python -m launch.main --config=configs/pams/edsr_x4_4bit.py:data_dir=$TFDS_DATA_DIR,bench=$SR_BENCHMARK_DIR \
      --workdir=/ckpt/pams_edsr_x4_4bit --config.pams.teacher_path=/ckpt/edsr_x4
Official teachers: an EDSR-PyTorch / PAMS `.pt` state_dict (e.g. the model zoo's
edsr_baseline_x4-6b446fab.pt) works as is, --config.pams.teacher_path=FILE.pt (converted on load by
`jaxcompress.models.official_weights.convert_sr_teacher`; needs torch).
Hardware: 1 GPU, a few hours.
Expected: Set5 x4 PSNR(Y) a few tenths of a dB below the 8-bit row (unconfirmed: check the
paper); final_report.json, "student/psnr".
Variants: `:quick` (tiny EDSR on the offline photos, teacher trained in place; CPU seconds).
"""
from configs.pams import _sr_common

BITS = 4


def get_config(arg=None):
  return _sr_common.pams_paper_config(arg, model="edsr_baseline", scale=4, bits=BITS,
                                      patch_size=192)
