"""DSM paper row: I3D from random initialisation, trained on UCF101 and HMDB51 (the baseline).

Wang et al., AAAI 2021, arXiv 2009.05757, README: random init 47.9 (UCF101) / 29.6 (HMDB51).
The fine-tuning recipe of configs/dsm/_paper.py without a pretraining stage.
Command:
  python -m launch.main --config=configs/dsm/i3d_ucf101_random.py --workdir=/tmp/dsm_i3d_random \
      --config.stages.ucf101.data.data_dir=UCF101 --config.stages.hmdb51.data.data_dir=HMDB51
Hardware: GPUs.
Expected: the numbers above.
"""
from configs.dsm import _paper


def get_config(arg: str | None = None):
  del arg
  return _paper.staged({"ucf101": _paper.finetune("i3d", "ucf101_frames"),
                        "hmdb51": _paper.finetune("i3d", "hmdb51_frames")})
