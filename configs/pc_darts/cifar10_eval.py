"""Retraining the PC-DARTS cell on CIFAR-10 (Xu et al., arXiv 1907.05737, ICLR 2020, Table 1:
PC-DARTS + cutout, 2.57 +- 0.07 % test error, 3.6 M parameters).

Official `yuhuixu1993/PC-DARTS` `train.py` / DARTS `cnn/train.py` evaluation settings: the
`darts_eval` network (`jaxcompress.nas.eval_network`) of the genotype, 20 cells, C = 36,
auxiliary head after cell 13 with loss weight 0.4, drop path 0.3 scaled linearly with the epoch
(PC-DARTS' train.py default; DARTS uses 0.2), cutout 16 px, batch 96, SGD 0.025 momentum 0.9
weight decay 3e-4 cosine to 0, gradient clipping 5, 600 epochs on the full CIFAR-10 train split,
random crop (pad 4) and flip.

Genotype: the published `PC_DARTS` cell by default (3,634,678 parameters without the auxiliary
head, as the official `param size = 3.63 MB`); a search's file with
`:genotype=/path/to/genotype.json` or `--config.model.kwargs.genotype=/path/to/genotype.json`;
`:quick` trains 20 steps of an 8-cell, C = 16 network.

Command:
  python -m launch.main --config=configs/pc_darts/cifar10_eval.py --workdir=$HOME/runs/pcdarts_eval
Data: `tfds build cifar10 --file_format=array_record` once.
Hardware: 1 GPU; the paper's 600 epochs take about 1.5-2 GPU-days on a 1080Ti-class GPU.
Expected: test accuracy about 97.4 % (paper: 2.57 +- 0.07 % error).
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, quick=False, genotype="PC_DARTS")
  c = common.base_config()
  c.method = "nas_eval"
  common.cifar10_data(c)
  c.data.batch_size = 96
  c.data.eval_batch_size = 200
  c.model.name = "darts_eval"
  c.model.num_classes = 10
  c.model.kwargs.genotype = args.genotype
  c.model.kwargs.C = 36
  c.model.kwargs.num_cells = 20
  c.model.kwargs.auxiliary = True
  c.model.kwargs.op_set = "darts"
  c.model.kwargs.binary_activations = False
  c.num_epochs = 600
  c.log_every = 100
  c.optim.name = "sgd"
  c.optim.learning_rate = 0.025
  c.optim.momentum = 0.9
  c.optim.weight_decay = 3e-4
  c.optim.schedule = "cosine"
  c.optim.grad_clip = 5.0  # DARTS train.py: nn.utils.clip_grad_norm_(parameters, 5)
  c.nas_eval = ml_collections.ConfigDict(dict(
      aux_weight=0.4, drop_path_prob=0.3, cutout=16, pcnn_lambda=1e-4, pcnn_eta=1.0))
  if args.quick:
    c.num_steps = 20
    c.data.num_workers = 0
    c.model.kwargs.C = 16
    c.model.kwargs.num_cells = 8
  return c
