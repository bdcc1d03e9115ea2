"""ABanditNAS search on CIFAR-10 (Chen et al., arXiv 2008.00698, Sec. 3; ECCV 2020).

Anti-bandit search over 6 distinct single-input cells (4 nodes, 10 edges, 9 ops incl. Gabor
filters and denoising blocks): one epoch of PGD-7 adversarial training per sampled network on
train[:25k], its accuracy on train[25k:] updates the arms, ops with the lowest UCB are abandoned
after every K*T samples; T * sum_{k=2..9} k = 132 epochs in all.

Command:
  python -m launch.main --config=configs/abandit_nas/cifar10_search.py --workdir=$HOME/runs/abnas
Data: `tfds build cifar10 --file_format=array_record` once.
Hardware: 1 GPU (paper: about 1-2 GPU-days for CIFAR-10, unconfirmed). Every edge is a
`lax.switch` over 9 ops in the forward, the PGD loop and the backward pass, each cell's edges one
loop: on a 2-core CPU the first step ends about 75 s after launch (BENCHMARKS.md, "Time to first
step"); `--config.cacheable_programs=True` lets a restart reuse the compiled step.
Expected: final_report.json holds a complete genotype ("search_complete": true, one op per edge);
evaluate it with cifar10_eval_genotype1.py and --config.model.kwargs.genotype=WORKDIR/genotype.json
(WORKDIR/final_report.json works too).
Choices where the paper is silent (documented in jaxcompress/methods/abandit_nas.py): search net
C = 16 with affine-free BN, batch 128, SGD 0.025 cosine, reward = clean validation accuracy.
Variants: `:quick` (a few steps of a 2-cell, 3-op search on tiny batches).
"""
from configs import common
from configs.abandit_nas import _shared
from jaxcompress.methods.abandit_nas import num_search_samples
from jaxcompress.nas.abandit_network import CIFAR_MEAN, CIFAR_STD
from jaxcompress.nas.robust_ops import ABANDIT_PRIMITIVES


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, quick=False, T=3)
  c = common.base_config()
  c.method = "abandit_nas"
  _shared.cifar10_data(c)
  c.data.search_split = 0.5
  c.data.batch_size = 128
  c.data.eval_batch_size = 250
  c.model.name = "abandit_search"
  c.model.kwargs = {"mean": CIFAR_MEAN, "std": CIFAR_STD}
  c.model.init = "he_fout"
  c.nas = common.ml_collections.ConfigDict(dict(
      C=16, layers=6, num_cells=6, primitives=tuple(ABANDIT_PRIMITIVES), affine=False,
      T=args.T, lam=0.7, reward="clean", reward_steps=-1, eval_bn="batch"))
  c.adv = _shared.adv_block(eval_attacks=("clean",))
  c.num_epochs = num_search_samples(len(ABANDIT_PRIMITIVES), args.T)  # 132
  c.optim.learning_rate = 0.025
  c.optim.weight_decay = 3e-4
  c.optim.schedule = "cosine"
  c.optim.grad_clip = 5.0
  c.log_every = 50
  c.eval_every = 10 ** 9       # evaluate the best-so-far ops only at the end
  c.checkpoint_every = -1      # every epoch = every sampled architecture
  if args.quick:
    c.nas.C = 4
    c.nas.layers = c.nas.num_cells = 3
    c.nas.primitives = ("max_pool_3x3", "skip_connect", "sep_conv_3x3")
    c.nas.T = 1
    c.adv.num_steps = 1
    c.data.batch_size = 8
    c.data.eval_batch_size = 8
    c.data.num_workers = 0
    c.num_steps = 4
  return c
