"""Float ResNet-20 on CIFAR-10, the standard recipe (He et al. 2016, arXiv 1512.03385, Table 6).

Command:
  python -m launch.main --config=configs/baseline/cifar10_resnet20.py --workdir=$HOME/runs/r20
Data: `tfds build cifar10 --file_format=array_record` once (needs `pip install -e .[prepare]`).
Hardware: 1 GPU (about 20 minutes) or 8 TPU cores. Expected: top-1 91.3-92.0 % (paper 91.25 %).
Recipe: SGD 0.1, momentum 0.9, weight decay 1e-4 (5e-4 works as well), batch 128, 200 epochs,
cosine decay, random crop (pad 4) + horizontal flip.
"""
from configs import common


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, quick=False)
  c = common.base_config()
  common.cifar10_data(c)
  c.model.name = "resnet20"
  c.num_epochs = 200
  c.log_every = 100
  c.optim.weight_decay = 1e-4
  if args.quick:
    c.num_steps = 20
    c.data.num_workers = 0
  return c
