"""Tests for jaxcompress.ops.native_conv (the C++ weight-gradient kernel) and native_build."""
from __future__ import annotations

import os
import shutil
import tempfile
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from jax import lax

from jaxcompress.ops import conv as conv_ops
from jaxcompress.ops import native_build, native_conv

# The CI also runs these tests with the native kernels switched off (JAXCOMPRESS_NATIVE=0): the
# kernel tests then check that they are off, and the build tests switch them on for themselves.
_OPTED_OUT = os.environ.get(native_build.OPT_OUT_ENV, "1") == "0"
_NATIVE_ON = {native_build.OPT_OUT_ENV: "1"}


def _numpy_weight_grad(x: np.ndarray, g: np.ndarray, kshape, strides, pads, dil) -> np.ndarray:
  """dW[i, j, c, o] = sum_{n,y,x} xpad[n, y*sh + i*dh, x*sw + j*dw, c] g[n, y, x, o] in float64."""
  xp = np.pad(x.astype(np.float64), [(0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)])
  ho, wo = g.shape[1:3]
  dw = np.zeros(tuple(kshape) + (x.shape[-1], g.shape[-1]))
  for i in range(kshape[0]):
    for j in range(kshape[1]):
      view = xp[:, i * dil[0]: i * dil[0] + (ho - 1) * strides[0] + 1: strides[0],
                j * dil[1]: j * dil[1] + (wo - 1) * strides[1] + 1: strides[1]]
      dw[i, j] = np.einsum("nyxc,nyxo->co", view, g.astype(np.float64))
  return dw


def _out_shape(shape, kshape, strides, pads, dil):
  return tuple((size + lo + hi - (k - 1) * d - 1) // s + 1
               for size, k, s, d, (lo, hi) in zip(shape[1:3], kshape, strides, dil, pads))


# (name, x shape, out channels, kernel, strides, pads, dilation): every register block (64, 32,
# 16 output channels and a partial vector), input-channel tails, strides, dilation, asymmetric
# and zero padding, a batch of one (no helper thread).
CASES = [
    ("resnet_16", (4, 12, 12, 16), 16, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),
    ("resnet_32_s2", (3, 10, 10, 16), 32, (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1)),
    ("resnet_64", (2, 6, 6, 64), 64, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),
    ("stem_3ch", (2, 9, 9, 3), 16, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),
    ("tails", (3, 9, 8, 21), 83, (3, 2), (2, 1), ((1, 2), (0, 1)), (2, 1)),
    ("few_outputs", (2, 7, 5, 5), 3, (2, 3), (1, 2), ((0, 1), (2, 2)), (1, 2)),
    ("wide", (2, 5, 5, 40), 128, (1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1)),
    ("batch_1_5x5", (1, 11, 9, 7), 48, (5, 5), (1, 1), ((2, 2), (2, 2)), (1, 1)),
    ("window_misses_rows", (2, 4, 4, 2), 16, (3, 3), (3, 3), ((0, 4), (4, 0)), (1, 1)),
    # Row ranges shared out across threads: one image's rows split (a GAN batch of one), and
    # ranges that end inside an image (3 images x 12 rows).
    ("batch_1_rows_split", (1, 32, 12, 16), 32, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),
    ("ranges_inside_images", (3, 12, 7, 8), 16, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),
    ("batch_1_rows_split_s2", (1, 33, 10, 5), 24, (4, 4), (2, 2), ((1, 1), (1, 1)), (1, 1)),
]


class NativeConvWeightGradTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    if shutil.which(os.environ.get("CXX") or "c++") is None and shutil.which("g++") is None:
      self.skipTest("no C++ compiler on this machine: the lax fallback is tested below")

  def test_available_where_a_compiler_is(self):
    # With a compiler the kernel must build, register and pass its probe; a silent fallback
    # would hide a broken build. JAXCOMPRESS_NATIVE=0 (the CI's fallback run) must switch it off.
    if _OPTED_OUT:
      self.assertFalse(native_conv.available())
      return
    self.assertTrue(native_conv.available(), native_build.build_error("conv_weight_grad"))

  @parameterized.named_parameters(CASES)
  def test_matches_numpy_reference(self, shape, o, kshape, strides, pads, dil):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    g = rng.standard_normal((shape[0],) + _out_shape(shape, kshape, strides, pads, dil)
                            + (o,)).astype(np.float32)
    want = _numpy_weight_grad(x, g, kshape, strides, pads, dil)
    fn = lambda a, b: native_conv.conv_weight_grad(a, b, kshape, strides, pads, dil)
    for got in (fn(x, g), jax.jit(fn)(x, g)):
      self.assertEqual(got.dtype, jnp.float32)
      np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)

  def test_matches_lax_gradient_at_a_resnet_shape(self):
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((16, 16, 16, 16)).astype(np.float32))
    w = jnp.asarray(rng.standard_normal((3, 3, 16, 32)).astype(np.float32))
    g = jnp.asarray(rng.standard_normal((16, 8, 8, 32)).astype(np.float32))
    conv = lambda k: lax.conv_general_dilated(
        x, k, (2, 2), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=lax.Precision.HIGHEST)
    want = jax.vjp(conv, w)[1](g)[0]
    got = jax.jit(lambda a, b: native_conv.conv_weight_grad(
        a, b, (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1)))(x, g)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-3)

  def test_bit_identical_from_call_to_call(self):
    # Each thread sums a fixed range of output rows and the ranges are added in order, so the
    # result does not depend on thread timing (training runs repeat exactly).
    rng = np.random.default_rng(7)
    fn = jax.jit(lambda a, b: native_conv.conv_weight_grad(
        a, b, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)))
    for n, size in ((64, 16), (1, 64)):  # many images; one image's rows split
      x = jnp.asarray(rng.standard_normal((n, size, size, 16)).astype(np.float32))
      g = jnp.asarray(rng.standard_normal((n, size, size, 32)).astype(np.float32))
      first = np.asarray(fn(x, g))
      for _ in range(5):
        np.testing.assert_array_equal(np.asarray(fn(x, g)), first)

  def test_in_loop_body_accumulates(self):
    # Inside a fori_loop (the multi-step engine, NAS searches), each call starts from zero.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 2, 6, 6, 8)).astype(np.float32)
    g = rng.standard_normal((3, 2, 6, 6, 16)).astype(np.float32)
    params = ((3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1))

    @jax.jit
    def total(xs, gs):
      return lax.fori_loop(0, 3, lambda i, acc: acc + native_conv.conv_weight_grad(
          xs[i], gs[i], *params), jnp.zeros((3, 3, 8, 16), jnp.float32))

    want = sum(_numpy_weight_grad(x[i], g[i], *params) for i in range(3))
    np.testing.assert_allclose(np.asarray(total(x, g)), want, rtol=1e-4, atol=1e-4)

  def test_jvp_and_vmap_follow_the_lax_gradient(self):
    rng = np.random.default_rng(4)
    x, dx = (jnp.asarray(rng.standard_normal((2, 6, 6, 4)).astype(np.float32)) for _ in "ab")
    g, dg = (jnp.asarray(rng.standard_normal((2, 6, 6, 16)).astype(np.float32)) for _ in "ab")
    params = dict(kshape=(3, 3), strides=(1, 1), pads=((1, 1), (1, 1)), rhs_dil=(1, 1))
    fn = lambda a, b: native_conv.conv_weight_grad(a, b, **params)
    ref = lambda a, b: native_conv._reference(a, b, **params)  # pylint: disable=protected-access
    got_out, got_tan = jax.jvp(fn, (x, g), (dx, dg))
    want_out, want_tan = jax.jvp(ref, (x, g), (dx, dg))
    np.testing.assert_allclose(got_out, want_out, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_tan, want_tan, rtol=1e-4, atol=1e-4)
    xs, gs = jnp.stack([x, dx]), jnp.stack([g, dg])
    np.testing.assert_allclose(jax.vmap(fn)(xs, gs), jax.vmap(ref)(xs, gs), rtol=1e-4,
                               atol=1e-4)

  def test_conv_custom_vjp_with_the_native_plan(self):
    # The layer's custom VJP with the weight gradient on the native kernel (the plan that a
    # one-device float32 run gets) gives lax's gradients.
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((4, 10, 10, 16)).astype(np.float32))
    w = jnp.asarray(rng.standard_normal((3, 3, 16, 32)).astype(np.float32))
    plan = conv_ops._Plan(False, False, False, native_dw=True)  # pylint: disable=protected-access
    fast = lambda a, k: jnp.sum(jnp.sin(conv_ops._fast_conv(  # pylint: disable=protected-access
        a, k, (1, 1), ((1, 1), (1, 1)), (1, 1), None, None, plan)))
    ref = lambda a, k: jnp.sum(jnp.sin(lax.conv_general_dilated(
        a, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))))
    got = jax.jit(jax.grad(fast, argnums=(0, 1)))(x, w)
    want = jax.grad(ref, argnums=(0, 1))(x, w)
    for a, b in zip(got, want):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-3)

  def test_plan_uses_native_on_one_device_float32_only(self):
    x = jnp.zeros((2, 8, 8, 16), jnp.float32)
    w = jnp.zeros((3, 3, 16, 16), jnp.float32)
    applies = conv_ops._native_dw_applies  # pylint: disable=protected-access
    with mock.patch.object(jax, "device_count", return_value=1):
      self.assertEqual(applies(x, w, None), not _OPTED_OUT)
      self.assertFalse(applies(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), None))
      self.assertFalse(applies(x, w, jnp.dtype(jnp.float64)))
      self.assertFalse(applies(jnp.zeros((2, 8, 16)), jnp.zeros((3, 16, 16)), None))
    self.assertFalse(applies(x, w, None))  # 8 test devices: no SPMD rule for the call


class ChecksAndFallbackTest(parameterized.TestCase):

  def test_bad_inputs_name_the_problem(self):
    x = jnp.zeros((2, 8, 8, 4), jnp.float32)
    g = jnp.zeros((2, 8, 8, 16), jnp.float32)
    same = ((3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1))
    with self.assertRaisesRegex(ValueError, "float32"):
      native_conv.conv_weight_grad(x.astype(jnp.bfloat16), g, *same)
    with self.assertRaisesRegex(ValueError, "output shape"):
      native_conv.conv_weight_grad(x, g[:, :7], *same)
    with self.assertRaisesRegex(ValueError, "padding >= 0"):
      native_conv.conv_weight_grad(x, g, (3, 3), (1, 1), ((-1, 1), (1, 1)), (1, 1))
    with self.assertRaisesRegex(ValueError, "NHWC pair"):
      native_conv.conv_weight_grad(x[0], g[0], *same)

  def test_without_a_compiler_falls_back_to_lax(self):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 6, 6, 3)).astype(np.float32)
    g = rng.standard_normal((2, 6, 6, 16)).astype(np.float32)
    params = ((3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1))
    with mock.patch.object(native_build, "_compiler", return_value=None), \
        mock.patch.object(native_conv, "available", return_value=False), \
        mock.patch.dict(os.environ, _NATIVE_ON):
      self.assertIsNone(native_build.build.__wrapped__("conv_weight_grad"))
      self.assertIn("no C++ compiler", native_build.build_error("conv_weight_grad"))
      got = native_conv.conv_weight_grad(x, g, *params)
    np.testing.assert_allclose(np.asarray(got), _numpy_weight_grad(x, g, *params), rtol=1e-4,
                               atol=1e-4)

  def test_opt_out(self):
    with mock.patch.dict(os.environ, {native_build.OPT_OUT_ENV: "0"}):
      self.assertIsNone(native_build.build.__wrapped__("conv_weight_grad"))
    self.assertIn(native_build.OPT_OUT_ENV, native_build.build_error("conv_weight_grad"))

  def test_build_writes_the_object_whole_into_the_cache(self):
    if shutil.which("c++") is None and shutil.which("g++") is None:
      self.skipTest("no C++ compiler on this machine")
    cache = self.enter_context(tempfile.TemporaryDirectory())
    with mock.patch.dict(os.environ, {"XDG_CACHE_HOME": cache, **_NATIVE_ON}):
      path = native_build.build.__wrapped__("conv_weight_grad")
      again = native_build.build.__wrapped__("conv_weight_grad")  # found, not rebuilt
    self.assertEqual(path, again)
    self.assertTrue(path.startswith(cache), path)
    files = os.listdir(os.path.dirname(path))
    self.assertEqual(files, [os.path.basename(path)])  # no partial file left behind

  def test_extra_flags_change_the_build(self):
    if shutil.which("c++") is None and shutil.which("g++") is None:
      self.skipTest("no C++ compiler on this machine")
    cache = self.enter_context(tempfile.TemporaryDirectory())
    with mock.patch.dict(os.environ, {"XDG_CACHE_HOME": cache, **_NATIVE_ON}):
      default = native_build.build.__wrapped__("conv_weight_grad")
      with mock.patch.dict(os.environ, {native_build.EXTRA_FLAGS_ENV: "-DJAXCOMPRESS_TEST=1"}):
        extra = native_build.build.__wrapped__("conv_weight_grad")
      with mock.patch.dict(os.environ, {native_build.EXTRA_FLAGS_ENV: "-fno-such-flag"}):
        self.assertIsNone(native_build.build.__wrapped__("conv_weight_grad"))
    self.assertNotEqual(default, extra)  # keyed by the flags: a separate object
    self.assertTrue(os.path.exists(default) and os.path.exists(extra))

  def test_failed_build_reports_the_compiler_output(self):
    source_dir = self.enter_context(tempfile.TemporaryDirectory())
    cache = self.enter_context(tempfile.TemporaryDirectory())
    with mock.patch.object(native_build, "SOURCE_DIR", source_dir), \
        mock.patch.dict(os.environ, {"XDG_CACHE_HOME": cache, **_NATIVE_ON}):
      with open(os.path.join(native_build.SOURCE_DIR, "broken.cc"), "w") as f:
        f.write("this is not C++\n")
      if native_build._compiler() is None:  # pylint: disable=protected-access
        self.skipTest("no C++ compiler on this machine")
      self.assertIsNone(native_build.build.__wrapped__("broken"))
    self.assertIn("failed", native_build.build_error("broken"))


if __name__ == "__main__":
  absltest.main()
