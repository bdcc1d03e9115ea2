"""Tests for jaxcompress.ops.int8_conv (PAMS integer conv on AMX) and its use in serve_int8."""
from __future__ import annotations

from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from jaxcompress.models import edsr
from jaxcompress.ops import int8_conv
from jaxcompress.quant import int8_export, quantizers

# (name, input shape, out channels, kernel, pads, bias): EDSR's 64 -> 64 body conv and 64 -> 256
# upsampler conv, fewer than 64 input channels (the head), two 64-channel chunks with a tail,
# rows narrower than one 16-pixel tile, widths that end inside a tile pair, 1x1 and asymmetric
# padding, a batch whose row ranges end inside images.
CASES = [
    ("body", (2, 9, 12, 64), 64, (3, 3), ((1, 1), (1, 1)), True),
    ("upsampler", (1, 6, 20, 64), 256, (3, 3), ((1, 1), (1, 1)), True),
    ("head", (1, 7, 17, 3), 64, (3, 3), ((1, 1), (1, 1)), False),
    ("tail", (1, 5, 33, 64), 3, (3, 3), ((1, 1), (1, 1)), True),
    ("chunks", (2, 4, 35, 100), 40, (3, 3), ((1, 1), (1, 1)), False),
    ("narrow", (3, 5, 5, 64), 16, (3, 3), ((1, 1), (1, 1)), True),
    ("pointwise_asym", (2, 6, 40, 64), 32, (1, 3), ((0, 0), (2, 0)), False),
    ("many_rows", (3, 23, 18, 64), 48, (3, 3), ((1, 1), (1, 1)), True),
]


def _operands(case, seed=0):
  _, shape, o, kshape, pads, bias = case
  return int8_conv._case(np.random.default_rng(seed), shape, o, kshape, pads, bias)


@absltest.skipUnless(int8_conv.available(), "no AMX int8 conv on this host")
class PamsConvTest(parameterized.TestCase):

  @parameterized.named_parameters(*[(c[0], c) for c in CASES])
  def test_matches_numpy_reference(self, case):
    x, alpha, qmax, kernel, scale, bias, pads = _operands(case)
    want = int8_conv.reference(x, alpha, qmax, kernel, scale, bias, pads)
    for jit in (False, True):
      fn = (lambda *a: int8_conv.pams_conv(*a, pads=pads))
      fn = jax.jit(fn, static_argnums=(2,)) if jit else fn
      got = np.asarray(fn(jnp.asarray(x), jnp.float32(alpha), qmax, jnp.asarray(kernel),
                          jnp.float32(scale), None if bias is None else jnp.asarray(bias)))
      # Integer accumulation is exact; only the float rescale rounds (one ulp).
      np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-5)

  def test_levels_round_half_to_even_and_clip(self):
    # 1x1 identity kernel, scale 1: the output is the input's levels themselves.
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 300.0, -300.0, 0.49], np.float32)
    x = np.tile(x, 8).reshape(1, 1, 8, 8)
    kernel = np.eye(8, dtype=np.int8).reshape(1, 1, 8, 8)
    got = np.asarray(int8_conv.pams_conv(jnp.asarray(x), jnp.float32(127.0), 127.0,
                                         jnp.asarray(kernel), jnp.float32(1.0), None,
                                         ((0, 0), (0, 0))))
    np.testing.assert_array_equal(got[0, 0, 0], [0, 2, 2, -0, -2, 127, -127, 0])

  def test_errors_name_the_problem(self):
    x = jnp.zeros((1, 4, 4, 8))
    k = jnp.zeros((3, 3, 8, 16), jnp.int8)
    with self.assertRaisesRegex(ValueError, "int8 HWIO"):
      int8_conv.pams_conv(x, 1.0, 127.0, k.astype(jnp.float32), 1.0, None, ((1, 1), (1, 1)))
    with self.assertRaisesRegex(ValueError, "does not fit"):
      int8_conv.pams_conv(x, 1.0, 127.0, k, 1.0, None, ((3, 3), (1, 1)))


def _student(n_feats=16, n_resblocks=2, size=20):
  model = edsr.EDSR(scale=2, n_resblocks=n_resblocks, n_feats=n_feats,
                    layers=edsr.pams_layers(bits=8))
  x = jax.random.uniform(jax.random.key(0), (2, size, size, 3), jnp.float32) * 255.0
  variables = model.init(jax.random.key(1), x)
  _, updates = model.apply(variables, x, mutable=[quantizers.CALIB_COLLECTION])
  params = quantizers.calibrated_params(variables["params"],
                                        updates[quantizers.CALIB_COLLECTION])
  return model, {"params": params}, x


class ServeInt8Test(absltest.TestCase):

  def test_native_and_xla_integer_paths_agree(self):
    model, variables, x = _student(n_feats=64)
    exported = int8_export.export_int8(variables, model, x)
    native = np.asarray(jax.jit(int8_export.serve_int8)(exported, x))
    with mock.patch.object(int8_conv, "available", return_value=False):
      xla = np.asarray(jax.jit(int8_export.serve_int8)(exported, x))
    # Same integer levels and accumulations; the rescale and the float layers round alike.
    np.testing.assert_allclose(native, xla, rtol=0, atol=2e-3)

  def test_float_convs_served_in_int8_on_request(self):
    model, variables, x = _student()
    ref = np.asarray(model.apply(variables, x))
    exported = int8_export.export_int8(variables, model, x,
                                       int8_float_convs="body_end|upsampler")
    rest = {k: c for k, c in exported.convs.items() if c.alpha is not None}
    self.assertEqual(set(rest), {"body_end", "upsampler/conv_0"})
    for path, conv in rest.items():
      self.assertEqual(conv.kernel.dtype, jnp.int8)
      self.assertGreater(float(conv.alpha), 0.0)
      self.assertNotIn("kernel", exported.params.get(path.split("/")[0], {}))
    out = np.asarray(jax.jit(int8_export.serve_int8)(exported, x))
    body_only = np.asarray(jax.jit(int8_export.serve_int8)(
        int8_export.export_int8(variables, model, x), x))
    self.assertFalse(np.allclose(out, body_only))  # the extra convs really are integer
    # 8-bit levels of inputs calibrated on this batch: a few grey levels at most.
    self.assertLess(float(np.max(np.abs(out - ref))), 8.0)

  def test_unmatched_float_conv_pattern_is_an_error(self):
    model, variables, x = _student()
    with self.assertRaisesRegex(ValueError, "matches no float conv"):
      int8_export.export_int8(variables, model, x, int8_float_convs="no_such_layer")


if __name__ == "__main__":
  absltest.main()
