"""Tests for jaxcompress.ops.conv_transpose: values and gradients against a NumPy scatter
reference, `lax.conv_transpose` and `flax.linen.ConvTranspose`."""
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
from jaxcompress.ops import conv_transpose as ct
from jaxcompress.ops import onednn_conv

# (name, x shape, kernel shape, strides, padding, kernel dilation, transpose_kernel). With
# transpose_kernel the kernel is [*k, features, in], else [*k, in, features].
CASES = [
    # CycleGAN / mobile generator: PyTorch ConvTranspose2d(k3, s2, p1, output_padding 1).
    ("cyclegan_up", (2, 5, 4, 6), (3, 3, 16, 6), (2, 2), ((1, 2), (1, 2)), (1, 1), True),
    ("cyclegan_up_narrow", (1, 4, 5, 6), (3, 3, 5, 6), (2, 2), ((1, 2), (1, 2)), (1, 1), True),
    # pix2pix U-Net: ConvTranspose2d(k4, s2, p1); the head has 3 output channels.
    ("pix2pix_up", (2, 4, 4, 8), (4, 4, 16, 8), (2, 2), ((2, 2), (2, 2)), (1, 1), True),
    ("pix2pix_head", (1, 6, 6, 8), (4, 4, 3, 8), (2, 2), ((2, 2), (2, 2)), (1, 1), True),
    ("pix2pix_innermost_1x1", (2, 1, 1, 8), (4, 4, 16, 8), (2, 2), ((2, 2), (2, 2)), (1, 1),
     True),
    ("same_io_kernel", (2, 5, 6, 3), (3, 3, 3, 16), (2, 2), "SAME", (1, 1), False),
    ("valid_stride_2x3", (1, 5, 4, 3), (3, 3, 3, 16), (2, 3), "VALID", (1, 1), False),
    ("dilated_asymmetric", (1, 5, 6, 3), (3, 2, 3, 16), (3, 2), ((4, -1), (0, 5)), (2, 1),
     False),
    ("pads_beyond_reach", (1, 4, 5, 3), (3, 2, 16, 3), (3, 2), ((7, -3), (-2, 6)), (2, 2),
     True),
    ("kernel_shorter_than_stride", (1, 5, 5, 3), (1, 2, 3, 16), (3, 3), ((0, 0), (1, 1)),
     (1, 1), False),
    ("one_dim", (2, 7, 3), (5, 16, 3), (2,), ((0, 6),), (3,), True),
    ("three_dims", (1, 3, 3, 2, 3), (3, 3, 3, 16, 3), (2, 2, 2), "SAME", (1, 1, 1), True),
]
GAN_CASES = CASES[:5]


def _strided_kernel(rhs: np.ndarray, transpose_kernel: bool) -> np.ndarray:
  """K[u] ([*k, features, in]) such that input pixel i adds x[i] @ K[u].T at s * i + d * u."""
  if transpose_kernel:
    return rhs
  nsp = rhs.ndim - 2
  return np.swapaxes(np.flip(rhs, tuple(range(nsp))), -1, -2)


def _explicit(padding, kshape, strides, dil):
  """lax.conv_transpose's padding of the dilated input (its documented SAME / VALID rule)."""
  if not isinstance(padding, str):
    return [tuple(p) for p in padding]
  out = []
  for k, s, d in zip(kshape, strides, dil):
    kd = (k - 1) * d + 1
    if padding == "SAME":
      total, lo = kd + s - 2, (kd - 1 if s > kd - 1 else -(-(kd + s - 2) // 2))
    else:
      total, lo = kd + s - 2 + max(kd - s, 0), kd - 1
    out.append((lo, total - lo))
  return out


def _numpy_transpose(x, rhs, strides, padding, dil, transpose_kernel, g=None):
  """Scatter form in float64: x[n, i] @ K[u].T lands at s * i + d * u - ((k - 1) d - pad_lo).

  Returns y, and with a cotangent g also d<y, g>/dx and d<y, g>/d(rhs) (the same loop, each
  scatter's adjoint accumulated by hand).
  """
  x = np.asarray(x, np.float64)
  kern = _strided_kernel(np.asarray(rhs, np.float64), transpose_kernel)
  nsp = x.ndim - 2
  kshape = kern.shape[:nsp]
  pads = _explicit(padding, kshape, strides, dil)
  shift = [(k - 1) * d - lo for k, d, (lo, _) in zip(kshape, dil, pads)]
  out_sp = [(n - 1) * s + 1 + lo + hi - (k - 1) * d
            for n, s, (lo, hi), k, d in zip(x.shape[1:-1], strides, pads, kshape, dil)]
  y = np.zeros((x.shape[0], *out_sp, kern.shape[-2]))
  dx, dk = np.zeros_like(x), np.zeros_like(kern)
  for i in itertools.product(*[range(n) for n in x.shape[1:-1]]):
    for u in itertools.product(*[range(k) for k in kshape]):
      p = tuple(s * a + d * b - sh for s, a, d, b, sh in zip(strides, i, dil, u, shift))
      if not all(0 <= q < z for q, z in zip(p, out_sp)):
        continue
      xi = x[(slice(None),) + i]                       # [n, c]
      y[(slice(None),) + p] += xi @ kern[u].T          # [n, f]
      if g is not None:
        gp = np.asarray(g, np.float64)[(slice(None),) + p]
        dx[(slice(None),) + i] += gp @ kern[u]
        dk[u] += gp.T @ xi
  if g is None:
    return y
  if not transpose_kernel:  # back to the caller's kernel layout
    dk = np.flip(np.swapaxes(dk, -1, -2), tuple(range(nsp)))
  return y, dx, dk


def _inputs(case, dtype):
  _, xs, ks, strides, padding, dil, tk = case
  rng = np.random.default_rng(sum(xs) + 7 * sum(ks))
  x = rng.standard_normal(xs)
  rhs = rng.standard_normal(ks)
  y = _numpy_transpose(x, rhs, strides, padding, dil, tk)
  g = rng.standard_normal(y.shape)
  return jnp.asarray(x, dtype), jnp.asarray(rhs, dtype), jnp.asarray(g, dtype)


def _value_and_grads(fn, case, x, rhs, g, jit):
  _, _, _, strides, padding, dil, tk = case

  def run(a, b):
    return fn(a, b, strides, padding, rhs_dilation=dil, transpose_kernel=tk)
  if jit:
    run = jax.jit(run)
  y, vjp = jax.vjp(run, x, rhs)
  return (y, *vjp(g))


def _assert_close(test, got, want, rtol, what):
  for name, a, b in zip(("y", "dx", "dkernel"), got, want):
    b = np.asarray(b)
    test.assertEqual(a.shape, b.shape, f"{what} {name}")
    np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=rtol,
                               atol=rtol * (np.abs(b).max() + 1.0), err_msg=f"{what} {name}")


class ConvTransposeFunctionTest(parameterized.TestCase):

  def tearDown(self):
    conv_ops.set_conv_impl("auto")
    super().tearDown()

  @parameterized.named_parameters(*[(f"{c[0]}_jit", c, True) for c in CASES]
                                  + [(f"{c[0]}_eager", c, False) for c in GAN_CASES])
  def test_float32_matches_numpy_scatter(self, case, jit):
    x, rhs, g = _inputs(case, jnp.float32)
    got = _value_and_grads(ct.conv_transpose, case, x, rhs, g, jit)
    for a in got:
      self.assertEqual(a.dtype, jnp.float32)
    want = _numpy_transpose(x, rhs, *case[3:], g=g)
    _assert_close(self, got, want, 2e-5, case[0])

  @parameterized.named_parameters(*[(c[0], c) for c in CASES])
  def test_float64_matches_numpy_scatter(self, case):
    with jax.enable_x64(True):
      x, rhs, g = _inputs(case, jnp.float64)
      got = _value_and_grads(ct.conv_transpose, case, x, rhs, g, jit=True)
      for a in got:
        self.assertEqual(a.dtype, jnp.float64)
      want = _numpy_transpose(x, rhs, *case[3:], g=g)
      _assert_close(self, got, want, 1e-11, case[0])

  @parameterized.named_parameters(*[(c[0], c) for c in CASES])
  def test_matches_lax_conv_transpose(self, case):
    x, rhs, g = _inputs(case, jnp.float32)
    got = _value_and_grads(ct.conv_transpose, case, x, rhs, g, jit=True)
    want = _value_and_grads(_lax_transpose, case, x, rhs, g, jit=True)
    _assert_close(self, got, want, 2e-5, case[0])

  @parameterized.named_parameters(*[(c[0], c) for c in GAN_CASES])
  def test_one_device_with_onednn_phases(self, case):
    # The suite runs on 8 virtual CPU devices, where ops.conv keeps XLA's convolutions; on one
    # device (size threshold lowered for these small cases) the phase convolutions and the
    # input gradient run on oneDNN.
    if not onednn_conv.available():
      self.skipTest("oneDNN convolutions are not available in this process")
    x, rhs, g = _inputs(case, jnp.float32)
    with mock.patch.object(conv_ops.jax, "device_count", return_value=1), \
        mock.patch.object(conv_ops, "_ONEDNN_MIN_FLOPS", 0):
      got = _value_and_grads(ct.conv_transpose, case, x, rhs, g, jit=True)
      hlo = jax.jit(jax.grad(lambda a, b: jnp.sum(ct.conv_transpose(
          a, b, case[3], case[4], transpose_kernel=case[6]) * g), argnums=(0, 1))).lower(
              x, rhs).compile().as_text()
    self.assertIn(onednn_conv.CUSTOM_CALL_TARGET, hlo)
    _assert_close(self, got, _numpy_transpose(x, rhs, *case[3:], g=g), 2e-5, case[0])

  @parameterized.named_parameters(*[(c[0], c) for c in GAN_CASES])
  def test_gradients_have_no_lhs_dilated_convolution(self, case):
    # The point of the module: XLA:CPU runs the kernel gradient of an lhs-dilated convolution
    # as a generic loop nest. Only the forward of narrow outputs (< 16 features) keeps one.
    x, rhs, g = _inputs(case, jnp.float32)
    _, _, _, strides, padding, dil, tk = case
    jaxpr = jax.make_jaxpr(jax.grad(lambda a, b: jnp.sum(ct.conv_transpose(
        a, b, strides, padding, rhs_dilation=dil, transpose_kernel=tk) * g),
        argnums=(0, 1)))(x, rhs)
    dilated = [e for e in _equations(jaxpr.jaxpr) if e.primitive.name == "conv_general_dilated"
               and any(d != 1 for d in e.params["lhs_dilation"])]
    features = rhs.shape[-2] if tk else rhs.shape[-1]
    self.assertLen(dilated, 0 if features >= 16 else 1)
    lax_jaxpr = jax.make_jaxpr(jax.grad(lambda a, b: jnp.sum(lax.conv_transpose(
        a, b, strides, padding, rhs_dilation=dil, transpose_kernel=tk) * g),
        argnums=(0, 1)))(x, rhs)
    self.assertGreater(len([e for e in _equations(lax_jaxpr.jaxpr)
                            if e.primitive.name == "conv_general_dilated"
                            and any(d != 1 for d in e.params["lhs_dilation"])]), 1)

  def test_lax_impl_and_other_layouts_are_lax(self):
    case = CASES[0]
    x, rhs, _ = _inputs(case, jnp.float32)
    _, _, _, strides, padding, dil, tk = case
    want = lax.conv_transpose(x, rhs, strides, padding, rhs_dilation=dil, transpose_kernel=tk)
    conv_ops.set_conv_impl("lax")
    np.testing.assert_array_equal(
        ct.conv_transpose(x, rhs, strides, padding, rhs_dilation=dil, transpose_kernel=tk),
        want)
    conv_ops.set_conv_impl("auto")
    nchw = ("NCHW", "HWIO", "NCHW")
    xt = jnp.transpose(x, (0, 3, 1, 2))
    got = ct.conv_transpose(xt, rhs, strides, padding, rhs_dilation=dil,
                            dimension_numbers=nchw, transpose_kernel=tk)
    np.testing.assert_allclose(got, jnp.transpose(want, (0, 3, 1, 2)), rtol=1e-5, atol=1e-5)
    # preferred_element_type is lax's argument: the result follows it.
    self.assertEqual(ct.conv_transpose(x, rhs, strides, padding, transpose_kernel=tk,
                                       preferred_element_type=jnp.float32).dtype, jnp.float32)

  def test_transpose_pads_follow_lax(self):
    for mode, k, s, d in itertools.product(("SAME", "VALID"), (1, 2, 3, 4), (1, 2, 3), (1, 2)):
      x = jnp.ones((1, 5, 2))
      rhs = jnp.ones((k, 2, 3))
      want = lax.conv_transpose(x, rhs, (s,), mode, rhs_dilation=(d,)).shape[1]
      (lo, hi), = ct.transpose_pads(mode.lower(), (k,), (s,), (d,))
      self.assertEqual((5 - 1) * s + 1 + lo + hi - (k - 1) * d, want, (mode, k, s, d))
    with self.assertRaisesRegex(ValueError, "unknown padding 'FULL'"):
      ct.transpose_pads("FULL", (3,), (2,), (1,))
    with self.assertRaisesRegex(ValueError, "one \\(low, high\\) pair per dimension"):
      ct.transpose_pads(((1, 1),), (3, 3), (2, 2), (1, 1))


def _lax_transpose(a, b, strides, padding, rhs_dilation, transpose_kernel):
  return lax.conv_transpose(a, b, strides, padding, rhs_dilation=rhs_dilation,
                            transpose_kernel=transpose_kernel, precision=lax.Precision.HIGHEST)


def _equations(jaxpr):
  """Every equation of a jaxpr, nested ones (custom_vjp, pjit bodies) included."""
  for e in jaxpr.eqns:
    yield e
    for v in e.params.values():
      for sub in (v if isinstance(v, (list, tuple)) else [v]):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          yield from _equations(inner)


class ConvTransposeModuleTest(parameterized.TestCase):

  # (name, features, kernel, strides, padding, input shape, transpose_kernel): the GAN models'
  # layers (upsample_conv, up_conv), plus the flax spellings of padding and batch axes.
  LAYERS = [
      ("cyclegan_upsample", 16, (3, 3), (2, 2), ((1, 2), (1, 2)), (2, 5, 5, 8), True),
      ("pix2pix_up_conv", 16, (4, 4), (2, 2), ((2, 2), (2, 2)), (1, 4, 4, 8), True),
      ("pix2pix_head", 3, (4, 4), (2, 2), ((2, 2), (2, 2)), (1, 4, 4, 8), True),
      ("same_int_strides", 16, (3, 3), 2, "SAME", (1, 4, 5, 4), False),
      ("int_padding_two_batch_axes", 16, (3, 3), (2, 2), 1, (2, 3, 4, 4, 4), True),
      ("no_batch_axis", 16, (3,), (2,), "VALID", (6, 4), False),
  ]

  @parameterized.named_parameters(*[(c[0], c) for c in LAYERS])
  def test_same_parameters_outputs_and_gradients_as_flax(self, layer):
    _, features, kernel, strides, padding, shape, tk = layer
    kw = dict(features=features, kernel_size=kernel, strides=strides, padding=padding,
              transpose_kernel=tk)
    ours, ref = ct.ConvTranspose(**kw), nn.ConvTranspose(**kw)
    x = jnp.asarray(np.random.default_rng(0).standard_normal(shape), jnp.float32)
    v_ours = ours.init(jax.random.key(3), x)
    v_ref = ref.init(jax.random.key(3), x)
    # Same names, shapes and random draws: checkpoints of nn.ConvTranspose load as they are.
    jax.tree.map(np.testing.assert_array_equal, v_ours, v_ref)
    v = {"params": {"kernel": v_ref["params"]["kernel"],
                    "bias": jnp.linspace(-1, 1, features, dtype=jnp.float32)}}
    g = jnp.asarray(np.random.default_rng(1).standard_normal(ref.apply(v, x).shape),
                    jnp.float32)

    def value_and_grads(module):
      def run(variables, inputs):
        y, vjp = jax.vjp(module.apply, variables, inputs)
        dv, dx = vjp(g)
        return y, dx, dv["params"]["kernel"], dv["params"]["bias"]
      return jax.jit(run)(v, x)
    for name, a, b in zip(("y", "dx", "dkernel", "dbias"), value_and_grads(ours),
                          value_and_grads(ref)):
      self.assertEqual(a.shape, b.shape, name)
      np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5 * (float(jnp.abs(b).max()) + 1),
                                 err_msg=name)

  def test_mask_dtype_and_circular(self):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 4, 4, 3)), jnp.float32)
    mask = jnp.asarray(np.random.default_rng(1).integers(0, 2, (3, 3, 3, 16)), jnp.float32)
    for kw in (dict(mask=mask), dict(padding="CIRCULAR"), dict(dtype=jnp.bfloat16),
               dict(use_bias=False)):
      args = dict(features=16, kernel_size=(3, 3), strides=(2, 2), **kw)
      ours, ref = ct.ConvTranspose(**args), nn.ConvTranspose(**args)
      v = ref.init(jax.random.key(0), x)
      y, want = jax.jit(ours.apply)(v, x), jax.jit(ref.apply)(v, x)
      self.assertEqual(y.dtype, want.dtype, kw)
      np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(want, np.float32),
                                 rtol=2e-2, atol=2e-2, err_msg=str(kw))
    self.assertIsInstance(ct.ConvTranspose(4, (3, 3)), nn.ConvTranspose)
    with self.assertRaisesRegex(ValueError, "Mask needs to have the same shape"):
      ct.ConvTranspose(16, (3, 3), mask=mask[..., :4]).init(jax.random.key(0), x)


if __name__ == "__main__":
  absltest.main()
