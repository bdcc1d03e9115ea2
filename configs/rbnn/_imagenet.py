"""Shared ImageNet block of the RBNN ImageNet configs (official `imagenet/main.py` recipe)."""
from __future__ import annotations

import ml_collections

from configs import common
from configs.rbnn import _base


def imagenet_config(model_name: str) -> ml_collections.ConfigDict:
  """RBNN 1w1a Bi-Real ResNet on ImageNet: batch 512, 150 epochs, the official optimiser."""
  c = _base.rbnn_config()
  c.model.name = model_name
  c.model.num_classes = 1000
  c.model.kwargs = ml_collections.ConfigDict({"bireal": True, "bn_before_classifier": True})
  c.data.name = "imagenet2012"
  c.data.train_split = "train"
  c.data.eval_split = "validation"
  c.data.batch_size = 512
  c.data.eval_batch_size = 256
  c.data.mean = common.IMAGENET_MEAN
  c.data.std = common.IMAGENET_STD
  c.data.crop_padding = 0
  c.data.flip = True
  # Random-resized 224 crop (train) / resize 256 + centre 224 crop (eval), as the official DALI
  # pipeline (jaxcompress/data/imagenet.py).
  c.data.transform = "imagenet_crop"
  c.data.transform_kwargs = ml_collections.ConfigDict({"size": 224})
  c.data.num_workers = 16
  c.num_epochs = 150
  c.log_every = 500
  return c
