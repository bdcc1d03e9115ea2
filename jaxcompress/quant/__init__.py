"""Quantisation and binarisation: estimators, RBNN rotations, binary layers.

Level 1 (pure functions, usable in any JAX code): the larq-named estimators (`ste_sign`,
`approx_sign`, `swish_sign`, `magnitude_aware_sign`, `ste_tern`, `ste_heaviside`, `dorefa`), RBNN's
`rbnn_sign` / `rbnn_schedule`, and the RBNN rotation functions. Level 2: linen layers
(`BinaryConv`, `BinaryDense`, `RBNNConv`); the model factory pairs them into its "rbnn" / "binary"
layer sets.
"""
from __future__ import annotations

from jaxcompress.quant.estimators import approx_sign
from jaxcompress.quant.estimators import bits_of
from jaxcompress.quant.estimators import dorefa
from jaxcompress.quant.estimators import get
from jaxcompress.quant.estimators import magnitude_aware_sign
from jaxcompress.quant.estimators import names
from jaxcompress.quant.estimators import rbnn_schedule
from jaxcompress.quant.estimators import rbnn_sign
from jaxcompress.quant.estimators import register
from jaxcompress.quant.estimators import ste_heaviside
from jaxcompress.quant.estimators import ste_sign
from jaxcompress.quant.estimators import ste_tern
from jaxcompress.quant.estimators import swish_sign
from jaxcompress.quant.layers import BinaryConv
from jaxcompress.quant.layers import BinaryDense
from jaxcompress.quant.layers import RBNNConv
from jaxcompress.quant.layers import set_rbnn_schedule
from jaxcompress.quant.rotation import haar_orthogonal
from jaxcompress.quant.rotation import matrices_to_weight
from jaxcompress.quant.rotation import rbnn_activation_sign
from jaxcompress.quant.rotation import rbnn_conv2d
from jaxcompress.quant.rotation import rbnn_mixed_weight
from jaxcompress.quant.rotation import rbnn_rotate_params
from jaxcompress.quant.rotation import rbnn_rotated_weight
from jaxcompress.quant.rotation import rbnn_rotation_objective
from jaxcompress.quant.rotation import rbnn_rotation_update
from jaxcompress.quant.rotation import rotation_shape
from jaxcompress.quant.rotation import sign_flip_ratio
from jaxcompress.quant.rotation import standardize_activation
from jaxcompress.quant.rotation import standardize_weight
from jaxcompress.quant.rotation import weight_to_matrices

from jaxcompress.quant.quantizers import PAMSConv
from jaxcompress.quant.quantizers import PAMSQuantAct
from jaxcompress.quant.quantizers import get_quantizer
from jaxcompress.quant.quantizers import pams_quantize
from jaxcompress.quant.quantizers import pams_quantize_weight
from jaxcompress.quant.transform import QuantRule, Quantized, layer_bits_fn, quantize
from jaxcompress.quant.export import (Exported, export, export_sizes, pack_bits, serve_apply,
                                      serve_fn, unpack_bits, xnor_popcount_matmul)
from jaxcompress.quant.int8_export import (Int8Exported, export_int8, int8_sizes, pack_int4,
                                           serve_int8, unpack_int4)
