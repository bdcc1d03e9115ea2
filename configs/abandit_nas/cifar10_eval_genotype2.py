"""ABANDIT_CIFAR_2 adversarially trained on CIFAR-10 (ABanditNAS release, arXiv 2008.00698).

The second released genotype; the official README calls it "a better structure that we search
for later" — it is NOT the paper's model. Same network as genotype 1 but without the hand-placed
denoising blocks (`--no_mannul` in script/cifar10_darts_defense_all_2.sh). PGD-7 training,
robust table (clean, FGSM, MI-FGSM, PGD-7, PGD-20; eps 0.031, step 0.0078) at the end.

Command:
  python -m launch.main --config=configs/abandit_nas/cifar10_eval_genotype2.py --workdir=$HOME/runs/abnas10_2
Hardware: 1 GPU. Measured on one H100: 0.097 s per PGD-7 training step at batch 96 (about 9 hours
for 600 epochs).
Expected: no number in the paper; the release claims it beats ABANDIT_CIFAR_1 (clean about
90.6 %, PGD-7 about 58.7 %, not confirmed against the paper).
Released weights: the official `weights/ABANDIT_CIFAR_2.pth.tar` converts with
`jaxcompress.models.official_weights.abandit_network_from_torch(path, "ABANDIT_CIFAR_2")`
into (model, variables) for `model.apply(variables, x, train=False)`, x in [0, 1] (needs torch).
Variants: `:quick`.
"""
from configs import common
from configs.abandit_nas import _shared


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, quick=False)
  return _shared.eval_config("ABANDIT_CIFAR_2", manual_denoising=False, quick=args.quick)
