"""RBNN 1w1a ResNet-18 on CIFAR-10 (Rotated Binary Neural Network, arXiv 2009.13055).

Paper row: README "paper data", ResNet-18 1w1a, CIFAR-10, 1000 epochs: top-1 92.2 %.
Command:
  python -m launch.main --config=configs/rbnn/cifar10_resnet18.py --workdir=$HOME/runs/rbnn_r18c
Data: `tfds build cifar10 --file_format=array_record` once.
Hardware: 1-8 GPUs (about a day on one H100 for 1000 epochs) or a TPU slice.
Expected: best eval accuracy about 91.7-92.7 % (README 92.2 %).
Model: 64-128-256-512 basic blocks, binarised 1x1 downsample + BN, float 3x3 stem + BN without
activation (official `resnet2.py`), BatchNorm1d before the float classifier.
Recipe: the official one (configs/rbnn/_base.py). Variants: `:quick` (20 steps).
"""
from configs import common
from configs.rbnn import _base


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, quick=False)
  c = _base.rbnn_config()
  c.model.name = "resnet18_cifar"
  c.model.kwargs.stem_act = False
  return _base.shrink_for_smoke(c) if args.quick else c
