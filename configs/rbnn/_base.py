"""The official RBNN recipe (lmbxmu/RBNN `cifar/utils/options.py`, `cifar/main.py`) as a base.

SGD lr 0.1, momentum 0.9, weight decay 1e-4 on EVERY parameter (BN, alpha, theta included),
5-epoch linear warm-up then cosine to 0; 1w1a `"rbnn"` layer set (float stem and classifier,
hardtanh, BN scale init 1e-8); rotation solve with 3 alternations at every epoch start; surrogate
schedule T_min = 1e-2, T_max = 10. CIFAR images are normalised with the ImageNet mean/std, as the
official data loader does.
"""
from __future__ import annotations

import ml_collections

from configs import common


def rbnn_config() -> ml_collections.ConfigDict:
  """Base config shared by configs/rbnn/*.py (CIFAR-10 defaults)."""
  c = common.base_config()
  c.method = "rbnn"
  c.model.layers = "rbnn"
  c.model.kwargs = ml_collections.ConfigDict({"bn_before_classifier": True})

  c.data.name = "cifar10"
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.batch_size = 256
  c.data.eval_batch_size = 128
  c.data.mean = common.IMAGENET_MEAN   # official CIFAR loader uses ImageNet statistics
  c.data.std = common.IMAGENET_STD
  c.data.crop_padding = 4
  c.data.flip = True
  c.data.num_workers = 4

  c.optim.name = "sgd"
  c.optim.learning_rate = 0.1
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  c.optim.schedule = "warmup_cosine"
  c.optim.warmup_epochs = 5.0

  c.rbnn = ml_collections.ConfigDict()
  c.rbnn.rounds = 3            # alternations of the rotation solve per epoch
  c.rbnn.t_min = 1e-2
  c.rbnn.t_max = 10.0
  c.rbnn.rotate = True         # False: keep the Haar init rotations (ablation)
  c.rbnn.rotation_every = 1    # official --rotation_update
  c.rbnn.theta_init = "uniform"  # official rand * pi/2; "pi_2" = the layer's constant init

  c.num_epochs = 1000
  c.log_every = 100
  return c


def shrink_for_smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`:quick`: a few steps on the real dataset, to check a launch works end to end."""
  c.num_steps = 20
  c.log_every = 5
  c.data.num_workers = 0
  return c
