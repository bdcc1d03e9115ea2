"""Tests for 3-D convolutions on CPU: `ops.conv` on NDHWC clips, `ops.conv3d`, `ops.native_conv3d`.

Values and both gradients of `conv.conv_general_dilated` are compared with
`lax.conv_general_dilated` (strides, padding, dilation, groups, depthwise; float32 and float64;
jitted and not), on the suite's 8 devices (XLA's kernels) and on the one-device plan (oneDNN
forward and input gradient, the native weight gradient). The native kernel is compared with a
NumPy loop over kernel taps, the tap trimming with a brute-force search of the taps that read
the input.
"""
from __future__ import annotations

import itertools
import os
import shutil
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from jax import lax

from jaxcompress.ops import conv as conv_ops
from jaxcompress.ops import conv3d, native_build, native_conv3d, onednn_conv

NDHWC = ("NDHWC", "DHWIO", "NDHWC")

# (name, lhs shape, rhs shape, strides, padding, rhs_dilation, feature groups)
CASES = [
    ("3x3x3_same", (2, 4, 6, 6, 3), (3, 3, 3, 3, 8), (1, 1, 1), "SAME", None, 1),
    ("stem_s122", (2, 5, 9, 8, 3), (3, 5, 5, 3, 16), (1, 2, 2), ((1, 1), (2, 2), (2, 2)), None, 1),
    ("s2_odd", (2, 5, 7, 9, 4), (3, 3, 3, 4, 5), (2, 2, 2), ((1, 1),) * 3, None, 1),
    ("valid_asym", (1, 6, 7, 6, 2), (2, 3, 2, 2, 3), (1, 2, 1), ((2, 0), (0, 1), (1, 3)), None, 1),
    ("dilated", (2, 7, 8, 8, 3), (3, 3, 3, 3, 4), (1, 1, 1), "SAME", (2, 1, 2), 1),
    ("dilated_s2_valid", (2, 9, 9, 9, 2), (2, 3, 3, 2, 3), (2, 1, 2), "VALID", (3, 2, 1), 1),
    ("pointwise_s2", (2, 4, 6, 6, 8), (1, 1, 1, 8, 16), (2, 2, 2), "VALID", None, 1),
    ("temporal_k3", (2, 6, 4, 4, 6), (3, 1, 1, 6, 5), (2, 1, 1), ((1, 1), (0, 0), (0, 0)), None, 1),
    ("one_frame", (2, 1, 5, 5, 8), (3, 3, 3, 8, 8), (1, 1, 1), ((1, 1),) * 3, None, 1),
    ("frames_smaller_than_kernel", (2, 1, 2, 2, 8), (3, 3, 3, 8, 8), (1, 1, 1), ((1, 1),) * 3,
     None, 1),
    ("spatial_tpad_s2", (2, 5, 6, 6, 3), (1, 3, 3, 3, 4), (2, 1, 2), ((1, 2), (1, 1), (0, 1)),
     (2, 1, 1), 1),
    ("two_frames_s2", (3, 2, 6, 6, 4), (3, 3, 3, 4, 8), (2, 2, 2), ((1, 1),) * 3, None, 1),
    ("negative_pad", (2, 6, 7, 6, 3), (3, 3, 3, 3, 4), (1, 1, 1), ((-1, 2), (1, -1), (0, 0)),
     None, 1),
    ("groups2", (2, 4, 5, 5, 4), (3, 3, 3, 2, 6), (1, 1, 1), "SAME", None, 2),
    ("depthwise", (2, 4, 6, 6, 20), (3, 3, 3, 1, 20), (1, 2, 2), "SAME", None, 20),
    ("depthwise_mult2_few", (2, 3, 5, 5, 3), (3, 3, 3, 1, 6), (1, 1, 1), ((1, 1),) * 3, (1, 2, 1),
     3),
]


def _inputs(case, dtype):
  _, lhs_shape, rhs_shape, strides, padding, rhs_dil, groups = case
  rng = np.random.default_rng(sum(lhs_shape) + 7 * sum(rhs_shape))
  lhs = jnp.asarray(rng.normal(size=lhs_shape), dtype)
  rhs = jnp.asarray(rng.normal(size=rhs_shape), dtype)
  out = jax.eval_shape(lambda a, b: _ref_conv(a, b, strides, padding, rhs_dil, groups), lhs, rhs)
  return lhs, rhs, jnp.asarray(rng.normal(size=out.shape), dtype)


def _ref_conv(lhs, rhs, strides, padding, rhs_dil, groups):
  """lax, with negative padding applied as an explicit crop (XLA:CPU's convolution returned
  garbage for negative padding in jaxlib 0.10.2)."""
  if not isinstance(padding, str) and any(lo < 0 or hi < 0 for lo, hi in padding):
    crop = [(0, 0, 0)] + [(min(lo, 0), min(hi, 0), 0) for lo, hi in padding] + [(0, 0, 0)]
    lhs = lax.pad(lhs, jnp.zeros((), lhs.dtype), crop)
    padding = [(max(lo, 0), max(hi, 0)) for lo, hi in padding]
  return lax.conv_general_dilated(lhs, rhs, strides, padding, rhs_dilation=rhs_dil,
                                  dimension_numbers=NDHWC, feature_group_count=groups,
                                  precision=lax.Precision.HIGHEST)


def _value_and_grads(conv, case, lhs, rhs, cot, jit=True):
  _, _, _, strides, padding, rhs_dil, groups = case

  def loss(a, b):
    out = conv(a, b, strides, padding, rhs_dil, groups)
    return jnp.sum(out * cot), out
  fn = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
  (_, out), (d_lhs, d_rhs) = (jax.jit(fn) if jit else fn)(lhs, rhs)
  return out, d_lhs, d_rhs


def _fast_conv(lhs, rhs, strides, padding, rhs_dil, groups):
  return conv_ops.conv_general_dilated(lhs, rhs, strides, padding, rhs_dilation=rhs_dil,
                                       dimension_numbers=NDHWC, feature_group_count=groups)


def _one_device():
  """The plan a one-device float32 run gets, for these small shapes too."""
  return [mock.patch.object(conv_ops.jax, "device_count", return_value=1),
          mock.patch.object(conv_ops, "_ONEDNN_MIN_FLOPS", 0)]


def _numpy_weight_grad(x, g, kshape, strides, pads, dil):
  """dW[a, i, j, c, o] = sum_{n,t,y,x} xpad[n, t*st + a*dt, y*sh + i*dh, x*sw + j*dw, c]
  g[n, t, y, x, o], one tap at a time in float64."""
  xp = np.pad(x.astype(np.float64), [(0, 0)] + [tuple(p) for p in pads] + [(0, 0)])
  out_sp = g.shape[1:4]
  dw = np.zeros(tuple(kshape) + (x.shape[-1], g.shape[-1]))
  for tap in itertools.product(*[range(k) for k in kshape]):
    view = xp[(slice(None),) + tuple(
        slice(t * d, t * d + (n - 1) * s + 1, s)
        for t, d, n, s in zip(tap, dil, out_sp, strides))]
    dw[tap] = np.einsum("ntyxc,ntyxo->co", view, g.astype(np.float64))
  return dw


class Conv3dMatchesLaxTest(parameterized.TestCase):

  def tearDown(self):
    conv_ops.set_conv_impl("auto")
    super().tearDown()

  def _check(self, case, dtype, rtol, jit=True):
    lhs, rhs, cot = _inputs(case, dtype)
    got = _value_and_grads(_fast_conv, case, lhs, rhs, cot, jit)
    want = _value_and_grads(_ref_conv, case, lhs, rhs, cot)
    for name, g, w in zip(("out", "d_lhs", "d_rhs"), got, want):
      self.assertEqual(g.shape, w.shape, name)
      self.assertEqual(g.dtype, w.dtype, name)
      scale = float(jnp.max(jnp.abs(w))) + 1.0
      np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=rtol, atol=rtol * scale,
                                 err_msg=f"{case[0]} {name}")

  @parameterized.named_parameters(*[(c[0], c) for c in CASES])
  def test_float32_xla_kernels(self, case):
    # The suite's 8 devices: XLA's convolutions (no SPMD rule for the custom calls).
    self._check(case, jnp.float32, 2e-5)

  @parameterized.named_parameters(*[(c[0], c) for c in CASES])
  def test_float32_one_device_plan(self, case):
    # oneDNN forward / stride-1 input gradient and the native weight gradient, where available.
    with _one_device()[0], _one_device()[1]:
      self._check(case, jnp.float32, 2e-5)

  @parameterized.named_parameters(*[(c[0], c) for c in CASES[:10:3]])
  def test_float32_one_device_plan_not_jitted(self, case):
    with _one_device()[0], _one_device()[1]:
      self._check(case, jnp.float32, 2e-5, jit=False)

  @parameterized.named_parameters(*[(c[0], c) for c in CASES[1::2]])
  def test_float64(self, case):
    with jax.enable_x64(True), _one_device()[0], _one_device()[1]:
      self._check(case, jnp.float64, 1e-11)

  def test_lax_impl_is_lax(self):
    conv_ops.set_conv_impl("lax")
    self._check(CASES[8], jnp.float32, 1e-6)
    lhs, rhs, _ = _inputs(CASES[8], jnp.float32)
    jaxpr = str(jax.make_jaxpr(lambda a, b: _fast_conv(a, b, *CASES[8][3:]))(lhs, rhs))
    self.assertNotIn("slice", jaxpr)  # no tap trimming either

  def test_one_device_plan_runs_the_native_weight_gradient(self):
    if not (native_conv3d.available() and onednn_conv.available()):
      self.skipTest("native kernels or oneDNN are not available in this process")
    case = CASES[0]
    lhs, rhs, cot = _inputs(case, jnp.float32)
    hlo = lambda: jax.jit(lambda a, b: _value_and_grads(_fast_conv, case, a, b, cot, jit=False)
                          ).lower(lhs, rhs).compile().as_text()
    with _one_device()[0], _one_device()[1]:
      one_device = hlo()
    self.assertEqual(one_device.count(f'custom_call_target="{native_conv3d.FFI_TARGET}"'), 1)
    self.assertEqual(one_device.count(f'custom_call_target="{onednn_conv.CUSTOM_CALL_TARGET}"'),
                     2)
    self.assertNotIn(native_conv3d.FFI_TARGET, hlo())  # 8 devices: XLA's

  def test_cut_taps_have_zero_gradient_and_one_tap_runs_in_2d(self):
    # R3D-18's stage-4 layer on an 8-frame clip: one input frame, 3 temporal taps, padding 1.
    case = ("stage4", (2, 1, 4, 4, 16), (3, 3, 3, 16, 16), (1, 1, 1), ((1, 1),) * 3, None, 1)
    lhs, rhs, cot = _inputs(case, jnp.float32)
    _, _, d_rhs = _value_and_grads(_fast_conv, case, lhs, rhs, cot)
    np.testing.assert_array_equal(np.asarray(d_rhs[0]), 0.0)
    np.testing.assert_array_equal(np.asarray(d_rhs[2]), 0.0)
    self.assertGreater(float(jnp.max(jnp.abs(d_rhs[1]))), 0.0)
    hlo = jax.jit(lambda a, b: _fast_conv(a, b, *case[3:])).lower(lhs, rhs).compile().as_text()
    convs = [line for line in hlo.splitlines() if " convolution(" in line]
    self.assertLen(convs, 1)
    self.assertIn("window={size=3x3 ", convs[0])  # a 2-D convolution of the frames


class FewPixelPlanTest(absltest.TestCase):

  def test_adjust_plan_follows_the_measured_rule(self):
    plan_t = conv_ops._Plan  # pylint: disable=protected-access
    onednn = plan_t(False, False, False, onednn=True, native_dw=True)
    same = ((1, 1), (1, 1))
    adjust = lambda lhs, rhs: conv3d.adjust_plan(onednn, lhs, rhs, (1, 1), same, (1, 1))
    # R3D-18 stage 4 (batch 2, 4x4 pixels, 9.4 MB kernel): XLA forward, col2im input gradient.
    self.assertEqual(adjust((2, 4, 4, 512), (3, 3, 512, 512)),
                     onednn._replace(onednn=False, matmul_dx=True))
    # Input smaller than the window: im2col forward too.
    self.assertEqual(adjust((2, 2, 2, 512), (3, 3, 512, 512)),
                     onednn._replace(onednn=False, matmul_dx=True, matmul_fwd=True))
    # A 2.4 MB kernel stays on oneDNN; 98 pixels: col2im.
    self.assertEqual(adjust((2, 7, 7, 256), (3, 3, 256, 256)), onednn._replace(matmul_dx=True))
    # 128-255 pixels: only the kernel size rule; from 256 pixels on, the plan as it was.
    self.assertEqual(adjust((4, 6, 6, 512), (3, 3, 512, 512)), onednn._replace(onednn=False))
    self.assertEqual(adjust((4, 8, 8, 512), (3, 3, 512, 512)), onednn)

  def test_large_kernel_on_few_pixels_matches_lax(self):
    # The plan above, end to end: a one-frame clip through a 3x3x3, 512-channel layer.
    case = ("deep", (1, 1, 2, 3, 512), (3, 3, 3, 512, 512), (1, 1, 1), ((1, 1),) * 3, None, 1)
    lhs, rhs, cot = _inputs(case, jnp.float32)
    with _one_device()[0], _one_device()[1]:
      got = _value_and_grads(_fast_conv, case, lhs, rhs, cot)
    want = _value_and_grads(_ref_conv, case, lhs, rhs, cot)
    for name, g, w in zip(("out", "d_lhs", "d_rhs"), got, want):
      scale = float(jnp.max(jnp.abs(w))) + 1.0
      np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=2e-5, atol=2e-5 * scale,
                                 err_msg=name)


class TrimTapsTest(parameterized.TestCase):

  def test_keeps_exactly_the_span_of_used_taps(self):
    for size, k, s, d, pads in itertools.product((1, 2, 3, 5), (1, 3, 4), (1, 2, 3), (1, 2),
                                                 ((0, 0), (1, 1), (2, 0), (0, 3), (3, 3))):
      with self.subTest(size=size, k=k, s=s, d=d, pads=pads):
        self._check_axis(size, k, s, d, pads)

  def _check_axis(self, size, k, s, d, pads):
    lo, hi = pads
    out = (size + lo + hi - (k - 1) * d - 1) // s + 1
    if out < 1:
      return
    used = [t for t in range(k) if any(0 <= p * s + t * d - lo < size for p in range(out))]
    (taps,), (new_pads,) = conv3d.trim_taps((size,), (k,), (s,), (pads,), (d,))
    first, stop = taps
    new_lo, new_hi = new_pads
    self.assertGreaterEqual(min(new_lo, new_hi), 0)
    self.assertEqual((size + new_lo + new_hi - (stop - first - 1) * d - 1) // s + 1, out)
    self.assertTrue(all(first <= t < stop for t in used))
    if used and (new_lo, new_hi) != (lo, hi):
      self.assertEqual((first, stop - 1), (used[0], used[-1]))
    # Tap first + m at output p reads the same input position as before the cut.
    for p, m in itertools.product(range(out), range(stop - first)):
      self.assertEqual(p * s + m * d - new_lo, p * s + (first + m) * d - lo)

  def test_deep_r3d_layers(self):
    # 1 frame, kernel 3, padding 1: the middle tap alone; 2 frames, stride 2: the last two.
    self.assertEqual(conv3d.trim_taps((1, 4, 4), (3, 3, 3), (1, 1, 1), ((1, 1),) * 3,
                                      (1, 1, 1)),
                     (((1, 2), (0, 3), (0, 3)), ((0, 0), (1, 1), (1, 1))))
    self.assertEqual(conv3d.trim_taps((2,), (3,), (2,), ((1, 1),), (1,)), (((1, 3),), ((0, 0),)))

  def test_trimmed_kernel_gives_the_same_convolution(self):
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(2, 2, 5, 3, 4)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 3, 4, 5)), jnp.float32)
    pads = ((1, 1), (1, 1), (2, 2))
    cut, new_pads = conv3d.trimmed_kernel(x.shape[1:-1], w, (2, 1, 1), pads, (1, 1, 1))
    self.assertEqual(cut.shape, (2, 3, 3, 4, 5))
    np.testing.assert_allclose(
        np.asarray(lax.conv_general_dilated(x, cut, (2, 1, 1), new_pads, dimension_numbers=NDHWC)),
        np.asarray(lax.conv_general_dilated(x, w, (2, 1, 1), pads, dimension_numbers=NDHWC)),
        rtol=1e-5, atol=1e-5)
    same, same_pads = conv3d.trimmed_kernel((4, 4, 4), w, (1, 1, 1), pads, (1, 1, 1))
    self.assertIs(same, w)
    self.assertEqual(same_pads, pads)


# (name, x shape, out channels, kernel, strides, pads, dilation): register blocks of 4, 2, 1 and a
# partial vector of output channels, input-channel tails, strides, dilation, asymmetric padding,
# a temporal tap that never reads the input, a batch of one, more frames than one cache group.
NATIVE_CASES = [
    ("stem", (2, 4, 12, 12, 3), 64, (3, 5, 5), (1, 2, 2), ((1, 1), (2, 2), (2, 2)), (1, 1, 1)),
    ("blocks_and_tails", (2, 3, 6, 5, 21), 83, (3, 3, 2), (1, 2, 1), ((1, 1), (1, 2), (0, 1)),
     (1, 1, 2)),
    ("s2_dilated", (1, 7, 9, 9, 16), 48, (2, 3, 3), (2, 2, 2), ((0, 1), (1, 1), (2, 0)),
     (3, 2, 1)),
    ("one_frame", (3, 1, 4, 4, 32), 16, (3, 3, 3), (1, 1, 1), ((1, 1),) * 3, (1, 1, 1)),
    ("few_outputs", (2, 3, 5, 4, 5), 3, (1, 2, 3), (2, 1, 2), ((0, 0), (0, 1), (2, 2)),
     (1, 1, 1)),
    ("many_frames", (2, 40, 24, 24, 16), 32, (3, 1, 1), (1, 1, 1), ((1, 1), (0, 0), (0, 0)),
     (1, 1, 1)),
]


class NativeConv3dWeightGradTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    if shutil.which(os.environ.get("CXX") or "c++") is None and shutil.which("g++") is None:
      self.skipTest("no C++ compiler on this machine: the lax fallback is tested below")

  def test_available_where_a_compiler_is(self):
    if os.environ.get(native_build.OPT_OUT_ENV, "1") == "0":  # the CI's fallback run
      self.assertFalse(native_conv3d.available())
      return
    self.assertTrue(native_conv3d.available(), native_build.build_error("conv3d_weight_grad"))

  @parameterized.named_parameters(NATIVE_CASES)
  def test_matches_numpy_reference(self, shape, o, kshape, strides, pads, dil):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    out_sp = native_conv3d.out_spatial(shape, kshape, strides, pads, dil)
    g = rng.standard_normal((shape[0],) + out_sp + (o,)).astype(np.float32)
    want = _numpy_weight_grad(x, g, kshape, strides, pads, dil)
    fn = lambda a, b: native_conv3d.conv3d_weight_grad(a, b, kshape, strides, pads, dil)
    # float32 sums over up to 46k products: the tolerance scales with the largest entry.
    atol = 1e-4 + 1e-5 * float(np.max(np.abs(want)))
    for got in (fn(x, g), jax.jit(fn)(x, g)):
      self.assertEqual(got.dtype, jnp.float32)
      np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=atol)

  def test_per_frame_images_take_the_3d_kernel(self):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 5, 4, 24)).astype(np.float32)
    g = rng.standard_normal((3, 3, 4, 40)).astype(np.float32)
    params = ((3, 3), (2, 1), ((1, 1), (1, 1)), (1, 1))
    got = jax.jit(lambda a, b: native_conv3d.video_weight_grad(a, b, *params))(x, g)
    want = _numpy_weight_grad(x[:, None], g[:, None], (1, 3, 3), (1, 2, 1),
                              ((0, 0), (1, 1), (1, 1)), (1, 1, 1))[0]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)

  def test_bit_identical_from_call_to_call(self):
    # Every dw element is summed by one thread in a fixed order.
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.standard_normal((2, 6, 14, 14, 16)).astype(np.float32))
    g = jnp.asarray(rng.standard_normal((2, 6, 14, 14, 32)).astype(np.float32))
    fn = jax.jit(lambda a, b: native_conv3d.conv3d_weight_grad(
        a, b, (3, 3, 3), (1, 1, 1), ((1, 1),) * 3, (1, 1, 1)))
    first = np.asarray(fn(x, g))
    for _ in range(4):
      np.testing.assert_array_equal(np.asarray(fn(x, g)), first)

  def test_in_loop_body_starts_from_zero(self):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 2, 3, 5, 5, 8)).astype(np.float32)
    g = rng.standard_normal((3, 2, 3, 5, 5, 16)).astype(np.float32)
    params = ((3, 3, 3), (1, 1, 1), ((1, 1),) * 3, (1, 1, 1))

    @jax.jit
    def total(xs, gs):
      return lax.fori_loop(0, 3, lambda i, acc: acc + native_conv3d.conv3d_weight_grad(
          xs[i], gs[i], *params), jnp.zeros((3, 3, 3, 8, 16), jnp.float32))

    want = sum(_numpy_weight_grad(x[i], g[i], *params) for i in range(3))
    np.testing.assert_allclose(np.asarray(total(x, g)), want, rtol=1e-4, atol=1e-4)

  def test_jvp_and_vmap_follow_the_lax_gradient(self):
    rng = np.random.default_rng(4)
    x, dx = (jnp.asarray(rng.standard_normal((2, 3, 4, 4, 4)).astype(np.float32)) for _ in "ab")
    g, dg = (jnp.asarray(rng.standard_normal((2, 3, 4, 4, 16)).astype(np.float32)) for _ in "ab")
    params = dict(kshape=(3, 3, 3), strides=(1, 1, 1), pads=((1, 1),) * 3, rhs_dil=(1, 1, 1))
    fn = lambda a, b: native_conv3d.conv3d_weight_grad(a, b, **params)
    ref = lambda a, b: native_conv3d._reference(a, b, **params)  # pylint: disable=protected-access
    for got, want in zip(jax.jvp(fn, (x, g), (dx, dg)), jax.jvp(ref, (x, g), (dx, dg))):
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    xs, gs = jnp.stack([x, dx]), jnp.stack([g, dg])
    np.testing.assert_allclose(jax.vmap(fn)(xs, gs), jax.vmap(ref)(xs, gs), rtol=1e-4,
                               atol=1e-4)

  def test_plan_uses_native_on_one_device_float32_only(self):
    x = jnp.zeros((2, 3, 8, 8, 16), jnp.float32)
    w = jnp.zeros((3, 3, 3, 16, 16), jnp.float32)
    applies = conv_ops._native_dw_applies  # pylint: disable=protected-access
    with mock.patch.object(jax, "device_count", return_value=1):
      on = os.environ.get(native_build.OPT_OUT_ENV, "1") != "0"  # off in the fallback run
      self.assertEqual(applies(x, w, None, video=True), on)
      self.assertEqual(applies(x[:, 0], w[0], None, video=True), on)  # a per-frame 2-D part
      self.assertFalse(applies(x, w, None))  # 3-D convolutions always come as video ones
      self.assertFalse(applies(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), None, True))
      self.assertFalse(applies(x, w, jnp.dtype(jnp.float64), video=True))
    self.assertFalse(applies(x, w, None, video=True))  # 8 test devices: no SPMD rule


class ChecksAndFallbackTest(absltest.TestCase):

  def test_bad_inputs_name_the_problem(self):
    x = jnp.zeros((2, 3, 8, 8, 4), jnp.float32)
    g = jnp.zeros((2, 3, 8, 8, 16), jnp.float32)
    same = ((3, 3, 3), (1, 1, 1), ((1, 1),) * 3, (1, 1, 1))
    with self.assertRaisesRegex(ValueError, "float32"):
      native_conv3d.conv3d_weight_grad(x.astype(jnp.bfloat16), g, *same)
    with self.assertRaisesRegex(ValueError, "output shape"):
      native_conv3d.conv3d_weight_grad(x, g[:, :2], *same)
    with self.assertRaisesRegex(ValueError, "padding >= 0"):
      native_conv3d.conv3d_weight_grad(x, g, (3, 3, 3), (1, 1, 1), ((-1, 1), (1, 1), (1, 1)),
                                       (1, 1, 1))
    with self.assertRaisesRegex(ValueError, "NDHWC pair"):
      native_conv3d.conv3d_weight_grad(x[0], g[0], *same)

  def test_without_the_kernel_falls_back_to_lax(self):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 5, 5, 3)).astype(np.float32)
    g = rng.standard_normal((2, 3, 5, 5, 16)).astype(np.float32)
    params = ((3, 3, 3), (1, 1, 1), ((1, 1),) * 3, (1, 1, 1))
    with mock.patch.object(native_conv3d, "available", return_value=False):
      got = native_conv3d.conv3d_weight_grad(x, g, *params)
      jaxpr = str(jax.make_jaxpr(lambda a, b: native_conv3d.conv3d_weight_grad(a, b, *params))(
          x, g))
    self.assertNotIn(native_conv3d.FFI_TARGET, jaxpr)
    np.testing.assert_allclose(np.asarray(got), _numpy_weight_grad(x, g, *params), rtol=1e-4,
                               atol=1e-4)


if __name__ == "__main__":
  absltest.main()
