"""Float ResNet-20 on CIFAR-shaped synthetic data (offline): the host-pipeline benchmarks' config.

32x32x3 images, 10 classes, 5120 training examples (40 steps of 128 per epoch), CIFAR-10's
pad-4 random crop + flip on the host, 3 epochs. Used by `benchmarks/steps_per_call.py`.
"""
from configs import common


def get_config(arg: str | None = None):
  del arg
  c = common.base_config()
  c.data.name = "synthetic"
  c.data.source_kwargs = {"num_examples": 5120, "image_shape": (32, 32, 3), "num_classes": 10}
  c.data.mean = (0.5, 0.5, 0.5)
  c.data.std = (0.25, 0.25, 0.25)
  c.data.crop_padding = 4
  c.data.flip = True
  c.model.name = "resnet20"
  c.num_epochs = 3
  c.log_every = 10
  return c
