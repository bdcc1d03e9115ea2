"""Every ABanditNAS paper config against the paper (arXiv 2008.00698) and the official code.

Official bczhangbczhang/ABanditNAS: `script/cifar10_darts_defense_all_{1,2}.sh` (C = 48, 10 layers,
he_fout init, BN momentum 0.1 / eps 1e-3, auxiliary tower, `--no_mannul` for genotype 2, eps 0.031,
step 0.0078, MI-FGSM 10 iterations), `defenses/defense_all.py` (clean, FGSM, MI-FGSM, PGD-7,
PGD-20; MNIST PGD-100 at eps 0.3, step 0.01), `attacks/advtrain.py` (normalisation inside the
model), `utils/attack_type.py` (MI-FGSM decay 1, PGD with random start). The search: Sec. 3 of
the paper (6 distinct cells, 9 ops without `none`, LCB sampling, UCB abandonment after K * T
samples, T = 3, lambda = 0.7). The evaluation training schedule is not in the paper; the configs
use the DARTS evaluation recipe (arXiv 1806.09055), checked as such. The numbers are written out
here, independently of configs/abandit_nas/_shared.py. Digits configs are CPU demonstrations and
are not checked.
"""
from __future__ import annotations

import importlib
import os

import numpy as np
import pytest

from jaxcompress.methods import abandit_nas, adversarial
from jaxcompress.nas import abandit_network as an

_FOLDER = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "abandit_nas")

# utils/genotypes_all.py PRIMITIVES (the duplicated conv entries once; no `none`).
PRIMITIVES = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
              "conv_3x3", "conv_5x5", "gab_filt_3x3", "dtp_blok_3x3")
# attacks/advtrain.py meanstd_dataset.
CIFAR_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR_STD = (0.24703233, 0.24348505, 0.26158768)
MNIST_MEAN = (0.13066051707548254,)
MNIST_STD = (0.30810780244715075,)
# (module, genotype, hand-placed denoising blocks `mannul`)
CIFAR_EVAL = [("cifar10_eval_genotype1", "ABANDIT_CIFAR_1", True),
              ("cifar10_eval_genotype2", "ABANDIT_CIFAR_2", False)]


def _load(name, arg=None):
  return importlib.import_module(f"configs.abandit_nas.{name}").get_config(arg)


def test_every_paper_config_is_checked():
  names = {f[:-3] for f in os.listdir(_FOLDER)
           if f.endswith(".py") and not f.startswith("_") and not f.startswith("digits")}
  assert names == {n for n, *_ in CIFAR_EVAL} | {"cifar10_search", "mnist_eval"}


def _check_cifar10_in_unit_range(d):
  # Images stay in [0, 1] (eps is in [0, 1] units); the model normalises them itself.
  assert d.name == "cifar10" and d.eval_split == "test"
  assert tuple(d.mean) == (0.0, 0.0, 0.0) and tuple(d.std) == (1.0, 1.0, 1.0)
  assert d.crop_padding == 4 and d.flip                # crop 32 pad 4 + flip


def _check_pgd(adv, eps, step, steps):
  assert adv.train_attack == "pgd" and adv.random_start
  np.testing.assert_allclose((adv.epsilon, adv.step_size), (eps, step))
  assert adv.num_steps == steps


@pytest.mark.parametrize("name,genotype,manual", CIFAR_EVAL)
def test_cifar10_eval_matches_official_scripts(name, genotype, manual):
  c = _load(name)
  assert c.method == "adversarial" and c.model.name == "abandit_network"
  assert c.model.init == "he_fout"                     # --model_init he_fout
  k = c.model.kwargs
  assert (k.genotype, k.C, k.layers, k.auxiliary, k.manual_denoising) == (
      genotype, 48, 10, True, manual)
  _check_cifar10_in_unit_range(c.data)
  # PGD-7 adversarial training, eps 8/255 ~ 0.031, step 2/255 ~ 0.0078, random start.
  _check_pgd(c.adv, 0.031, 0.0078, 7)
  assert c.adv.robust_eval_at_end
  assert set(c.adv.robust_eval_attacks) == {"clean", "fgsm", "mi_fgsm", "pgd7", "pgd20"}
  assert (c.adv.mi_fgsm_steps, c.adv.mi_fgsm_decay) == (10, 1.0)   # --nb_iter 10, decay 1
  # The network the method builds: normalisation inside, BN eps 1e-3, the released genotype.
  model = adversarial.AdversarialTraining(c, steps_per_epoch=10, total_steps=100).model
  np.testing.assert_allclose(model.mean, CIFAR_MEAN)
  np.testing.assert_allclose(model.std, CIFAR_STD)
  assert model.bn_epsilon == 1e-3                      # --bn_eps 1e-3
  assert model.genotype == an.get_genotype(genotype)
  # Training schedule: the DARTS evaluation recipe (the paper gives none).
  assert (c.data.batch_size, c.num_epochs) == (96, 600)
  o = c.optim
  assert (o.name, o.learning_rate, o.momentum, o.weight_decay, o.schedule, o.grad_clip) == (
      "sgd", 0.025, 0.9, 3e-4, "cosine", 5.0)
  assert c.adv.aux_weight == 0.4 and k.drop_path_prob == 0.2


def test_cifar10_search_matches_paper():
  c = _load("cifar10_search")
  assert c.method == "abandit_nas"
  _check_cifar10_in_unit_range(c.data)
  assert c.data.search_split == 0.5                    # train on one half, reward on the other
  n = c.nas
  assert (n.num_cells, n.layers) == (6, 6)             # 6 distinct single-input cells
  assert tuple(n.primitives) == PRIMITIVES and "none" not in n.primitives
  assert (n.T, n.lam) == (3, 0.7)
  # One sampled architecture (one epoch of adversarial training) per step of the anti-bandit:
  # T * sum_{k=2..9} k samples until one op per edge is left.
  assert c.num_epochs == 3 * (2 + 3 + 4 + 5 + 6 + 7 + 8 + 9) == 132
  _check_pgd(c.adv, 0.031, 0.0078, 7)                  # PGD-7 adversarial training in the search
  m = abandit_nas.ABanditNAS(c, steps_per_epoch=10, total_steps=100)
  np.testing.assert_allclose(m.model.mean, CIFAR_MEAN)
  np.testing.assert_allclose(m.model.std, CIFAR_STD)
  assert m.model.num_cells == 6


def test_mnist_eval_matches_release():
  c = _load("mnist_eval")
  assert c.method == "adversarial" and c.model.name == "abandit_network"
  k = c.model.kwargs
  assert (k.genotype, k.C, k.layers, k.auxiliary, k.manual_denoising) == (
      "ABANDIT_MINIST_NORMAL_MANNUAL_1", 16, 6, False, True)
  assert c.data.name == "mnist" and tuple(c.data.mean) == (0.0,) and tuple(c.data.std) == (1.0,)
  _check_pgd(c.adv, 0.3, 0.01, 40)                     # PGD-40, eps 0.3, step 0.01
  assert set(c.adv.eval_attacks) == {"clean", "pgd100"}   # defense_all.py MNIST: PGD-100
  model = adversarial.AdversarialTraining(c, steps_per_epoch=10, total_steps=100).model
  np.testing.assert_allclose(model.mean, MNIST_MEAN)
  np.testing.assert_allclose(model.std, MNIST_STD)
  assert model.bn_epsilon == 1e-3
