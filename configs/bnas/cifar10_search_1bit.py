"""1-bit BNAS search on CIFAR-10 (Chen et al., "Binarized Neural Architecture Search for Efficient
Object Recognition", arXiv 2009.04247, journal version): weights AND activations binarized, ops
abandoned by the upper confidence bound m_k + sqrt(2 ln N / n_k) of the sampled-network accuracy.

`configs/bnas/cifar10_search.py:1bit`: PC-DARTS search settings (8 cells, C = 16, K = 4, batch
256, 50 epochs, Adam from epoch 15), XNOR sep/dil convs with sign activations, uniform sampling
of alive ops, bandit EMA lambda 0.7 (CHOICE, as ABanditNAS), one removal per edge every 5 epochs
from epoch 15.

Command:
  python -m launch.main --config=configs/bnas/cifar10_search_1bit.py --workdir=$HOME/runs/bnas1
  python -m launch.main --config=configs/bnas/cifar10_eval.py:1bit,genotype=$HOME/runs/bnas1/genotype.json \
      --workdir=$HOME/runs/bnas1_eval
Data: `tfds build cifar10 --file_format=array_record` once.
Hardware: 1 GPU, a few hours.
Expected: genotype.json with one op per edge; 1-bit accuracy numbers unconfirmed: check the paper.
"""
from configs.bnas import cifar10_search


def get_config(arg: str | None = None):
  return cifar10_search.get_config(",".join(filter(None, [arg, "1bit"])))
