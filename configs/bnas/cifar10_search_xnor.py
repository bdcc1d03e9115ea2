"""BNAS search on CIFAR-10 with XNOR-Net binarized ops (Chen et al., arXiv 1911.10862, AAAI 2020:
"XNOR-BNAS"; the paper claims a search about 40 % faster than PC-DARTS).

`configs/bnas/cifar10_search.py` as it is: PC-DARTS search settings (8 cells, C = 16, K = 4, edge
normalisation, batch 256, train halves, SGD 0.1 cosine, Adam 6e-4 from epoch 15, 50 epochs) on
XNOR sep/dil convs (a * sign(W), a = mean |W| per filter, real activations), performance-based
abandonment of one op per edge every 5 epochs from epoch 15 (7 steps: 8 ops -> 1).

Command:
  python -m launch.main --config=configs/bnas/cifar10_search_xnor.py --workdir=$HOME/runs/bnas
  then configs/bnas/cifar10_eval.py (default genotype path ~/runs/bnas/genotype.json).
Data: `tfds build cifar10 --file_format=array_record` once.
Hardware: 1 GPU, a few hours (paper: about 0.09-0.1 GPU-days, unconfirmed).
Expected: genotype.json with one surviving op per edge, 2 inputs per node; retrained (XNOR cells)
about 96 % (paper 96.53 %).
"""
from configs.bnas import cifar10_search


def get_config(arg: str | None = None):
  return cifar10_search.get_config(arg)
