"""Retraining a searched PC-DARTS cell on scikit-learn's digits (CPU; offline 8x8 grey images).

The DARTS evaluation recipe of `configs/pc_darts/cifar10_eval.py` (Xu et al., PC-DARTS, arXiv
1907.05737; DARTS `cnn/train.py`) shrunk to a CPU run: `darts_eval` network of the genotype with
5 cells (reductions at cells 1 and 3, auxiliary head after cell 3, aux weight 0.4), C = 12,
drop path 0.2 scaled linearly over the epochs, cutout 4 px (CIFAR's 16 px is half the side of
a 32 px image; 4 px is half the side of an 8 px digit), SGD 0.05 momentum 0.9 weight decay 3e-4 cosine, grad clip 5,
batch 64, 20 epochs on the 1437 digits train images, evaluated on the 360 test images.

Pipeline (search, then retrain the found cell):
  python -m launch.main --config=configs/pc_darts/digits_search.py --workdir=/tmp/pcdarts_digits
  python -m launch.main --config=configs/pc_darts/digits_eval.py \
      --config.model.kwargs.genotype=/tmp/pcdarts_digits/genotype.json --workdir=/tmp/pcdarts_eval
  (or `--config=configs/pc_darts/digits_eval.py:genotype=/tmp/pcdarts_digits/genotype.json`;
  the default genotype is /tmp/pcdarts_digits/genotype.json; a published name such as
  `genotype=PC_DARTS` works too; `:quick` trains 2 epochs of a 3-cell, C = 4 network.)
Hardware: any CPU (2 cores).
Expected: eval accuracy >= 0.90 (see BENCHMARKS.md for the measured value and wall time).
"""
import ml_collections

from configs import common

DEFAULT_GENOTYPE = "/tmp/pcdarts_digits/genotype.json"


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, quick=False, genotype=DEFAULT_GENOTYPE, binary=False)
  c = common.base_config()
  c.method = "nas_eval"
  c.data.name = "digits"
  c.data.crop_padding = 1
  c.data.batch_size = 64
  c.data.eval_batch_size = 120
  c.model.name = "darts_eval"
  c.model.num_classes = 10
  c.model.kwargs.genotype = args.genotype
  c.model.kwargs.C = 4 if args.quick else 12
  c.model.kwargs.num_cells = 3 if args.quick else 5
  c.model.kwargs.auxiliary = True
  c.model.kwargs.op_set = "binary" if args.binary else "darts"
  c.model.kwargs.binary_activations = False
  c.num_epochs = 2 if args.quick else 20
  c.log_every = 22
  c.optim.name = "sgd"
  c.optim.learning_rate = 0.05
  c.optim.momentum = 0.9
  c.optim.weight_decay = 3e-4
  c.optim.schedule = "cosine"
  c.optim.grad_clip = 5.0  # DARTS train.py: nn.utils.clip_grad_norm_(parameters, 5)
  c.nas_eval = ml_collections.ConfigDict(dict(aux_weight=0.4, drop_path_prob=0.2, cutout=4))
  return c
