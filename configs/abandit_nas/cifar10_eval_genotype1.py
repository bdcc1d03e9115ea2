"""ABanditNAS-10 (genotype ABANDIT_CIFAR_1) adversarially trained on CIFAR-10 (arXiv 2008.00698).

The paper's network: 10 cells a,a,b,b,c,d,d,e,f,f, C = 48, reductions at cells 3 and 6,
hand-placed denoising blocks after cells 2, 5, 7 (`mannul`), auxiliary head, normalisation inside
the model. PGD-7 training (eps 0.031, step 0.0078, random start); at the end final_report.json /
robust_eval holds clean, FGSM, MI-FGSM (10 it., decay 1), PGD-7 and PGD-20 accuracy
(`defenses/defense_all.py` protocol, eps 0.031, step 0.0078, BN in eval mode).

Command:
  python -m launch.main --config=configs/abandit_nas/cifar10_eval_genotype1.py --workdir=$HOME/runs/abnas10
Hardware: 1 GPU. Measured on one H100 (jax 0.11.2): 0.099 s per PGD-7 training step at batch
96 after 41 s of compilation, i.e. about 52 s per epoch, about 9 hours for 600 epochs.
Expected (not confirmed against the paper's table): clean about 90.6 %, PGD-7 about 58.7 %.
Training recipe (paper silent; DARTS evaluation-like): SGD 0.025 cosine, momentum 0.9, weight
decay 3e-4, batch 96, 600 epochs, drop path 0.2, auxiliary weight 0.4, gradient clip 5.
Released weights: the official `weights/ABANDIT_CIFAR_1.pth.tar` converts with
`jaxcompress.models.official_weights.abandit_network_from_torch(path, "ABANDIT_CIFAR_1")`
into (model, variables) for `model.apply(variables, x, train=False)`, x in [0, 1] (needs torch).
Variants: `:quick` (2 steps of a C = 8 network).
"""
from configs import common
from configs.abandit_nas import _shared


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, quick=False)
  return _shared.eval_config("ABANDIT_CIFAR_1", manual_denoising=True, quick=args.quick)
