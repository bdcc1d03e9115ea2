"""RBNN 1w1a VGG-small on CIFAR-10 (Rotated Binary Neural Network, arXiv 2009.13055).

Paper row: README "paper data", VGG-small 1w1a, CIFAR-10, 1000 epochs: top-1 91.3 %.
Command:
  python -m launch.main --config=configs/rbnn/cifar10_vgg_small.py --workdir=$HOME/runs/rbnn_vgg
Data: `tfds build cifar10 --file_format=array_record` once.
Hardware: 1-8 GPUs (about a day on one H100 for 1000 epochs) or a TPU slice.
Expected: best eval accuracy about 90.8-91.8 % (README 91.3 %).
Model: float conv 3->128; binary 128, 256, 256, 512, 512 (conv -> pool -> BN -> hardtanh);
float FC 8192 -> 10 (no BatchNorm1d: the official VGG has none).
Recipe: the official one (configs/rbnn/_base.py). Variants: `:quick` (20 steps).
"""
import ml_collections

from configs import common
from configs.rbnn import _base


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, quick=False)
  c = _base.rbnn_config()
  c.model.name = "vgg_small"
  c.model.kwargs = ml_collections.ConfigDict()
  return _base.shrink_for_smoke(c) if args.quick else c
