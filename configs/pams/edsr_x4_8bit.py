"""PAMS-EDSR x4, 8-bit weights and activations (PAMS, ECCV 2020, arXiv 2011.04212).

Table row: PAMS-EDSR x4 8-bit, Set5 32.124 dB (abstract; 2.42x compression), Set14 28.585
(as quoted in colorjam/PAMS#15; unconfirmed: check the paper's table). FP EDSR x4: Set5 32.095.
The released `run.sh` reaches 31.45 / 28.17 (random student init, 30 epochs); this config uses
the paper's setting: student initialised from the FP teacher.

Recipe: EDSR-baseline (16 blocks, 64 feats) student and frozen FP teacher, DIV2K 1-800, 192-px
HR patches (48 LR), batch 16, 30 epochs of 1000 batches, Adam 1e-4 (weights) / 1e-2 (alphas),
StepLR x0.5 every 10 epochs, loss L1 + 1e3 * SKT, first-epoch EMA alpha calibration.

Command (teacher from configs/pams/edsr_teacher_x4.py or an official `.pt`, below):
  python -m launch.main --config=configs/pams/edsr_x4_8bit.py:data_dir=$TFDS_DATA_DIR,bench=$SR_BENCHMARK_DIR \
      --workdir=/ckpt/pams_edsr_x4_8bit --config.pams.teacher_path=/ckpt/edsr_x4
Official teachers: an EDSR-PyTorch / PAMS `.pt` state_dict (e.g. the model zoo's
edsr_baseline_x4-6b446fab.pt) works as is, --config.pams.teacher_path=FILE.pt (converted on load by
`jaxcompress.models.official_weights.convert_sr_teacher`; needs torch).
Hardware: 1 GPU, a few hours.
Expected: Set5 x4 PSNR(Y) about 32.1 dB (final_report.json, "student/psnr").
Variants: `:quick` (tiny EDSR on the offline photos, teacher trained in place; CPU seconds).
"""
from configs.pams import _sr_common

BITS = 8


def get_config(arg=None):
  return _sr_common.pams_paper_config(arg, model="edsr_baseline", scale=4, bits=BITS,
                                      patch_size=192)
