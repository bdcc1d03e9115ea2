"""Every PC-DARTS and BNAS paper config against the papers and the official PC-DARTS code.

PC-DARTS: Xu et al., arXiv 1907.05737 (ICLR 2020) Sec. 4 and the official yuhuixu1993/PC-DARTS
`train_search.py` / `train.py` defaults; DARTS: Liu et al., arXiv 1806.09055 Sec. 3 (evaluation
recipe, drop path 0.2). BNAS: Chen et al., arXiv 1911.10862 (AAAI 2020) Sec. 3 and the journal
version arXiv 2009.04247 (1-bit BNAS, UCB abandonment): the PC-DARTS search with one op per edge
abandoned per reduction step, 8 ops -> 1 in 7 steps. The numbers are written out here,
independently of the configs and of `pc_darts.default_nas_config`. Digits configs are CPU
demonstrations and are not checked.
"""
from __future__ import annotations

import importlib
import os

import numpy as np
import pytest

from jaxcompress.methods import bnas, pc_darts
from jaxcompress.nas import eval_network
from jaxcompress.optim import builder

_CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")

DARTS_OPS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
             "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
# yuhuixu1993/PC-DARTS genotypes.py PC_DARTS_cifar (the cell of Table 1).
PC_DARTS_CIFAR_NORMAL = [
    ("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
    ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)]
PC_DARTS_CIFAR_REDUCE = [
    ("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
    ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)]
# quark0/darts cnn/utils.py _data_transforms_cifar10 (also PC-DARTS utils.py).
CIFAR_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR_STD = (0.24703233, 0.24348505, 0.26158768)

PC_DARTS_SEARCH = ["cifar10_search"]
PC_DARTS_EVAL = ["cifar10_eval"]
# (module, arg, op_set, binary activations, abandon rule)
BNAS_SEARCH = [
    ("cifar10_search", None, "binary", False, "performance"),
    ("cifar10_search_xnor", None, "binary", False, "performance"),
    ("cifar10_search_pcnn", None, "pcnn", False, "performance"),
    ("cifar10_search_1bit", None, "binary", True, "ucb"),
    ("cifar10_search", "1bit", "binary", True, "ucb"),
    ("cifar10_search", "float", "darts", False, "performance"),
]
# (arg, op_set, binary activations)
BNAS_EVAL = [(None, "binary", False), ("pcnn", "pcnn", False), ("1bit", "binary", True)]


def _load(paper, name, arg=None):
  return importlib.import_module(f"configs.{paper}.{name}").get_config(arg)


def _paper_configs(paper):
  folder = os.path.join(_CONFIGS, paper)
  return {f[:-3] for f in os.listdir(folder)
          if f.endswith(".py") and not f.startswith("_") and not f.startswith("digits")}


def test_every_paper_config_is_checked():
  assert _paper_configs("pc_darts") == set(PC_DARTS_SEARCH + PC_DARTS_EVAL)
  assert _paper_configs("bnas") == {n for n, *_ in BNAS_SEARCH} | {"cifar10_eval"}


def _check_cifar10(d, batch_size):
  assert d.name == "cifar10" and d.eval_split == "test"
  assert d.batch_size == batch_size
  assert d.crop_padding == 4 and d.flip                # random crop 32 pad 4, h-flip
  np.testing.assert_allclose(d.mean, CIFAR_MEAN, atol=1e-4)
  np.testing.assert_allclose(d.std, CIFAR_STD, atol=1e-4)


def _check_cosine_to_zero(optim, lr, total=1000):
  # CosineAnnealingLR(optimizer, epochs, eta_min = 0) (learning_rate_min 0.0 in PC-DARTS).
  sched = builder.make_schedule(optim, total, 10)
  for step in (0, total // 4, total // 2, total):
    np.testing.assert_allclose(float(sched(step)), lr * 0.5 * (1 + np.cos(np.pi * step / total)),
                               atol=1e-7)


def _check_search(c):
  """The PC-DARTS search recipe (train_search.py defaults; arXiv 1907.05737 Sec. 4.2)."""
  _check_cifar10(c.data, 256)
  assert c.data.search_split == 0.5                    # --train_portion 0.5
  assert c.num_epochs == 50
  o = c.optim
  assert (o.name, o.learning_rate, o.momentum, o.weight_decay, o.grad_clip) == (
      "sgd", 0.1, 0.9, 3e-4, 5.0)
  _check_cosine_to_zero(o, 0.1)
  n = c.nas
  assert (n.init_channels, n.layers, n.steps, n.multiplier, n.stem_multiplier) == (16, 8, 4, 4, 3)
  assert n.partial_channels == 4 and n.edge_normalization
  assert tuple(n.primitives) == DARTS_OPS
  a = n.arch_optim
  assert (a.name, a.learning_rate, a.b1, a.b2, a.weight_decay) == ("adam", 6e-4, 0.5, 0.999, 1e-3)
  assert a.schedule == "constant"
  assert n.arch_start_epoch == 15                      # `if epoch >= 15: architect.step(...)`


@pytest.mark.parametrize("name", PC_DARTS_SEARCH)
def test_pc_darts_search_matches_paper(name):
  c = _load("pc_darts", name)
  assert c.method == "pc_darts"
  _check_search(c)
  assert not c.nas.unrolled                            # PC-DARTS: first order
  unrolled = _load("pc_darts", name, "unrolled").nas
  assert unrolled.unrolled and unrolled.hvp == "finite_difference"   # DARTS 2nd order, Eq. 7-8
  # The method reads the same settings into its supernet.
  m = pc_darts.PCDarts(c, steps_per_epoch=10, total_steps=100)
  assert (m.model.init_channels, m.model.layers, m.model.partial_channels) == (16, 8, 4)
  assert m.model.edge_norm and tuple(m.model.primitives) == DARTS_OPS


def _check_eval(c, drop_path):
  """The DARTS / PC-DARTS evaluation recipe (train.py defaults, `--auxiliary --cutout`)."""
  assert c.method == "nas_eval" and c.model.name == "darts_eval"
  _check_cifar10(c.data, 96)
  assert not c.data.get("search_split")                # the full training set
  k = c.model.kwargs
  assert (k.C, k.num_cells, k.auxiliary) == (36, 20, True)
  assert c.num_epochs == 600
  o = c.optim
  assert (o.name, o.learning_rate, o.momentum, o.weight_decay, o.grad_clip) == (
      "sgd", 0.025, 0.9, 3e-4, 5.0)
  _check_cosine_to_zero(o, 0.025)
  e = c.nas_eval
  assert (e.aux_weight, e.cutout) == (0.4, 16)
  assert e.drop_path_prob == drop_path


@pytest.mark.parametrize("name", PC_DARTS_EVAL)
def test_pc_darts_eval_matches_paper(name):
  c = _load("pc_darts", name)
  _check_eval(c, drop_path=0.3)                        # PC-DARTS train.py default
  assert c.model.kwargs.op_set == "darts" and not c.model.kwargs.binary_activations
  g = eval_network.get_genotype(c.model.kwargs.genotype)
  assert [tuple(e) for e in g.normal] == PC_DARTS_CIFAR_NORMAL
  assert [tuple(e) for e in g.reduce] == PC_DARTS_CIFAR_REDUCE
  assert list(g.normal_concat) == list(g.reduce_concat) == [2, 3, 4, 5]


@pytest.mark.parametrize("name,arg,op_set,one_bit,rule", BNAS_SEARCH)
def test_bnas_search_matches_paper(name, arg, op_set, one_bit, rule):
  c = _load("bnas", name, arg)
  assert c.method == "bnas"
  _check_search(c)                                     # BNAS searches with PC-DARTS' recipe
  n = c.nas
  assert (n.op_set, n.binary_activations, n.abandon_rule) == (op_set, one_bit, rule)
  # One op abandoned per edge and reduction step: 8 ops -> 1 in 7 steps, after the PC-DARTS
  # warm-up, the last one at the end of the search.
  assert n.num_reductions == len(DARTS_OPS) - 1 == 7
  assert n.reduce_start == 15
  assert n.reduce_start + n.num_reductions * n.reduce_every == c.num_epochs
  m = bnas.BNAS(c, steps_per_epoch=10, total_steps=100)
  assert (m.rule, m.reduce_start, m.reduce_every, m.num_reductions) == (rule, 15, 5, 7)


@pytest.mark.parametrize("arg,op_set,one_bit", BNAS_EVAL)
def test_bnas_eval_is_the_darts_recipe_on_binarized_cells(arg, op_set, one_bit):
  c = _load("bnas", "cifar10_eval", arg)
  _check_eval(c, drop_path=0.2)                        # DARTS' drop path (arXiv 1806.09055)
  assert (c.model.kwargs.op_set, c.model.kwargs.binary_activations) == (op_set, one_bit)
