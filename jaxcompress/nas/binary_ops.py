"""The op sets of the DARTS search and evaluation networks by name: float and BNAS-binarised.

BNAS (Chen et al., arXiv 1911.10862 / 2009.04247) searches cells whose convolutions are binarised.
Its binary ops are the DARTS ops of `nas.space` built with a binary `models.factory.Layers`
(`space.op_table(layers)`): the same classes, parameter names and structure, only the convolution
slot and the activation differ. `ops_for(op_set, binary_activations)` is the one place a config's
op set (`config.nas.op_set`, `config.model.kwargs.op_set`) becomes an op table:

| op_set   | conv slot (`Layers.conv`)                              | act before each conv     |
|----------|--------------------------------------------------------|--------------------------|
| "darts"  | float convolution (`ops.conv.Conv`)                    | ReLU                     |
| "binary" | XNOR: `quant.BinaryConv`, kernel `quant.xnor_sign`     | ReLU, none when 1-bit    |
| "pcnn"   | PCNN projections: `nas.pcnn.PCNNConv`                  | ReLU, none when 1-bit    |

* XNOR (Rastegari et al., arXiv 1603.05279): W_b = a * sign(W), a = mean |W| per output filter,
  recomputed from the real latent weights at every step, sign with the clipped STE and `a`
  differentiated (`quant.xnor_sign`: XNOR-Net's d/dW = g (1/n + a 1[|W| <= 1]) per entry).
* PCNN (arXiv 1811.12755): kernels projected by learned matrices, see `nas.pcnn`.
* `binary_activations=True` (1-bit BNAS): each binary conv also signs its input (`ste_sign`,
  clipped STE; XNOR-Net's optional spatial scale K is not used: most binary NAS code drops it),
  zero padding after binarisation, and the ReLU is dropped (sign(ReLU(x)) would be constant +1),
  as XNOR-Net's BN -> sign -> conv block (the BN of the previous op / preprocessing precedes
  it). With weights-only binarisation (`False`, XNOR-BNAS search as the conference version)
  activations stay real and the ReLU is kept.

Choices where the paper is silent (documented in methods/bnas.py too): pooling, skip (with its
`FactorizedReduce`) and none stay real-valued (reading the paper as binarising convolutions
only), as do the cell preprocessing, stem and classifier.

Example:
  >>> import jax, jax.numpy as jnp
  >>> ops = ops_for("binary", binary_activations=True)
  >>> op = ops["sep_conv_3x3"](8, 1, False)
  >>> v = op.init(jax.random.key(0), jnp.ones((2, 8, 8, 8)), train=False)
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax

from jaxcompress.errors import ConfigError
from jaxcompress.models import factory
from jaxcompress.nas import space

OP_SETS = ("darts", "binary", "pcnn")


def _identity(x: jax.Array) -> jax.Array:
  return x


def layers_for(op_set: str, binary_activations: bool = False) -> factory.Layers:
  """The `Layers` the sep/dil conv ops of an op set are built with (see the module table).

  Args:
    op_set: "darts" (float), "binary" (XNOR) or "pcnn".
    binary_activations: binary op sets: binarise the activations too (1-bit).

  Returns:
    The layer set (only its `conv` and `act` slots are used by the ops).

  Raises:
    ConfigError: an unknown op set.
  """
  if op_set == "darts":
    return factory.FLOAT
  b = bool(binary_activations)
  act = _identity if b else nn.relu
  input_quantizer = "ste_sign" if b else None
  if op_set == "binary":
    # Imported on use: a float search never loads the quantisation layers.
    from jaxcompress.models import layer_sets  # pylint: disable=g-import-not-at-top
    return layer_sets.binary_layers(input_quantizer=input_quantizer,
                                    kernel_quantizer="xnor_sign", act=act)
  if op_set == "pcnn":
    from jaxcompress.nas import pcnn  # pylint: disable=g-import-not-at-top
    return factory.Layers(conv=functools.partial(pcnn.PCNNConv, input_quantizer=input_quantizer),
                          act=act)
  raise ConfigError(f"Unknown op_set {op_set!r}; use one of {OP_SETS} ('binary' is XNOR).")


@functools.lru_cache(maxsize=None)
def ops_for(op_set: str, binary_activations: bool = False) -> dict[str, space.OpFactory]:
  """The op table of an op set: `space.op_table(layers_for(op_set, binary_activations))`.

  Args:
    op_set: "darts" (`space.OPS`), "binary" (XNOR) or "pcnn".
    binary_activations: binary op sets: binarise the activations too (1-bit BNAS).

  Returns:
    {name: factory(C, stride, affine) -> module called as op(x, train)}.

  Raises:
    ConfigError: an unknown op set.
  """
  if op_set == "darts":
    return space.OPS
  return space.op_table(layers_for(op_set, bool(binary_activations)))
