"""BNAS search on CIFAR-10 with PCNN projection-binarized ops (Chen et al., arXiv 1911.10862,
AAAI 2020: "PCNN-BNAS"; PCNN: Gu et al., arXiv 1811.12755).

`configs/bnas/cifar10_search.py` (PC-DARTS search settings, performance-based abandonment every 5
epochs from epoch 15) with the sep/dil convs as PCNN projection convolutions
(`nas.op_set = "pcnn"`: C_hat = a * sign(W o C), a = mean |C|, J = 1 projection).
CHOICE / limitation: the search step trains the PCNN kernels through the projection's
straight-through gradient only; the projection loss L_P is applied when the found cell is
retrained (`configs/bnas/cifar10_eval.py:pcnn`), not during the search.

Command:
  python -m launch.main --config=configs/bnas/cifar10_search_pcnn.py --workdir=$HOME/runs/bnas_pcnn
  python -m launch.main --config=configs/bnas/cifar10_eval.py:pcnn,genotype=$HOME/runs/bnas_pcnn/genotype.json \
      --workdir=$HOME/runs/bnas_pcnn_eval
Data: `tfds build cifar10 --file_format=array_record` once.
Hardware: 1 GPU, a few hours.
Expected: genotype.json with one op per edge; retrained PCNN cells about 96-97 % (paper: PCNN-BNAS
above XNOR-BNAS; exact numbers unconfirmed: check the paper's Table 1).
"""
from configs.bnas import cifar10_search


def get_config(arg: str | None = None):
  c = cifar10_search.get_config(arg)
  c.nas.op_set = "pcnn"
  return c
