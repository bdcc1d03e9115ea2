"""RBNN 1w1a ResNet-20 on CIFAR-10 (Rotated Binary Neural Network, arXiv 2009.13055).

Paper row: README "paper data", ResNet-20 1w1a, CIFAR-10, 1000 epochs: top-1 86.5 %.
Command:
  python -m launch.main --config=configs/rbnn/cifar10_resnet20.py --workdir=$HOME/runs/rbnn_r20
Data: `tfds build cifar10 --file_format=array_record` once (needs `pip install -e .[prepare]`).
Hardware: 1 GPU (H100: several hours for 1000 epochs) or a TPU slice.
Expected: best eval accuracy about 86.0-87.0 % (README 86.5 %; a user reports 86.1 % in
lmbxmu/RBNN issue #1); 400 epochs (`--config.num_epochs=400`) land about 0.5-1 point lower.
Recipe: official code (configs/rbnn/_base.py): SGD 0.1 m 0.9 wd 1e-4 on all parameters, 5-epoch
warm-up + cosine, batch 256, crop pad 4 + flip, ImageNet mean/std normalisation.
Model: option-A ResNet-20, float stem + hardtanh, BatchNorm1d before the float classifier.
Variants: `:quick` (20 steps, launch smoke test).
"""
from configs import common
from configs.rbnn import _base


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, quick=False)
  c = _base.rbnn_config()
  c.model.name = "resnet20"
  return _base.shrink_for_smoke(c) if args.quick else c
