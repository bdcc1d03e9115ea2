"""DSM paper row: I3D pretrained on UCF101 split 1 with moco, fine-tuned on UCF101 and HMDB51.

Wang et al., AAAI 2021, arXiv 2009.05757, README table (I3D, UCF101 pretraining): random init
47.9 / 29.6, MoCo 62.3 / 36.5, DSM(Triplet) 70.7 / 48.5, DSM 74.8 / 52.5 (UCF101 / HMDB51 top-1).
Recipes in configs/dsm/_paper.py.
Command:
  python -m launch.main --config=configs/dsm/i3d_ucf101_moco.py --workdir=/tmp/dsm_i3d_moco \
      --config.stages.pretrain.data.data_dir=UCF101 --config.stages.ucf101.data.data_dir=UCF101 \
      --config.stages.hmdb51.data.data_dir=HMDB51
Hardware: GPUs (I3D at 224 x 224, 64-frame fine-tuning clips).
Expected: the row of the table above.
"""
from configs.dsm import _paper


def get_config(arg: str | None = None):
  del arg
  stages = {"pretrain": _paper.pretrain("i3d", "ucf101_frames", "moco", size=224)}
  for name, dataset in (("ucf101", "ucf101_frames"), ("hmdb51", "hmdb51_frames")):
    stages[name] = _paper.finetune("i3d", dataset)
    stages[name].init_from = _paper.handover("pretrain")
  return _paper.staged(stages)
