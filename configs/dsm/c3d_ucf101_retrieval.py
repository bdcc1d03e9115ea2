"""DSM paper row: C3D pretrained on UCF101 split 1 with DSM, clip retrieval on UCF101.

Wang et al., AAAI 2021, arXiv 2009.05757, README: UCF101 R@1/5/10/20/50 = 16.8 / 33.4 / 43.4 /
54.6 / 70.7 (test clips query train clips, nearest neighbours on pooled features). Recipes in
configs/dsm/_paper.py.
Command:
  python -m launch.main --config=configs/dsm/c3d_ucf101_retrieval.py --workdir=/tmp/dsm_c3d \
      --config.stages.pretrain.data.data_dir=UCF101 --config.stages.retrieval.data.data_dir=UCF101
Hardware: GPUs.
Expected: the recall@k above.
"""
from configs.dsm import _paper


def get_config(arg: str | None = None):
  del arg
  retrieval = _paper.retrieval("c3d", "ucf101_frames")
  retrieval.init_from = _paper.handover("pretrain", probe=True)
  return _paper.staged({"pretrain": _paper.pretrain("c3d", "ucf101_frames", "dsm", size=112),
                        "retrieval": retrieval})
