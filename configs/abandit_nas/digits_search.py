"""A CPU-sized ABanditNAS search on scikit-learn's digits (arXiv 2008.00698, scaled down).

2 distinct cells (2 layers, C = 8) over K = 4 ops (max pool, skip, Gabor filter, denoising block),
T = 1: T * sum_{k=2..4} k = 9 sampled networks, one epoch each, PGD-3 (eps 0.1, step 0.04)
adversarial training on digits[:718], rewards from digits[718:]. (The search space is cut to what
compiles quickly on a CPU: every edge holds a `lax.switch` over its ops, compiled in the forward,
the PGD loop and the backward pass.)

Command:
  python -m launch.main --config=configs/abandit_nas/digits_search.py --workdir=/tmp/abnas_digits
Hardware: any CPU (2 cores); under 3 minutes, most of it compilation.
Expected: final_report.json with "search_complete": true, a 2-cell genotype (one op per node),
"samples": 9, "removals": 3; the genotype alone in genotype.json. Measured (seed 0, shared
2-core CPU): 46-65 s end to end on an idle machine (63-170 s shared); the final eval of the
best-so-far ops inside the shared supernet gave clean accuracy 0.17 and PGD-3 0.03 (a search
proxy with batch statistics, not a trained model; 0.38 / 0.11 before the NAS layers used
`jaxcompress.ops.conv`, whose float rounding moves this short search).
Next step (PGD-7 training of the found network + robust table, about 1-2 minutes; the whole
search -> genotype -> training -> table pipeline takes about 2-3 minutes on a loaded 2-core CPU):
  python -m launch.main --config=configs/abandit_nas/digits_eval.py \
      --config.model.kwargs.genotype=/tmp/abnas_digits/genotype.json --workdir=/tmp/abnas_eval
  cat /tmp/abnas_eval/robust_eval.md
Variants: `:quick` (K = 2, T = 1: 2 epochs, the test-sized run).
"""
from configs import common
from configs.abandit_nas import _shared
from jaxcompress.methods.abandit_nas import num_search_samples

PRIMITIVES = ("max_pool_3x3", "skip_connect", "gab_filt_3x3", "dtp_blok_3x3")


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, quick=False, T=1)
  c = common.base_config()
  c.method = "abandit_nas"
  c.data.name = "digits"
  c.data.mean = (0.0,)
  c.data.std = (1.0,)
  c.data.search_split = 0.5
  c.data.batch_size = 64
  c.data.eval_batch_size = 120
  c.model.name = "abandit_search"
  c.model.kwargs = {"mean": (0.5,), "std": (0.5,)}
  c.model.init = "he_fout"
  c.nas = common.ml_collections.ConfigDict(dict(
      C=8, layers=2, num_cells=2, primitives=PRIMITIVES, affine=False, T=args.T, lam=0.7,
      reward="clean", reward_steps=-1, eval_bn="batch"))
  c.adv = _shared.adv_block(epsilon=0.1, step_size=0.04, num_steps=3,
                            eval_attacks=("clean", "pgd3"))
  c.num_epochs = num_search_samples(len(PRIMITIVES), args.T)   # 9
  c.optim.learning_rate = 0.05
  c.optim.weight_decay = 3e-4
  c.optim.schedule = "cosine"
  c.optim.grad_clip = 5.0
  c.log_every = 11
  c.eval_every = 10 ** 9        # once, at the end
  c.checkpoint_every = 10 ** 9
  c.progress = "lines"
  if args.quick:
    c.nas.primitives = ("max_pool_3x3", "skip_connect")
    c.adv.eval_attacks = ("clean",)   # one compiled eval: the test-sized run
    c.num_epochs = num_search_samples(2, args.T)   # 2
  return c
