"""PC-DARTS search, CPU quick run on scikit-learn's digits (offline, 8x8 grey images).

A tiny version of `configs/pc_darts/cifar10_search.py` (Xu et al., arXiv 1907.05737): 3 cells
(reductions at cells 1 and 2), C = 8, 3 nodes per cell (9 edges), K = 4 partial channels, edge
normalisation, the digits train split halved for weights / architecture, architecture updates
from epoch 2 of 6.

Command:
  python -m launch.main --config=configs/pc_darts/digits_search.py --workdir=/tmp/pcdarts_digits
Hardware: any CPU (2 cores): about 2.5 minutes (measured 2:38 wall, 190 s CPU on a shared 2-core
machine), most of it compilation.
Expected: eval accuracy of the search network about 0.8 (measured 0.80, seed 0); `genotype.json`
(3-node cells), `normal.png`, `reduce.png` and `final_report.json` in the workdir.
`:quick` runs 2 epochs.
"""
from configs import common
from jaxcompress.methods import pc_darts


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, quick=False)
  c = common.base_config()
  c.method = "pc_darts"
  c.data.name = "digits"
  c.data.crop_padding = 1
  c.data.batch_size = 64
  c.data.eval_batch_size = 120
  c.data.search_split = 0.5
  c.model.name = "darts_search"
  c.model.num_classes = 10
  c.num_epochs = 2 if args.quick else 6
  c.log_every = 11
  c.optim.name = "sgd"
  c.optim.learning_rate = 0.1
  c.optim.momentum = 0.9
  c.optim.weight_decay = 3e-4
  c.optim.schedule = "cosine"
  c.optim.grad_clip = 5.0
  c.nas = pc_darts.default_nas_config()
  c.nas.init_channels = 8
  c.nas.layers = 3
  c.nas.steps = 3
  c.nas.multiplier = 3
  c.nas.arch_start_epoch = 1 if args.quick else 2
  c.nas.write_png = True
  # On a GPU, autotuning the supernet's many small, distinct convolutions costs ~40 s of the first
  # step and gains nothing at this size (BENCHMARKS.md, NAS search start-up on a GPU).
  c.compiler_options.xla_gpu_autotune_level = 0
  return c
