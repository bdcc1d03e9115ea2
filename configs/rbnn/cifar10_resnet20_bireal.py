"""RBNN 1w1a Bi-Real ResNet-20 on CIFAR-10 (Rotated Binary Neural Network, arXiv 2009.13055).

Paper row: README "paper data", ResNet-20 Bi-Real 1w1a (shortcut around every binary conv),
CIFAR-10, 1000 epochs: top-1 87.8 %.
Command:
  python -m launch.main --config=configs/rbnn/cifar10_resnet20_bireal.py --workdir=$HOME/runs/rbnn_r20b
Data: `tfds build cifar10 --file_format=array_record` once.
Hardware: 1 GPU (several hours for 1000 epochs) or a TPU slice.
Expected: best eval accuracy about 87.3-88.3 % (README 87.8 %).
Recipe: the official one (configs/rbnn/_base.py). Variants: `:quick` (20 steps).
"""
from configs import common
from configs.rbnn import _base


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, quick=False)
  c = _base.rbnn_config()
  c.model.name = "resnet20"
  c.model.kwargs.bireal = True
  return _base.shrink_for_smoke(c) if args.quick else c
