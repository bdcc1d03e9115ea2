"""Named binary layer sets: the quantisation layers of `jaxcompress.quant` as `factory.Layers`.

`jaxcompress.quant.layers` defines the linen layers only; pairing them with the models' other
slots (activation, batch-norm init) is a model concern, so it lives here. `factory.get("rbnn")`
and `factory.get("binary")` import this module on first use, so configs select the sets by name
(`config.model.layers = "rbnn"`) without importing anything first. (The "pams" set lives with the
SR models in `edsr`.)

Example:
  >>> from jaxcompress.models import factory
  >>> layers = factory.get("binary", input_quantizer="approx_sign")
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn

from jaxcompress.models import factory
from jaxcompress.quant import layers as quant_layers


@factory.register("rbnn")
def rbnn_layers(**overrides: Any) -> factory.Layers:
  """RBNN layer set (arXiv 2009.13055, official CIFAR models): `RBNNConv` inner convs, hardtanh
  activations, batch-norm scales initialised to 1e-8; float stem and classifier.

  Args:
    **overrides: other `factory.Layers` fields.

  Returns:
    The layer set.
  """
  return factory.Layers(conv=quant_layers.RBNNConv, act=nn.hard_tanh,
                        bn_scale_init=1e-8).replace(**overrides)


@factory.register("binary")
def binary_layers(input_quantizer: quant_layers.Quantizer = "ste_sign",
                  kernel_quantizer: quant_layers.Quantizer = "ste_sign",
                  **overrides: Any) -> factory.Layers:
  """larq-style binary layer set: `BinaryConv` / `BinaryDense` inner layers, hardtanh.

  Args:
    input_quantizer: estimator name / callable / None applied to each inner layer's input.
    kernel_quantizer: estimator name / callable / None applied to each inner layer's kernel.
    **overrides: other `factory.Layers` fields.

  Returns:
    The layer set (float stem and classifier).
  """
  quant = dict(input_quantizer=input_quantizer, kernel_quantizer=kernel_quantizer)
  return factory.Layers(conv=functools.partial(quant_layers.BinaryConv, **quant),
                        dense=functools.partial(quant_layers.BinaryDense, **quant),
                        act=nn.hard_tanh).replace(**overrides)
