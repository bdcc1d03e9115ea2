"""Retraining a BNAS cell as a binarized network on CIFAR-10 (Chen et al., "Binarized Neural
Architecture Search", arXiv 1911.10862, AAAI 2020: BNAS 96.53 % vs 97.22 % for the full-precision
counterpart; per-model table (XNOR / PCNN, params, GPU-days) unconfirmed: check the paper).

The DARTS evaluation recipe (`configs/pc_darts/cifar10_eval.py`: 20 cells, C = 36, aux head 0.4,
drop path 0.2 linear, cutout 16, batch 96, SGD 0.025 cosine, weight decay 3e-4, grad clip 5,
600 epochs) on the `darts_eval` network with binarized cells (CHOICE: BNAS's larger evaluation
nets and its exact schedule could not be confirmed from the paper, so the DARTS sizes are kept;
widen with --config.model.kwargs.C=...):
  default  XNOR cells (`op_set = "binary"`: a * sign(W) weights, real activations; XNOR-BNAS);
  `:pcnn`  PCNN projection cells with the projection loss (lambda 1e-4, eta 1; PCNN-BNAS);
  `:1bit`  XNOR cells with sign activations too (the journal's 1-bit BNAS).
Stem, cell preprocessing, auxiliary head and classifier stay float.

Genotype: `:genotype=PATH` or `--config.model.kwargs.genotype=PATH` (a BNAS search's
genotype.json, e.g. from configs/bnas/cifar10_search_xnor.py); default
~/runs/bnas/genotype.json. `:quick` trains 20 steps of an 8-cell, C = 16 network (any genotype
name such as `genotype=PC_DARTS` works for a smoke run).

Command:
  python -m launch.main --config=configs/bnas/cifar10_search_xnor.py --workdir=$HOME/runs/bnas
  python -m launch.main --config=configs/bnas/cifar10_eval.py --workdir=$HOME/runs/bnas_eval
Data: `tfds build cifar10 --file_format=array_record` once.
Hardware: 1 GPU, about as long as the float DARTS evaluation (binarization is simulated).
Expected: test accuracy about 96 % (paper 96.53 % for BNAS).
"""
from configs import common
from configs.pc_darts import cifar10_eval as pc_darts_eval


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, quick=False, pcnn=False, genotype="~/runs/bnas/genotype.json")
  one_bit = "1bit" in (arg or "").split(",")
  c = pc_darts_eval.get_config(",".join(["quick"] * bool(args.quick)
                                        + [f"genotype={args.genotype}"]))
  c.model.kwargs.op_set = "pcnn" if args.pcnn else "binary"
  c.model.kwargs.binary_activations = one_bit
  c.nas_eval.drop_path_prob = 0.2
  return c
