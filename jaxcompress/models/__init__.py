"""Model registry: configs name architectures by string (`config.model.name`).

Each entry is imported lazily so a model family's dependencies load only when used.
"""
from __future__ import annotations

import importlib
from typing import Any

import flax.linen as nn

from jaxcompress.errors import ConfigError
from jaxcompress.models import factory

# name -> "module:constructor"; constructors take (layers=..., **kwargs): classifiers take
# num_classes, super-resolution models scale, GAN models their own sizes.
_MODELS = {
    "resnet20": "jaxcompress.models.resnet_cifar:ResNet20",
    "cifar_resnet": "jaxcompress.models.resnet_cifar:CifarResNetA",
    "resnet18_cifar": "jaxcompress.models.resnet_cifar:ResNet18",
    "vgg_small": "jaxcompress.models.vgg_small:VGGSmall",
    "resnet18": "jaxcompress.models.resnet_imagenet:ResNet18",
    "resnet34": "jaxcompress.models.resnet_imagenet:ResNet34",
    "resnet50": "jaxcompress.models.resnet_bottleneck:ResNet50",
    "resnet101": "jaxcompress.models.resnet_bottleneck:ResNet101",
    "resnet152": "jaxcompress.models.resnet_bottleneck:ResNet152",
    "resnext50_32x4d": "jaxcompress.models.resnet_bottleneck:ResNeXt50_32x4d",
    "wide_resnet50_2": "jaxcompress.models.resnet_bottleneck:WideResNet50_2",
    "mobilenet_v2": "jaxcompress.models.mobilenet_v2:mobilenet_v2",
    "densenet121": "jaxcompress.models.densenet:densenet121",
    "densenet161": "jaxcompress.models.densenet:densenet161",
    "densenet169": "jaxcompress.models.densenet:densenet169",
    "densenet201": "jaxcompress.models.densenet:densenet201",
    "inception_v3": "jaxcompress.models.inception_v3:inception_v3",
    "edsr": "jaxcompress.models.edsr:EDSR",
    "edsr_baseline": "jaxcompress.models.edsr:edsr_baseline",
    "edsr_full": "jaxcompress.models.edsr:edsr_full",
    "rdn": "jaxcompress.models.rdn:rdn",
    "cyclegan_resnet_generator": "jaxcompress.models.cyclegan:ResnetGenerator",
    "patchgan_discriminator": "jaxcompress.models.cyclegan:NLayerDiscriminator",
    "pix2pix_unet_generator": "jaxcompress.models.pix2pix:UnetGenerator",
    "mobile_resnet_generator": "jaxcompress.models.mobile_gan:MobileResnetGenerator",
    "darts_eval": "jaxcompress.nas.eval_network:darts_eval",
    "c3d": "jaxcompress.models.video_c3d:c3d",
    "r3d_18": "jaxcompress.models.video_resnet:r3d_18",
    "r3d_18_torchvision": "jaxcompress.models.video_resnet:r3d_18_torchvision",
    "r2plus1d_18": "jaxcompress.models.video_resnet:r2plus1d_18",
    "r2plus1d_dsm": "jaxcompress.models.video_resnet:r2plus1d_dsm",
    "i3d": "jaxcompress.models.video_i3d:i3d",
}


def names() -> list[str]:
  """All registered model names."""
  return sorted(_MODELS)


def build(name: str, *, layers: str | factory.Layers = "float",
          layer_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> nn.Module:
  """Builds the model registered under `name`.

  Args:
    name: a registered model name (see `names()`).
    layers: a `factory.Layers` or the name of a registered layer set ("float", "rbnn", ...).
    layer_kwargs: arguments of the named layer set.
    **kwargs: model constructor arguments (num_classes, depth, ...).

  Returns:
    An unbound linen module.

  Raises:
    ValueError: naming the known models when `name` is unknown.
  """
  if name not in _MODELS:
    raise ConfigError(f"Unknown model {name!r}. Known models: {', '.join(names())}. "
                     "Set config.model.name to one of them.")
  if isinstance(layers, str):
    layers = factory.get(layers, **(layer_kwargs or {}))
  module, attr = _MODELS[name].split(":")
  return getattr(importlib.import_module(module), attr)(layers=layers, **kwargs)
