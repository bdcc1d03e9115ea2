"""BNAS search on CIFAR-10 (Chen et al., "Binarized Neural Architecture Search", arXiv
1911.10862, AAAI 2020; 1-bit variant from arXiv 2009.04247).

PC-DARTS search (8 cells, C = 16, 4 nodes, K = 4, edge normalisation, batch 256, train split
halved, SGD 0.1 / Adam 6e-4 from epoch 15, 50 epochs) on the binarized op space (XNOR sep/dil
convs, `jaxcompress.nas.binary_ops`) with performance-based operation-space reduction: from epoch
15, reduction phases of 5 epochs; during a phase every step samples one op per edge from the
low-alpha half M_S and scores the sampled network on the validation half-batch; at the end of each
phase every edge abandons argmin of the likelihood S <- S/2 + s (7 phases: 8 ops -> 1 at epoch 50).
Schedule constants are jaxcompress's choice (the paper gives none that could be confirmed).

Variants (`:arg`): `1bit` (weights and activations binarized, UCB abandonment, the journal's 1-bit
BNAS), `float` (float ops: op-space reduction on the DARTS space), `skip` (do not compute abandoned
ops: the op-space reduction speed-up), `quick` (20 steps).

Command:
  python -m launch.main --config=configs/bnas/cifar10_search.py --workdir=$HOME/runs/bnas
  python -m launch.main --config=configs/bnas/cifar10_search.py:1bit --workdir=$HOME/runs/bnas1
Data: `tfds build cifar10 --file_format=array_record` once.
Hardware: 1 GPU, a few hours (paper: about 40 % faster than PC-DARTS thanks to op reduction).
Expected: `genotype.json` with one surviving op per edge, 2 inputs per node; the BNAS cells
retrained as XNOR networks reach about 96 % (paper: 96.53 % for BNAS vs 97.22 % full precision;
exact per-model numbers unconfirmed: check the paper's Table 1).
"""
from configs import common
from configs.pc_darts import cifar10_search as pc_darts_search


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, quick=False, skip=False, float=False)
  args["1bit"] = "1bit" in (arg or "").split(",")
  # The PC-DARTS search recipe (data halves, SGD, 50 epochs, partial channels) plus BNAS's
  # binarized op space and performance/UCB-based operation abandonment.
  c = pc_darts_search.get_config()
  c.method = "bnas"
  c.nas.op_set = "darts" if args.float else "binary"
  c.nas.binary_activations = args["1bit"]
  c.nas.skip_dead = args.skip
  c.nas.abandon_rule = "ucb" if args["1bit"] else "performance"
  c.nas.reduce_start = 15
  c.nas.reduce_every = 5
  c.nas.num_reductions = len(c.nas.primitives) - 1
  c.nas.bandit_lambda = 0.7
  if args.quick:
    c.num_steps = 20
    c.data.num_workers = 0
  return c
