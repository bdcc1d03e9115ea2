"""Shared pieces of the CycleGAN and Pix2Pix configs (DMAD teachers, arXiv 2011.08382 Sec. 4)."""
from __future__ import annotations

import ml_collections

from configs import common


def gan_config(method: str) -> ml_collections.ConfigDict:
  """The base experiment with the official optimizer: Adam 2e-4, betas (0.5, 0.999), no weight
  decay, constant then linear decay ("gan_linear"; n_epochs / n_epochs_decay set by the caller),
  one evaluation per epoch with the method's eval_step."""
  c = common.base_config()
  c.method = method
  c.model = ml_collections.ConfigDict()
  c.optim = ml_collections.ConfigDict({
      "name": "adam", "learning_rate": 2e-4, "b1": 0.5, "b2": 0.999, "eps": 1e-8,
      "weight_decay": 0.0, "schedule": "gan_linear", "n_epochs": 100, "n_epochs_decay": 100,
      "epoch_count": 1, "groups": []})
  c.gan = ml_collections.ConfigDict()
  c.gan.init_type = "normal"   # official init_weights(net, 'normal', 0.02)
  c.gan.init_gain = 0.02
  c.data.transform = "gan_resize_crop"
  c.data.mean = (0.5,)          # unused: the transform already maps images to [-1, 1]
  c.data.std = (0.5,)
  return c


def network(name: str, layers: str = "float", **kwargs) -> ml_collections.ConfigDict:
  """A `config.model.generator` / `.discriminator` block."""
  return ml_collections.ConfigDict({"name": name, "layers": layers,
                                    "layer_kwargs": ml_collections.ConfigDict(),
                                    "kwargs": ml_collections.ConfigDict(kwargs)})


def set_epochs(c: ml_collections.ConfigDict, n_epochs: int, n_epochs_decay: int) -> None:
  """`n_epochs` at the initial learning rate, then `n_epochs_decay` of linear decay."""
  c.optim.n_epochs = n_epochs
  c.optim.n_epochs_decay = n_epochs_decay
  c.num_epochs = n_epochs + n_epochs_decay
