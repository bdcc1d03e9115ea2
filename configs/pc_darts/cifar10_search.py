"""PC-DARTS architecture search on CIFAR-10 (Xu et al., arXiv 1907.05737, ICLR 2020, Table 1).

Official `yuhuixu1993/PC-DARTS` `train_search.py` settings: 8 cells, C = 16, 4 nodes, K = 4
partial channels with edge normalisation, batch 256, 50 epochs, the CIFAR-10 train split halved
(weights on the first 25k images, architecture on the other 25k: `data.search_split = 0.5`),
weights SGD 0.1 momentum 0.9 weight decay 3e-4 cosine to 0 with gradient clipping 5,
architecture Adam 6e-4 (0.5, 0.999) weight decay 1e-3 from epoch 15, first order.

Command:
  python -m launch.main --config=configs/pc_darts/cifar10_search.py --workdir=$HOME/runs/pcdarts
  (`:unrolled` for the DARTS second-order step, `:quick` for a 20-step smoke run)
Data: `tfds build cifar10 --file_format=array_record` once.
Hardware: 1 GPU (the paper: 0.1 GPU-days on a 1080Ti; expect a few hours on one modern GPU).
Expected: `genotype.json` / `final_report.json` in the workdir with a cell dominated by sep/dil
convs in the normal cell (e.g. the published PC_DARTS_cifar genotype); retrained from scratch
(20 cells, C = 36, 600 epochs, cutout) it reaches about 97.4 % test accuracy (paper 2.57 +- 0.07 %
error). The search network's own test accuracy after 50 epochs is typically 85-90 %.
"""
from configs import common
from jaxcompress.methods import pc_darts


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, quick=False, unrolled=False)
  c = common.base_config()
  c.method = "pc_darts"
  common.cifar10_data(c)
  c.data.batch_size = 256
  c.data.eval_batch_size = 256
  c.data.search_split = 0.5
  c.model.name = "darts_search"
  c.model.num_classes = 10
  c.num_epochs = 50
  c.log_every = 50
  c.optim.name = "sgd"
  c.optim.learning_rate = 0.1
  c.optim.momentum = 0.9
  c.optim.weight_decay = 3e-4
  c.optim.schedule = "cosine"
  c.optim.grad_clip = 5.0
  c.nas = pc_darts.default_nas_config()
  c.nas.unrolled = args.unrolled
  if args.quick:
    c.num_steps = 20
    c.data.num_workers = 0
    c.nas.arch_start_epoch = 0
  return c
