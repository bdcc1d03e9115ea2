"""PAMS-EDSR x2, 8-bit weights and activations (PAMS, ECCV 2020, arXiv 2011.04212).

Table row: PAMS-EDSR x2 8-bit on Set5/Set14/B100/Urban100 (values unconfirmed: check the
paper's table); the EDSR-baseline x2 FP reference is Set5 about 37.99 dB (EDSR-PyTorch model
zoo; unconfirmed here), and 8-bit is expected to match FP.

Recipe: EDSR-baseline (16 blocks, 64 feats) student and frozen FP teacher, DIV2K 1-800, 96-px HR
patches (48 LR, EDSR-PyTorch's x2 setting; 192 is the x4 patch), batch 16, 30 epochs
of 1000 batches, Adam 1e-4 / alphas 1e-2, StepLR x0.5 every 10 epochs, L1 + 1e3 * SKT,
first-epoch EMA alpha calibration, student initialised from the teacher.

Command (teacher from configs/pams/edsr_teacher_x2.py):
  python -m launch.main --config=configs/pams/edsr_x2_8bit.py:data_dir=$TFDS_DATA_DIR,bench=$SR_BENCHMARK_DIR \
      --workdir=/ckpt/pams_edsr_x2_8bit --config.pams.teacher_path=/ckpt/edsr_x2
Official teachers: an EDSR-PyTorch / PAMS `.pt` state_dict (e.g. the model zoo's
edsr_baseline_x2-1bc95232.pt) works as is, --config.pams.teacher_path=FILE.pt (converted on load by
`jaxcompress.models.official_weights.convert_sr_teacher`; needs torch).
Hardware: 1 GPU, a few hours.
Expected: Set5 x2 PSNR(Y) within ~0.1 dB of the FP teacher (final_report.json, "student/psnr").
Variants: `:quick` (tiny EDSR on the offline photos, teacher trained in place; CPU seconds).
"""
from configs.pams import _sr_common

BITS = 8


def get_config(arg=None):
  return _sr_common.pams_paper_config(arg, model="edsr_baseline", scale=2, bits=BITS,
                                      patch_size=96)
