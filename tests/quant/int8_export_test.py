"""Integer export/serving of PAMS models: equality with fake-quant, sizes, int32 accumulation."""
from __future__ import annotations

from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcompress.models import edsr
from jaxcompress.ops import int8_conv
from jaxcompress.quant import int8_export, quantizers


def _calibrated_student(bits: int, n_feats: int = 16, n_resblocks: int = 2, scale: int = 2,
                        size: int = 20):
  """A PAMS EDSR with alphas set by one calibration pass (realistic ranges, not alpha_init)."""
  model = edsr.EDSR(scale=scale, n_resblocks=n_resblocks, n_feats=n_feats,
                    layers=edsr.pams_layers(bits=bits))
  x = jax.random.uniform(jax.random.key(0), (2, size, size, 3), jnp.float32) * 255.0
  variables = model.init(jax.random.key(1), x)
  _, updates = model.apply(variables, x, mutable=[quantizers.CALIB_COLLECTION])
  params = quantizers.calibrated_params(variables["params"],
                                        updates[quantizers.CALIB_COLLECTION])
  return model, {"params": params}, x


def _np_pams_weight_levels(w: np.ndarray, bits: int) -> np.ndarray:
  """NumPy reference of `pams_quantize_weight`'s levels (colorjam/PAMS `quant_weight`)."""
  qmax = 2 ** (bits - 1) - 1
  s = np.float32(np.max(np.abs(w))) + np.float32(1e-8)
  return np.round(w.astype(np.float32) * np.float32(qmax) / s)


@pytest.mark.parametrize("bits", [8, 4])
def test_float_input_mode_equals_fake_quant(bits):
  # unquantized_inputs="float": every conv whose fake-quant input is quantized runs on integer
  # operands, conv1 keeps a float input: the output must equal the fake-quant forward to float
  # rounding, far below one quantization step (1 grey level of 255) per output pixel.
  model, variables, x = _calibrated_student(bits)
  ref = np.asarray(model.apply(variables, x))
  exported = int8_export.export_int8(variables, model, x, unquantized_inputs="float")
  out = np.asarray(jax.jit(int8_export.serve_int8)(exported, x))
  assert out.shape == ref.shape
  np.testing.assert_array_less(np.abs(out - ref), 1e-2)


def test_all_integer_8bit_within_one_step_per_output_pixel():
  # Default mode: every body conv on int8 operands (conv1 quantized with Q_a1's alpha). At 8
  # bits the SR output stays within one quantization step of the uint8 output grid
  # (rgb_range / 255 = 1.0) of the fake-quant forward at every pixel.
  model, variables, x = _calibrated_student(8, n_feats=32, n_resblocks=4)
  ref = np.asarray(model.apply(variables, x))
  exported = int8_export.export_int8(variables, model, x)
  assert set(exported.approximate) == {f"body_{i}/conv1" for i in range(4)}
  out = np.asarray(jax.jit(int8_export.serve_int8)(exported, x))
  assert np.max(np.abs(out - ref)) <= 1.0


def test_exported_levels_match_numpy_reference_and_scales():
  model, variables, x = _calibrated_student(8)
  exported = int8_export.export_int8(variables, model, x)
  w = np.asarray(variables["params"]["body_1"]["conv2"]["kernel"])
  conv = exported.convs["body_1/conv2"]
  assert conv.kernel.dtype == jnp.int8
  np.testing.assert_array_equal(np.asarray(conv.kernel), _np_pams_weight_levels(w, 8))
  np.testing.assert_allclose(float(conv.w_step), (np.max(np.abs(w)) + 1e-8) / 127, rtol=1e-6)
  assert conv.act_path == ("body_1", "quant_act2")   # exact: conv2's input is Q_a2's output
  # Levels times step reproduce the fake-quant weights (pams_quantize_weight).
  np.testing.assert_allclose(np.asarray(conv.kernel, np.float32) * float(conv.w_step),
                             np.asarray(quantizers.pams_quantize_weight(jnp.asarray(w), 8)),
                             rtol=1e-6, atol=1e-8)
  # Float layers stay float and are not exported (head, body_end, upsampler, tail).
  assert set(exported.convs) == {f"body_{i}/conv{j}" for i in range(2) for j in (1, 2)}
  assert "kernel" in exported.params["head"] and "conv1" not in exported.params["body_0"]


def test_int4_pack_roundtrip():
  levels = jnp.asarray(np.arange(-7, 8).tolist() * 3 + [5], jnp.int8).reshape(2, 23)
  packed = int8_export.pack_int4(levels)
  assert packed.dtype == jnp.uint8 and packed.size == 23
  np.testing.assert_array_equal(np.asarray(int8_export.unpack_int4(packed, (2, 23))),
                                np.asarray(levels))


@pytest.mark.parametrize("bits,min_ratio,kernel_ratio", [(8, 3.95, 4.0), (4, 7.5, 8.0)])
def test_exported_body_size(bits, min_ratio, kernel_ratio):
  # EDSR-baseline width (64 feats): kernels are exactly 4x (int8) / 8x (packed 4-bit) smaller
  # than float32; with the float32 biases and two float32 steps per conv the body is 3.98x / 7.9x.
  model, variables, x = _calibrated_student(bits, n_feats=64, n_resblocks=2, size=8)
  sizes = int8_export.int8_sizes(int8_export.export_int8(variables, model, x))
  n_conv, k, b = 4, 3 * 3 * 64 * 64, 64
  assert sizes["float_bytes"] == n_conv * (k + b) * 4
  kernel_bytes = k if bits == 8 else k // 2
  assert sizes["int_bytes"] == n_conv * (kernel_bytes + 4 * b + 8)
  assert sizes["kernel_ratio"] == kernel_ratio
  assert sizes["ratio"] >= min_ratio


def test_native_serving_runs_the_body_on_int8_levels():
  if not int8_conv.available():
    pytest.skip("no AMX int8 conv on this host")
  model, variables, x = _calibrated_student(8)
  exported = int8_export.export_int8(variables, model, x)
  jaxpr = jax.make_jaxpr(int8_export.serve_int8)(exported, x)
  convs = [e for e in jaxpr.jaxpr.eqns if e.primitive is int8_conv.int8_conv_p]
  assert len(convs) == 4              # the 4 body convs; head/body_end/upsampler/tail float
  assert all(e.invars[2].aval.dtype == jnp.int8 for e in convs)


@mock.patch.object(int8_conv, "available", return_value=False)
def test_serving_uses_int8_operands_and_int32_accumulator(_):
  model, variables, x = _calibrated_student(8)
  exported = int8_export.export_int8(variables, model, x)
  jaxpr = jax.make_jaxpr(int8_export.serve_int8)(exported, x)
  convs = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "conv_general_dilated"]
  int_convs = [e for e in convs if e.invars[0].aval.dtype == jnp.int8]
  assert len(int_convs) == 4          # the 4 body convs; head/body_end/upsampler/tail float
  for e in int_convs:
    assert e.invars[1].aval.dtype == jnp.int8
    assert e.params["preferred_element_type"] == jnp.int32
    assert e.outvars[0].aval.dtype == jnp.int32


def test_model_without_pams_convs_is_rejected():
  model = edsr.EDSR(scale=2, n_resblocks=1, n_feats=8)
  x = jnp.zeros((1, 8, 8, 3))
  with pytest.raises(ValueError, match="pams"):
    int8_export.export_int8(model.init(jax.random.key(0), x), model, x)
  with pytest.raises(ValueError, match="unquantized_inputs"):
    int8_export.export_int8(model.init(jax.random.key(0), x), model, x, unquantized_inputs="x")
