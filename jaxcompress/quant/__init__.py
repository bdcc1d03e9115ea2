"""Quantisation and binarisation: estimators, RBNN rotations, binary layers.

Level 1 (pure functions, usable in any JAX code): the larq-named estimators (`ste_sign`,
`approx_sign`, `swish_sign`, `magnitude_aware_sign`, `ste_tern`, `ste_heaviside`, `dorefa`),
XNOR-Net's `xnor_sign`, RBNN's `rbnn_sign` / `rbnn_schedule`, and the RBNN rotation functions.
Level 2: linen layers (`BinaryConv`, `BinaryDense`, `RBNNConv`); the model factory pairs them into
its "rbnn" / "binary" layer sets. `get(name, bits=..., role=...)` is the one resolver of quantizer
names: the estimators (`names()`) and the k-bit quantizers of `quantizers` (`quantizer_names()`).
Converted models: `export` / `serve_fn` (packed 1-bit and integer layers), and `write_artefact` /
`load_artefact` (the serving function as a serialized StableHLO program that jax alone can load).
"""
from __future__ import annotations

from jaxcompress.quant.artefact import ServingArtefact, load_artefact, write_artefact
from jaxcompress.quant.estimators import (
                                      approx_sign,
                                      bits_of,
                                      dorefa,
                                      get,
                                      magnitude_aware_sign,
                                      names,
                                      quantizer_names,
                                      rbnn_schedule,
                                      rbnn_sign,
                                      register,
                                      register_quantizer,
                                      ste_heaviside,
                                      ste_sign,
                                      ste_tern,
                                      swish_sign,
                                      xnor_sign,
)
from jaxcompress.quant.export import (
                                      Exported,
                                      export,
                                      export_sizes,
                                      float_serving,
                                      pack_bits,
                                      serve_apply,
                                      serve_fn,
                                      unpack_bits,
                                      xnor_popcount_matmul,
)
from jaxcompress.quant.int8_export import (
                                      Int8Exported,
                                      export_int8,
                                      int8_sizes,
                                      pack_int4,
                                      serve_int8,
                                      unpack_int4,
)
from jaxcompress.quant.layers import BinaryConv, BinaryDense, RBNNConv, set_rbnn_schedule
from jaxcompress.quant.quantizers import (
                                      PAMSConv,
                                      PAMSQuantAct,
                                      get_quantizer,
                                      pams_quantize,
                                      pams_quantize_weight,
)
from jaxcompress.quant.rotation import (
                                      haar_orthogonal,
                                      matrices_to_weight,
                                      rbnn_activation_sign,
                                      rbnn_conv2d,
                                      rbnn_mixed_weight,
                                      rbnn_rotate_params,
                                      rbnn_rotated_weight,
                                      rbnn_rotation_objective,
                                      rbnn_rotation_update,
                                      rotation_shape,
                                      sign_flip_ratio,
                                      standardize_activation,
                                      standardize_weight,
                                      weight_to_matrices,
)
from jaxcompress.quant.transform import Quantized, QuantRule, layer_bits_fn, quantize
