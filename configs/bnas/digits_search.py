"""BNAS search, CPU quick run on scikit-learn's digits (Chen et al., arXiv 1911.10862).

A tiny `configs/bnas/cifar10_search.py`: 3 cells (reductions at cells 1 and 2), C = 8, 3 nodes
(9 edges), K = 4, XNOR-binarized sep/dil convs, architecture from epoch 1, one reduction phase
per epoch from epoch 1: 7 removals (8 ops -> 1 per edge) by the end of epoch 7 of 8.

Command:
  python -m launch.main --config=configs/bnas/digits_search.py --workdir=/tmp/bnas_digits
  (`:1bit` binarizes activations too and abandons by UCB; `:quick` uses 4 ops, 4 epochs)
Hardware: any CPU (2 cores): about 4.5 minutes (measured 4:43 wall, 246 s CPU on a shared 2-core
machine), mostly compilation.
Expected: final_report.json shows `removals` 7 (quick: 3) and one alive op per edge;
`genotype.json` with 2 inputs per node. Search-network eval accuracy (seed 0): 0.83 after epoch 6,
0.55 at the end: the last abandonment happens after the last training step, so the supernet's BN
running statistics are stale for the final 1-op-per-edge network (only the genotype matters).
"""
from configs import common
from configs.pc_darts import digits_search as pc_darts_digits
from jaxcompress.methods import pc_darts


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, quick=False)
  one_bit = "1bit" in (arg or "").split(",")
  # The PC-DARTS digits search (same data halves, optimizer, tiny supernet) with BNAS's binarized
  # op space and one operation abandoned per edge after every epoch from epoch 1 on.
  c = pc_darts_digits.get_config()
  c.method = "bnas"
  c.nas.arch_start_epoch = 1
  c.nas.write_png = pc_darts.default_nas_config().write_png
  c.nas.op_set = "binary"
  c.nas.binary_activations = one_bit
  c.nas.abandon_rule = "ucb" if one_bit else "performance"
  c.nas.reduce_start = 1
  c.nas.reduce_every = 1
  if args.quick:
    c.nas.primitives = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")
  c.nas.num_reductions = len(c.nas.primitives) - 1
  c.nas.bandit_lambda = 0.7
  c.num_epochs = c.nas.num_reductions + 1
  return c
