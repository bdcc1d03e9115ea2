"""ABanditNAS evaluation network on digits: PGD vs clean training (arXiv 2008.00698, CPU-sized).

The CPU-sized counterpart of cifar10_eval_genotype1.py: the evaluation network of a genotype (by
default the released ABANDIT_CIFAR_1 cells; or the genotype.json a digits search wrote) with
C = 8 and 3 layers (cells a, b, c; layers 1 and 2 reduce: 8x8 -> 4x4 -> 2x2), no
auxiliary head, normalisation inside the model. Default: Madry PGD-7 adversarial training
(eps 0.1, step 0.025, random start, in [0, 1] pixel units); `:clean` trains the same network on
clean images only. At the end final_report.json, robust_eval.json and robust_eval.md hold the
accuracy under clean, FGSM, MI-FGSM (10 iterations, decay 1), PGD-7 and PGD-20 (eps 0.1,
step 0.025, BN in eval mode) on the 360 held-out digits (`defenses/defense_all.py` protocol).

Commands (the robustness pair):
  python -m launch.main --config=configs/abandit_nas/digits_eval.py --workdir=/tmp/abnas_digits_adv
  python -m launch.main --config=configs/abandit_nas/digits_eval.py:clean --workdir=/tmp/abnas_digits_clean
End-to-end pipeline (search -> genotype.json -> PGD training of the found network -> table):
  python -m launch.main --config=configs/abandit_nas/digits_search.py --workdir=/tmp/abnas_search
  python -m launch.main --config=configs/abandit_nas/digits_eval.py \
      --config.model.kwargs.genotype=/tmp/abnas_search/genotype.json --workdir=/tmp/abnas_eval
  cat /tmp/abnas_eval/robust_eval.md
  (equivalently `digits_eval.py:genotype=/tmp/abnas_search/genotype.json`).
Hardware: any CPU. Measured on a shared 2-core CPU (other jobs running, load average 3-8):
112 s (default, 10 epochs of 22 PGD-7 steps) and 54 s (`:clean`), most of it compilation.
Expected (seed 0, ABANDIT_CIFAR_1 cells, 10 epochs; accuracy % on the 360 test digits):
  training      clean  FGSM   MI-FGSM  PGD-7  PGD-20
  PGD-7 (adv)   98.06  89.44  88.06    88.89  87.78
  clean         98.33  65.56  46.39    46.94  37.78
tests/methods/abandit_robustness_test.py (3 epochs) asserts a PGD margin above 0.2.
The network of the digits search's genotype (pools, identity, Gabor, denoising; no convs)
reaches 90.83 / 59.17 / 53.33 / 55.28 / 53.33 with PGD-7 training (124 s).
Variants: `:clean` (no attack in training), `:quick` (a few steps of a C = 4 network),
`:epochs=N`, `:genotype=NAME_OR_PATH`.
"""
from configs import common
from configs.abandit_nas import _shared


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, quick=False, clean=False, epochs=10, genotype="ABANDIT_CIFAR_1")
  c = common.base_config()
  c.method = "adversarial"
  c.data.name = "digits"
  c.data.eval_split = "test"
  c.data.mean = (0.0,)            # data in [0, 1]; the model normalises inside
  c.data.std = (1.0,)
  c.data.batch_size = 64
  c.data.eval_batch_size = 120
  c.model.name = "abandit_network"
  c.model.init = "he_fout"
  c.model.kwargs = common.ml_collections.ConfigDict(dict(
      genotype=args.genotype, C=8, layers=3, auxiliary=False, manual_denoising=False,
      mean=(0.5,), std=(0.5,)))
  c.adv = _shared.adv_block(epsilon=0.1, step_size=0.025, num_steps=7,
                            eval_attacks=("clean", "pgd7"), robust_eval_at_end=True)
  if args.clean:
    c.adv.train_attack = "none"
  c.num_epochs = args.epochs
  c.optim.learning_rate = 0.05
  c.optim.weight_decay = 3e-4
  c.optim.schedule = "cosine"
  c.optim.grad_clip = 5.0
  c.log_every = 22                # one line per epoch (1437 // 64 = 22 steps)
  c.eval_every = 10 ** 9          # clean + PGD-7 once, at the end
  c.checkpoint_every = 10 ** 9
  c.progress = "lines"
  if args.quick:
    c.model.kwargs.C = 4
    c.model.kwargs.layers = 2
    c.adv.num_steps = 2
    c.adv.eval_attacks = ("clean",)   # the robust table at the end runs every attack
    c.data.batch_size = 32
    c.data.eval_batch_size = 120
    c.num_epochs = 1
    c.num_steps = 4
  return c
