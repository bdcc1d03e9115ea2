"""Tests for jaxcompress.ops.conv: equality with lax.conv_general_dilated (values and gradients)."""
from __future__ import annotations

import itertools
from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from jax import lax

from jaxcompress.ops import conv as conv_ops
from jaxcompress.ops import onednn_conv
from jaxcompress.ops import padding as padding_lib

NHWC = ("NHWC", "HWIO", "NHWC")

# (name, lhs shape, rhs shape, strides, padding, lhs_dilation, rhs_dilation, feature groups)
CASES = [
    ("3x3_s1_same", (2, 6, 6, 3), (3, 3, 3, 4), (1, 1), "SAME", None, None, 1),
    ("3x3_s2_same_odd", (2, 7, 9, 3), (3, 3, 3, 5), (2, 2), "SAME", None, None, 1),
    ("3x3_s2_valid", (2, 9, 7, 3), (3, 3, 3, 2), (2, 2), "VALID", None, None, 1),
    ("3x3_asym_explicit", (2, 7, 6, 3), (3, 3, 3, 4), (1, 2), ((2, 0), (1, 3)), None, None, 1),
    ("3x3_dilation2", (2, 9, 8, 3), (3, 3, 3, 4), (1, 1), "SAME", None, (2, 2), 1),
    ("3x3_dilation2_s2_valid", (2, 11, 11, 2), (3, 3, 2, 3), (2, 2), "VALID", None, (2, 1), 1),
    ("1x1_s1", (2, 5, 5, 4), (1, 1, 4, 3), (1, 1), "VALID", None, None, 1),
    ("1x1_s2", (2, 7, 7, 4), (1, 1, 4, 3), (2, 2), "VALID", None, None, 1),
    ("1x1_padded", (2, 5, 5, 4), (1, 1, 4, 3), (1, 1), ((1, 0), (0, 1)), None, None, 1),
    ("5x5_same", (3, 7, 7, 2), (5, 5, 2, 3), (1, 1), "SAME", None, None, 1),
    ("2x4_kernel", (2, 6, 7, 2), (2, 4, 2, 3), (1, 1), "SAME_LOWER", None, None, 1),
    ("batch_7_prime", (7, 5, 5, 2), (3, 3, 2, 2), (1, 1), "SAME", None, None, 1),
    ("groups2", (2, 6, 6, 4), (3, 3, 2, 6), (1, 1), "SAME", None, None, 2),
    ("depthwise", (2, 6, 6, 4), (3, 3, 1, 4), (2, 2), "SAME", None, None, 4),
    ("depthwise_mult2_dilated", (2, 9, 8, 3), (3, 3, 1, 6), (1, 1), ((2, 1), (0, 3)), None,
     (2, 2), 3),
    ("depthwise_5x5_s2_valid", (3, 11, 10, 4), (5, 5, 1, 4), (2, 1), "VALID", None, None, 4),
    ("depthwise_negative_pad", (2, 8, 7, 2), (3, 3, 1, 2), (1, 2), ((-1, 2), (1, -1)), None,
     None, 2),
    ("transposed_lhs_dilation", (2, 5, 5, 3), (3, 3, 3, 2), (1, 1), ((2, 2), (1, 2)), (2, 2),
     None, 1),
]


def _value_and_grads(conv, lhs, rhs, cot, strides, padding, lhs_dil, rhs_dil, groups,
                     dimension_numbers=NHWC):
  """Jitted conv output and d<out, cot>/d(lhs, rhs) for the given conv function."""
  def loss(a, b):
    out = conv(a, b, strides, padding, lhs_dilation=lhs_dil, rhs_dilation=rhs_dil,
               dimension_numbers=dimension_numbers, feature_group_count=groups)
    return jnp.sum(out * cot), out
  (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(lhs, rhs)
  return out, grads[0], grads[1]


def _inputs(lhs_shape, rhs_shape, strides, padding, lhs_dil, rhs_dil, groups, dtype,
            dimension_numbers=NHWC):
  rng = np.random.default_rng(sum(lhs_shape) + 7 * sum(rhs_shape))
  lhs = jnp.asarray(rng.normal(size=lhs_shape), dtype)
  rhs = jnp.asarray(rng.normal(size=rhs_shape), dtype)
  out_shape = jax.eval_shape(
      lambda a, b: lax.conv_general_dilated(a, b, strides, padding, lhs_dilation=lhs_dil,
                                            rhs_dilation=rhs_dil,
                                            dimension_numbers=dimension_numbers,
                                            feature_group_count=groups), lhs, rhs).shape
  cot = jnp.asarray(rng.normal(size=out_shape), dtype)
  return lhs, rhs, cot


class ConvGeneralDilatedTest(parameterized.TestCase):

  def tearDown(self):
    conv_ops.set_conv_impl("auto")
    super().tearDown()

  def _check(self, impl, dtype, rtol, case, dimension_numbers=NHWC):
    _, lhs_shape, rhs_shape, strides, padding, lhs_dil, rhs_dil, groups = case
    lhs, rhs, cot = _inputs(lhs_shape, rhs_shape, strides, padding, lhs_dil, rhs_dil, groups,
                            dtype, dimension_numbers)
    conv_ops.set_conv_impl(impl)
    got = _value_and_grads(conv_ops.conv_general_dilated, lhs, rhs, cot, strides, padding,
                           lhs_dil, rhs_dil, groups, dimension_numbers)
    want = _value_and_grads(lax.conv_general_dilated, lhs, rhs, cot, strides, padding, lhs_dil,
                            rhs_dil, groups, dimension_numbers)
    for name, g, w in zip(("out", "d_lhs", "d_rhs"), got, want):
      self.assertEqual(g.shape, w.shape, name)
      self.assertEqual(g.dtype, w.dtype, name)
      scale = float(jnp.max(jnp.abs(w))) + 1.0
      np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=rtol, atol=rtol * scale,
                                 err_msg=f"{case[0]} {impl} {name}")

  @parameterized.named_parameters(*[(c[0], c) for c in CASES])
  def test_matches_lax_float32(self, case):
    self._check("auto", jnp.float32, 2e-5, case)

  @parameterized.named_parameters(*[(c[0], c) for c in CASES])
  def test_matches_lax_with_onednn_convolutions(self, case):
    # The suite runs on 8 virtual CPU devices, where the layer keeps XLA's convolutions; this
    # is the one-device choice for convolutions above the size threshold (lowered to 0 for
    # these small cases): forward and stride-1 input gradients on oneDNN.
    if not onednn_conv.available():
      self.skipTest("oneDNN convolutions are not available in this process")
    with mock.patch.object(conv_ops.jax, "device_count", return_value=1), \
        mock.patch.object(conv_ops, "_ONEDNN_MIN_FLOPS", 0):
      self._check("auto", jnp.float32, 2e-5, case)

  def test_onednn_runs_the_forward_and_input_gradient(self):
    if not onednn_conv.available():
      self.skipTest("oneDNN convolutions are not available in this process")
    lhs, rhs, _ = _inputs((2, 6, 6, 3), (3, 3, 3, 4), (1, 1), "SAME", None, None, 1,
                          jnp.float32)
    hlo = lambda: jax.jit(jax.value_and_grad(lambda a, b: jnp.sum(
        conv_ops.conv_general_dilated(a, b, (1, 1), "SAME", dimension_numbers=NHWC) ** 2),
        argnums=(0, 1))).lower(lhs, rhs).compile().as_text()
    target = f'custom_call_target="{onednn_conv.CUSTOM_CALL_TARGET}"'
    with mock.patch.object(conv_ops.jax, "device_count", return_value=1), \
        mock.patch.object(conv_ops, "_ONEDNN_MIN_FLOPS", 0):
      one_device = hlo()
    # Forward and input gradient: two custom calls; the weight gradient stays XLA's.
    self.assertEqual(one_device.count(target), 2)
    # Several devices (this suite runs on 8): XLA's convolutions only.
    self.assertEqual(jax.device_count(), 8)
    self.assertNotIn(target, hlo())

  def test_cacheable_programs_keep_convolutions_off_onednn(self):
    # Inside `cacheable_programs` the same one-device program holds no oneDNN call (XLA cannot
    # serialise it), with the forward and both gradients still lax's values.
    if not onednn_conv.available():
      self.skipTest("oneDNN convolutions are not available in this process")
    lhs, rhs, _ = _inputs((2, 6, 6, 3), (3, 3, 3, 4), (1, 1), "SAME", None, None, 1,
                          jnp.float32)
    loss = lambda conv: lambda a, b: jnp.sum(  # noqa: E731
        conv(a, b, (1, 1), "SAME", dimension_numbers=NHWC) ** 2)
    # A new jit each time: JAX's trace cache does not know the block.
    grads = lambda: jax.jit(jax.value_and_grad(  # noqa: E731
        loss(conv_ops.conv_general_dilated), argnums=(0, 1)))
    target = f'custom_call_target="{onednn_conv.CUSTOM_CALL_TARGET}"'
    with mock.patch.object(conv_ops.jax, "device_count", return_value=1), \
        mock.patch.object(conv_ops, "_ONEDNN_MIN_FLOPS", 0):
      self.assertIn(target, grads().lower(lhs, rhs).compile().as_text())
      with conv_ops.cacheable_programs():
        self.assertNotIn(target, grads().lower(lhs, rhs).compile().as_text())
        got = grads()(lhs, rhs)
      self.assertIn(target, grads().lower(lhs, rhs).compile().as_text())  # reset on exit
    want = jax.value_and_grad(loss(lax.conv_general_dilated), argnums=(0, 1))(lhs, rhs)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)

  @parameterized.named_parameters(*[(c[0], c) for c in CASES[1::2]])
  def test_matmul_impl_matches_lax(self, case):
    self._check("matmul", jnp.float32, 2e-5, case)

  @parameterized.named_parameters(*[(c[0], c) for c in CASES[::3]])
  def test_matches_lax_float64(self, case):
    with jax.enable_x64(True):
      self._check("auto", jnp.float64, 1e-11, case)

  def test_bfloat16_keeps_dtype(self):
    case = CASES[0]
    self._check("auto", jnp.bfloat16, 3e-2, case)

  def test_negative_padding_crops(self):
    # Reference: crop explicitly, then lax with the non-negative remainder. (lax itself with
    # negative padding returned garbage on XLA:CPU in jaxlib 0.10.2.)
    lhs, rhs, cot = _inputs((2, 8, 8, 3), (3, 3, 3, 4), (1, 1), "VALID", None, None, 1,
                            jnp.float32)
    cot = cot[:, :6, :5]
    def ref(a, b, strides, padding, **kwargs):
      del padding
      a = jnp.pad(a[:, 1:, :7], ((0, 0), (0, 1), (0, 0), (0, 0)))
      return lax.conv_general_dilated(a, b, strides, "VALID", **kwargs)
    for impl in ("auto", "matmul"):
      conv_ops.set_conv_impl(impl)
      got = _value_and_grads(conv_ops.conv_general_dilated, lhs, rhs, cot, (1, 1),
                             ((-1, 1), (0, -1)), None, None, 1)
      want = _value_and_grads(ref, lhs, rhs, cot, (1, 1), None, None, None, 1)
      for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=2e-5, atol=2e-4)

  def test_one_spatial_dim(self):
    case = ("1d", (2, 9, 3), (3, 3, 4), (2,), "SAME", None, (2,), 1)
    self._check("auto", jnp.float32, 2e-5, case, dimension_numbers=("NWC", "WIO", "NWC"))

  def test_nchw_falls_back_to_lax(self):
    case = ("nchw", (2, 3, 6, 6), (4, 3, 3, 3), (1, 1), "SAME", None, None, 1)
    self._check("auto", jnp.float32, 1e-6, case, dimension_numbers=None)
    lhs, rhs, _ = _inputs(*case[1:], jnp.float32, None)
    jaxpr = jax.make_jaxpr(jax.grad(
        lambda a, b: jnp.sum(conv_ops.conv_general_dilated(a, b, (1, 1), "SAME")), argnums=1))(
            lhs, rhs)
    self.assertNotIn("dot_general", str(jaxpr))

  def test_impl_switch(self):
    # An unpadded 1x1 kernel: the auto plan computes the weight gradient as a matmul (a
    # dot_general), lax as a convolution.
    lhs, rhs, _ = _inputs((2, 6, 6, 16), (1, 1, 16, 4), (1, 1), "VALID", None, None, 1,
                          jnp.float32)
    grad_jaxpr = lambda: str(jax.make_jaxpr(jax.grad(
        lambda a, b: jnp.sum(conv_ops.conv_general_dilated(a, b, (1, 1), "VALID",
                                                           dimension_numbers=NHWC)),
        argnums=1))(lhs, rhs))
    conv_ops.set_conv_impl("lax")
    self.assertEqual(conv_ops.get_conv_impl(), "lax")
    self.assertNotIn("dot_general", grad_jaxpr())
    conv_ops.set_conv_impl("auto")
    if jax.default_backend() == "cpu":
      self.assertIn("dot_general", grad_jaxpr())
    else:  # GPU/TPU: auto is XLA's native convolution
      self.assertNotIn("dot_general", grad_jaxpr())
    conv_ops.set_conv_impl("matmul")
    self.assertIn("dot_general", grad_jaxpr())
    with self.assertRaisesRegex(ValueError, "matmul"):
      conv_ops.set_conv_impl("winograd")

  @parameterized.named_parameters(
      *[(f"{c[0]}_{''.join('1' if b else '0' for b in plan)}", c, plan)
        for c in CASES if c[7] == 1 and c[5] is None
        for plan in itertools.product((False, True), repeat=3)])
  def test_every_plan_matches_lax(self, case, plan):
    # Each formulation the CPU plan can pick (forward / input gradient / weight gradient as
    # matmuls or canonical XLA convolutions), whichever the rule would choose for these shapes.
    _, lhs_shape, rhs_shape, strides, padding, _, rhs_dil, _ = case
    lhs, rhs, cot = _inputs(lhs_shape, rhs_shape, strides, padding, None, rhs_dil, 1,
                            jnp.float32)
    rhs_dil_t = tuple(rhs_dil or (1, 1))
    pads = padding_lib.explicit_pads(padding, lhs_shape[1:-1], rhs_shape[:-2], strides,
                                     rhs_dil_t)
    fast = lambda a, b, *args, **kwargs: conv_ops._fast_conv(
        a, b, tuple(strides), pads, rhs_dil_t, None, None, conv_ops._Plan(*plan))
    got = _value_and_grads(fast, lhs, rhs, cot, strides, padding, None, rhs_dil, 1)
    want = _value_and_grads(lax.conv_general_dilated, lhs, rhs, cot, strides, padding, None,
                            rhs_dil, 1)
    for name, g, w in zip(("out", "d_lhs", "d_rhs"), got, want):
      scale = float(jnp.max(jnp.abs(w))) + 1.0
      np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=2e-5, atol=2e-5 * scale,
                                 err_msg=f"{case[0]} {plan} {name}")

  def test_cpu_plan_follows_the_measured_rule(self):
    plan = conv_ops._cpu_plan
    same = ((1, 1), (1, 1))
    # 1x1 unpadded: all matmuls, in either regime.
    self.assertEqual(plan(64, (1, 1), (1, 1), ((0, 0), (0, 0)), True)[:3], (True, True, True))
    self.assertEqual(plan(64, (1, 1), (2, 2), ((0, 0), (0, 0)), False)[:3], (True, True, True))
    # YNNPACK convolutions: matmul weight gradient; col2im input gradient when strided.
    self.assertEqual(plan(64, (3, 3), (2, 2), same, False)[:3], (False, True, True))
    self.assertEqual(plan(64, (3, 3), (1, 1), same, False)[:3], (False, False, True))
    # Eigen: col2im input gradient for strided convs; XLA's (blocked) weight gradient.
    self.assertEqual(plan(16, (3, 3), (1, 1), same, True)[:3], (False, False, False))
    self.assertEqual(plan(16, (3, 3), (2, 2), same, True)[:3], (False, True, False))
    self.assertEqual(plan(32, (3, 3), (2, 2), same, True)[:3], (False, True, False))
    self.assertEqual(plan(64, (3, 3), (1, 1), same, True)[:3], (False, False, False))
    self.assertEqual(plan(3, (3, 3), (1, 1), same, True)[:3], (False, False, False))

  def test_gradients_are_canonical_convolutions_inside_loops(self):
    # XLA:CPU canonicalises jax.vjp's gradient convolutions only in the entry computation; in
    # a loop body they ran as a naive loop nest (50-90x slower). Every convolution the fast
    # path emits, inside a lax.scan too, must be in the channel-last form Eigen runs.
    lhs, rhs, _ = _inputs((2, 6, 6, 64), (3, 3, 64, 8), (1, 1), "SAME", None, None, 1,
                          jnp.float32)
    conv = lambda a, b: conv_ops.conv_general_dilated(a, b, (1, 1), "SAME",
                                                      dimension_numbers=NHWC)
    grad = jax.grad(lambda a, b: jnp.sum(jnp.sin(conv(a, b))), argnums=(0, 1))

    def body(carry, _):
      a, b = carry
      da, db = grad(a, b)
      return (a - 0.1 * da, b - 0.1 * db), None

    scanned = jax.jit(lambda a, b: jax.lax.scan(body, (a, b), None, length=3)[0])
    with mock.patch.object(conv_ops.xla_cpu, "eigen_convolutions", return_value=True):
      hlo = scanned.lower(lhs, rhs).compile().as_text()
      got = scanned(lhs, rhs)
    convs = [line for line in hlo.splitlines() if " convolution(" in line]
    if jax.default_backend() == "cpu":
      self.assertLen(convs, 3)  # forward, input and weight gradient, in the loop body
      for line in convs:
        self.assertIn("dim_labels=b01f_01io->b01f", line)
        self.assertNotIn("rhs_reversal", line)
    conv_ops.set_conv_impl("lax")
    want = jax.jit(lambda a, b: jax.lax.scan(body, (a, b), None, length=3)[0])(lhs, rhs)
    for g, w in zip(got, want):
      np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=2e-5, atol=2e-5)

  def test_chunk_size_gives_every_device_a_block(self):
    # 1 MiB blocks: 400 KB images -> 2 per device; the chunk is a multiple of the device count.
    self.assertEqual(conv_ops._chunk_size(128, 400_000, 1), 2)
    self.assertEqual(conv_ops._chunk_size(128, 400_000, 8), 16)
    self.assertEqual(conv_ops._chunk_size(24, 400_000, 8), 8)
    self.assertEqual(conv_ops._chunk_size(6, 400_000, 4), 6)  # no multiple of 4 divides 6
    self.assertEqual(conv_ops._chunk_images(128, 8, 1), 8)
    self.assertEqual(conv_ops._chunk_images(128, 8, 8), 64)
    self.assertEqual(conv_ops._chunk_images(100, 8, 1), 5)
    for n, shards in itertools.product((1, 6, 64, 100, 128), (1, 2, 8)):
      self.assertEqual(n % conv_ops._chunk_size(n, 150_000, shards), 0)

  @parameterized.named_parameters(("separable", (64, 32, 32, 16), (3, 3, 16, 16), (1, 1), False),
                                  ("im2col_strided", (64, 32, 32, 16), (3, 3, 16, 32), (2, 2),
                                   False),
                                  ("xla_blocked", (256, 8, 8, 32), (3, 3, 32, 32), (1, 1), True))
  def test_weight_grad_stays_local_on_a_sharded_batch(self, lhs_shape, rhs_shape, strides,
                                                      xla_conv):
    # Data parallelism on CPU devices: the batch-chunked weight gradient must read each
    # device's own images. Contiguous batch blocks made XLA all-gather every activation (14
    # all-gathers per ResNet-20 step on 8 devices, 2.1x slower); only the all-reduce of dW is
    # expected.
    if jax.device_count() < 2 or jax.default_backend() != "cpu":
      self.skipTest("needs several CPU devices (tests/conftest.py forces 8)")
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
    batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    lhs, rhs, cot = _inputs(lhs_shape, rhs_shape, strides, "SAME", None, None, 1, jnp.float32)
    pads = padding_lib.explicit_pads("SAME", lhs_shape[1:-1], rhs_shape[:-2], strides, (1, 1))
    if xla_conv:
      self.enter_context(mock.patch.object(conv_ops, "_PATCH_BLOCK_BYTES", 1024))
      dw = jax.jit(lambda a, g: conv_ops._blocked_weight_grad(a, g, rhs_shape[:2], strides, pads,
                                                              (1, 1), None, None))
    else:
      dw = jax.jit(lambda a, g: conv_ops._weight_grad(a, g, rhs_shape[:2], strides, pads,
                                                      (1, 1), None))
    lhs_s, cot_s = jax.device_put(lhs, batch), jax.device_put(cot, batch)
    hlo = dw.lower(lhs_s, cot_s).compile().as_text()
    self.assertNotIn("all-gather", hlo)
    self.assertIn("while", hlo)  # several loop steps: the case that used to gather
    want = jax.vjp(lambda b: lax.conv_general_dilated(lhs, b, strides, "SAME",
                                                      dimension_numbers=NHWC), rhs)[1](cot)[0]
    np.testing.assert_allclose(np.asarray(dw(lhs_s, cot_s)), np.asarray(want), rtol=2e-5,
                               atol=2e-5 * (float(jnp.max(jnp.abs(want))) + 1.0))

  @parameterized.named_parameters(
      ("3x3_s1", (128, 6, 6, 32), (3, 3, 32, 8), (1, 1), "SAME", None),
      ("3x3_s2_dilated", (128, 9, 7, 40), (3, 3, 40, 4), (2, 2), ((1, 2), (0, 1)), (1, 2)),
      ("stem_3ch", (192, 8, 8, 3), (3, 3, 3, 16), (1, 1), "SAME", None))
  def test_blocked_xla_weight_grad_matches_lax(self, lhs_shape, rhs_shape, strides, padding,
                                               rhs_dil):
    # The XLA weight gradient runs in a fori_loop over strided batch blocks (a fusion barrier);
    # batches of 128-192 images make several loop steps even with 8 forced devices.
    lhs, rhs, cot = _inputs(lhs_shape, rhs_shape, strides, padding, None, rhs_dil, 1,
                            jnp.float32)
    rhs_dil_t = tuple(rhs_dil or (1, 1))
    pads = padding_lib.explicit_pads(padding, lhs_shape[1:-1], rhs_shape[:-2], strides,
                                     rhs_dil_t)
    chunk = conv_ops._chunk_images(lhs_shape[0], conv_ops._XLA_WEIGHT_GRAD_BLOCK_IMAGES,
                                   conv_ops._batch_shards())
    self.assertGreaterEqual(lhs_shape[0] // chunk, 2)
    blocked = jax.jit(lambda a, g: conv_ops._blocked_weight_grad(
        a, g, rhs_shape[:2], tuple(strides), pads, rhs_dil_t, None, None))
    # Activations this small are not blocked by default (loop overhead); shrink the threshold.
    self.enter_context(mock.patch.object(conv_ops, "_PATCH_BLOCK_BYTES", 1024))
    self.assertIn("while", str(blocked.lower(lhs, cot).as_text()))
    want = jax.vjp(lambda b: lax.conv_general_dilated(lhs, b, strides, padding,
                                                      rhs_dilation=rhs_dil,
                                                      dimension_numbers=NHWC), rhs)[1](cot)[0]
    scale = float(jnp.max(jnp.abs(want))) + 1.0
    np.testing.assert_allclose(np.asarray(blocked(lhs, cot)), np.asarray(want), rtol=2e-5,
                               atol=2e-5 * scale)
    # Through the public entry point with the Eigen plan (XLA weight gradient from 32 channels).
    with mock.patch.object(conv_ops.xla_cpu, "eigen_convolutions", return_value=True):
      got = _value_and_grads(conv_ops.conv_general_dilated, lhs, rhs, cot, strides, padding,
                             None, rhs_dil, 1)
    ref = _value_and_grads(lax.conv_general_dilated, lhs, rhs, cot, strides, padding, None,
                           rhs_dil, 1)
    for name, g, w in zip(("out", "d_lhs", "d_rhs"), got, ref):
      np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=2e-5,
                                 atol=2e-5 * (float(jnp.max(jnp.abs(w))) + 1.0), err_msg=name)

  def test_small_activations_skip_the_weight_grad_loop(self):
    lhs, _, cot = _inputs((128, 6, 6, 32), (3, 3, 32, 8), (1, 1), "SAME", None, None, 1,
                          jnp.float32)
    blocked = jax.jit(lambda a, g: conv_ops._blocked_weight_grad(
        a, g, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), None, None))
    self.assertNotIn("while", str(blocked.lower(lhs, cot).as_text()))  # 0.7 MB < 1 MiB

  def test_blocked_xla_weight_grad_keeps_half_precision_accumulation(self):
    self.enter_context(mock.patch.object(conv_ops, "_PATCH_BLOCK_BYTES", 1024))
    lhs, rhs, cot = _inputs((128, 6, 6, 32), (3, 3, 32, 8), (1, 1), "SAME", None, None, 1,
                            jnp.bfloat16)
    pads = ((1, 1), (1, 1))
    got = jax.jit(lambda a, g: conv_ops._blocked_weight_grad(
        a, g, (3, 3), (1, 1), pads, (1, 1), None, None))(lhs, cot)
    self.assertEqual(got.dtype, jnp.bfloat16)
    want = jax.vjp(lambda b: lax.conv_general_dilated(
        lhs.astype(jnp.float32), b, (1, 1), "SAME", dimension_numbers=NHWC),
        rhs.astype(jnp.float32))[1](cot.astype(jnp.float32))[0]
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want), rtol=2e-2,
                               atol=2e-2 * float(jnp.max(jnp.abs(want))))

  @parameterized.named_parameters(*[(c[0], c) for c in CASES if c[0].startswith("depthwise")])
  def test_depthwise_tap_sums_match_lax(self, case):
    # Depthwise convolutions wider than _DENSE_DEPTHWISE_MAX_CHANNELS run as tap sums; force
    # that path on the small cases (which otherwise take the block-diagonal dense kernel).
    with mock.patch.object(conv_ops, "_DENSE_DEPTHWISE_MAX_CHANNELS", 0):
      self._check("auto", jnp.float32, 2e-5, case)
      with jax.enable_x64(True):
        self._check("auto", jnp.float64, 1e-11, case)

  @parameterized.named_parameters(*[(c[0], c) for c in CASES if c[0].startswith("depthwise")])
  def test_depthwise_block_diagonal_matches_lax(self, case):
    # The dense form of narrow depthwise convolutions (a block-diagonal kernel), forced.
    with mock.patch.object(conv_ops, "_DENSE_DEPTHWISE_MAX_CHANNELS", 1 << 20):
      self._check("auto", jnp.float32, 2e-5, case)
      with jax.enable_x64(True):
        self._check("auto", jnp.float64, 1e-11, case)

  def test_depthwise_is_tap_sums_without_xla_convolutions(self):
    # XLA:CPU's grouped convolution is 24x slower than the tap sums (60x in a loop body).
    lhs, rhs, _ = _inputs((2, 6, 6, 24), (3, 3, 1, 24), (1, 1), "SAME", None, None, 24,
                          jnp.float32)
    conv = lambda a, b: conv_ops.conv_general_dilated(a, b, (1, 1), "SAME",
                                                      dimension_numbers=NHWC,
                                                      feature_group_count=24)
    grad = jax.jit(jax.grad(lambda a, b: jnp.sum(jnp.sin(conv(a, b))), argnums=(0, 1)))
    hlo = grad.lower(lhs, rhs).compile().as_text()
    if jax.default_backend() == "cpu":
      self.assertNotIn(" convolution(", hlo)
    else:  # GPU/TPU keep XLA's grouped convolution (on GPU a cuDNN custom call)
      self.assertRegex(hlo, "convolution|cudnn")

  def test_flax_conv_factory(self):
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 8, 8, 3)), jnp.float32)
    fast = conv_ops.Conv(5, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    self.assertIsInstance(fast, nn.Conv)
    ref = nn.Conv(5, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    variables = ref.init(jax.random.key(0), x)
    loss = lambda m: lambda v: jnp.sum(jnp.sin(m.apply(v, x)))
    g_fast = jax.jit(jax.grad(loss(fast)))(variables)
    g_ref = jax.jit(jax.grad(loss(ref)))(variables)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
                 g_fast, g_ref)
    seen = []

    def interceptor(next_fun, args, kwargs, context):
      if isinstance(context.module, nn.Conv):
        seen.append(context.method_name)
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
      fast.apply(variables, x)
    self.assertIn("__call__", seen)


if __name__ == "__main__":
  absltest.main()
