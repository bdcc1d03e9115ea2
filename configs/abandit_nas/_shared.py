"""Pieces shared by the ABanditNAS configs (arXiv 2008.00698)."""
from __future__ import annotations

import ml_collections

from configs import common


def adv_block(epsilon=0.031, step_size=0.0078, num_steps=7, eval_attacks=("clean", "pgd7"),
              robust_eval_at_end=False, robust_eval_attacks=("clean", "fgsm", "mi_fgsm", "pgd7",
                                                              "pgd20")):
  a = ml_collections.ConfigDict()
  a.epsilon = epsilon
  a.step_size = step_size
  a.num_steps = num_steps
  a.random_start = True
  a.train_attack = "pgd"
  a.attack_bn = "train"
  a.eval_attacks = tuple(eval_attacks)
  a.mi_fgsm_steps = 10
  a.mi_fgsm_decay = 1.0
  a.aux_weight = 0.4
  a.robust_eval_at_end = robust_eval_at_end
  a.robust_eval_attacks = tuple(robust_eval_attacks)
  return a


def cifar10_data(c: ml_collections.ConfigDict) -> None:
  """CIFAR-10 in [0, 1] (normalisation inside the model), crop 32 pad 4 + flip."""
  c.data.name = "cifar10"
  c.data.eval_split = "test"
  c.data.mean = (0.0, 0.0, 0.0)
  c.data.std = (1.0, 1.0, 1.0)
  c.data.crop_padding = 4
  c.data.flip = True
  c.data.num_workers = 4


def eval_config(genotype: str, manual_denoising: bool, quick: bool) -> ml_collections.ConfigDict:
  """Adversarial training of the ABanditNAS-10 evaluation network (C = 48, 10 layers, aux)."""
  c = common.base_config()
  c.method = "adversarial"
  cifar10_data(c)
  c.data.batch_size = 96
  c.data.eval_batch_size = 250
  c.model.name = "abandit_network"
  c.model.init = "he_fout"
  c.model.kwargs = ml_collections.ConfigDict(dict(
      genotype=genotype, C=48, layers=10, auxiliary=True, manual_denoising=manual_denoising,
      drop_path_prob=0.2))
  c.adv = adv_block(robust_eval_at_end=True)
  # DARTS evaluation recipe (the paper states no evaluation schedule; DARTS's is used).
  c.num_epochs = 600
  c.optim.name = "sgd"
  c.optim.learning_rate = 0.025
  c.optim.momentum = 0.9
  c.optim.weight_decay = 3e-4
  c.optim.schedule = "cosine"
  c.optim.grad_clip = 5.0
  c.log_every = 100
  c.eval_every = 20 * (50000 // 96)   # clean + PGD-7 every 20 epochs
  if quick:
    c.model.kwargs.C = 8
    c.data.batch_size = 16
    c.data.eval_batch_size = 16
    c.data.num_workers = 0
    c.num_steps = 2
    c.eval_every = -1
    c.adv.num_steps = 2
    c.adv.robust_eval_at_end = False
  return c
