"""RBNN 1w1a ResNet-34 on ImageNet (Rotated Binary Neural Network, arXiv 2009.13055).

Paper row: README "paper data", ResNet-34 1w1a, ImageNet, 150 epochs: top-1 63.1 % (top-5 84.4 %).
Command:
  python -m launch.main --config=configs/rbnn/imagenet_resnet34.py --workdir=$HOME/runs/rbnn_in34
Data: ILSVRC-2012 prepared once as `tfds build imagenet2012 --file_format=array_record`.
Hardware: 8 GPUs or a TPU v4-8 / v5e-16 slice (days for 150 epochs at batch 512).
Expected: about 62.6-63.6 % top-1 (README 63.1 %; its extra run: 200 epochs 63.5 %).
Model: Bi-Real basic blocks (shortcut per binary conv), hardtanh, float 1x1 downsample + BN,
float 7x7 stem and classifier, BatchNorm1d before the classifier, BN2d scale init 1e-8.
Recipe: SGD 0.1 m 0.9 wd 1e-4 on all parameters, 5-epoch warm-up + cosine, batch 512 (eval 256),
random-resized crop + flip, ImageNet mean/std. Variants: `:quick` (20 steps).
"""
from configs import common
from configs.rbnn import _base, _imagenet


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, quick=False)
  c = _imagenet.imagenet_config("resnet34")
  return _base.shrink_for_smoke(c) if args.quick else c
