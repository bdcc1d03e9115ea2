"""Retraining a BNAS-searched cell as an XNOR-binarized network on scikit-learn's digits (CPU).

BNAS (Chen et al., arXiv 1911.10862) retrains its found cells as binarized networks (XNOR-Net or
PCNN convolutions) with the DARTS evaluation recipe; this is `configs/bnas/cifar10_eval.py`
shrunk to a CPU run, identical to `configs/pc_darts/digits_eval.py` (5 cells, C = 12, aux head
0.4, drop path 0.2, cutout 4 px, SGD 0.05 cosine) except for 30 epochs instead of 20 and the
cells' sep/dil convs, which are XNOR-binarized (`config.model.kwargs.op_set = "binary"`:
weights a * sign(W), real activations; `:1bit` binarizes the activations too). Stem, preprocessing 1x1 convs, auxiliary head
and classifier stay float.

Pipeline (search, then retrain the found cell):
  python -m launch.main --config=configs/bnas/digits_search.py --workdir=/tmp/bnas_digits
  python -m launch.main --config=configs/bnas/digits_eval.py \
      --config.model.kwargs.genotype=/tmp/bnas_digits/genotype.json --workdir=/tmp/bnas_eval
  (or `--config=configs/bnas/digits_eval.py:genotype=/tmp/bnas_digits/genotype.json`; the default
  genotype is /tmp/bnas_digits/genotype.json; `:quick` trains 2 epochs of a 3-cell, C = 4 net.)
Hardware: any CPU (2 cores).
Expected: eval accuracy >= 0.90 (see BENCHMARKS.md for the measured value and wall time).
"""
from configs import common
from configs.pc_darts import digits_eval as pc_darts_digits_eval

DEFAULT_GENOTYPE = "/tmp/bnas_digits/genotype.json"


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, quick=False, genotype=DEFAULT_GENOTYPE)
  one_bit = "1bit" in (arg or "").split(",")
  c = pc_darts_digits_eval.get_config(",".join(
      ["quick"] * bool(args.quick) + [f"genotype={args.genotype}"]))
  c.model.kwargs.op_set = "binary"
  c.model.kwargs.binary_activations = one_bit
  # XNOR cells fit the digits more slowly than float ones: 30 epochs instead of 20.
  if not args.quick:
    c.num_epochs = 30
  return c
