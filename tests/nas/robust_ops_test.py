"""Tests for jaxcompress.nas.robust_ops: Gabor kernels, non-local means, denoising blocks."""
from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from jaxcompress.nas import robust_ops

NAMES = ("lambd", "theta", "psi", "sigma", "gamma")


def _sig(v):
  return 1.0 / (1.0 + np.exp(-v))


def _np_gabor(raw, in_channels, size=3):
  """Gabor filter bank by explicit loops, in float64, OIHW-free: returns HWIO."""
  o = len(raw["theta"])
  out = np.zeros((size, size, in_channels, o))
  for c in range(o):
    th = 2 * math.pi * _sig(raw["theta"][c])
    gm = 1 + 0.5 * raw["gamma"][c]
    sg = 0.1 + 0.4 * _sig(raw["sigma"][c])
    lm = 0.001 + 0.999 * _sig(raw["lambd"][c])
    ps = raw["psi"][c]
    for i in range(size):
      for j in range(size):
        x, y = i - size // 2, j - size // 2
        xr = x * math.cos(th) + y * math.sin(th)
        yr = -x * math.sin(th) + y * math.cos(th)
        val = math.exp(-0.5 * (xr ** 2 / sg ** 2 + yr ** 2 * gm ** 2 / sg ** 2)) * math.cos(
            2 * math.pi * xr / lm + ps)
        out[i, j, :, c] = val
  return out


def _np_nonlocal(x):
  n, h, w, c = x.shape
  y = np.zeros_like(x, dtype=np.float64)
  for b in range(n):
    for pi in range(h):
      for pj in range(w):
        for qi in range(h):
          for qj in range(w):
            y[b, pi, pj] += np.dot(x[b, pi, pj], x[b, qi, qj]) * x[b, qi, qj]
  return y / (c * h * w)


def _raw(seed, o=3):
  rng = np.random.default_rng(seed)
  raw = {k: rng.normal(size=o) for k in NAMES}
  raw["lambd"] = rng.uniform(1.0, 3.0, size=o)  # lambda close to 1: smooth in the raw params
  return raw


class GaborKernelTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0, 1)
  def test_values_match_loops(self, seed):
    raw = _raw(seed)
    fn = self.variant(lambda *a: robust_ops.gabor_kernel(*a, in_channels=2))
    k = fn(*[jnp.asarray(raw[n], jnp.float32) for n in NAMES])
    self.assertEqual(k.shape, (3, 3, 2, 3))
    np.testing.assert_allclose(k, _np_gabor(raw, 2), rtol=2e-4, atol=2e-5)
    np.testing.assert_array_equal(k[:, :, 0], k[:, :, 1])  # same pattern on every input channel

  def test_size_5_and_coordinate_convention(self):
    # theta_r -> -inf gives theta = 0, so x' = x: the carrier cos(2 pi x / lambda) varies along
    # the kernel rows (first axis) only. lambda = 0.8 makes cos zero at |x| = 1 and -1 at 2.
    lm = 0.8
    raw = {"lambd": np.array([math.log((lm - 0.001) / (1.0 - lm))]), "theta": np.array([-40.0]),
           "psi": np.array([0.0]), "sigma": np.array([5.0]), "gamma": np.array([0.0])}
    k = np.asarray(robust_ops.gabor_kernel(*[jnp.asarray(raw[n]) for n in NAMES], 1, size=5))
    np.testing.assert_allclose(k, _np_gabor(raw, 1, 5), rtol=1e-4, atol=1e-6)
    sg = 0.1 + 0.4 * _sig(5.0)
    env1 = math.exp(-0.5 / sg ** 2)
    np.testing.assert_allclose(k[1, 2, 0, 0], 0.0, atol=1e-5)     # x = -1, y = 0
    np.testing.assert_allclose(k[2, 1, 0, 0], env1, rtol=1e-4)    # x = 0, y = -1
    np.testing.assert_allclose(k[0, 2, 0, 0], -math.exp(-2 / sg ** 2), rtol=1e-3)  # x = -2

  @chex.variants(with_jit=True, without_jit=True)
  def test_gradients_wrt_raw_params(self):
    raw = _raw(3, o=2)
    weights = np.random.default_rng(4).normal(size=(3, 3, 1, 2))

    def f(*params):
      return (robust_ops.gabor_kernel(*params, in_channels=1) * weights).sum()

    grads = self.variant(jax.grad(f, argnums=tuple(range(5))))(
        *[jnp.asarray(raw[n], jnp.float32) for n in NAMES])
    h = 1e-6
    for a, name in enumerate(NAMES):
      for c in range(2):
        up = {k: v.copy() for k, v in raw.items()}
        dn = {k: v.copy() for k, v in raw.items()}
        up[name][c] += h
        dn[name][c] -= h
        fd = ((_np_gabor(up, 1) - _np_gabor(dn, 1)) * weights).sum() / (2 * h)
        np.testing.assert_allclose(grads[a][c], fd, rtol=2e-3, atol=2e-4, err_msg=name)


class NonLocalMeanTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters((2, 3, 3), (2, 2, 6))  # C < HW and C > HW use different orders
  def test_matches_double_loop(self, h, w, c):
    x = np.random.default_rng(0).normal(size=(2, h, w, c)).astype(np.float32)
    y = self.variant(robust_ops.nonlocal_mean)(jnp.asarray(x))
    np.testing.assert_allclose(y, _np_nonlocal(x), rtol=1e-5, atol=1e-6)

  def test_gradient_matches_finite_difference(self):
    x = np.random.default_rng(1).normal(size=(1, 2, 2, 3))
    wts = np.random.default_rng(2).normal(size=x.shape)
    g = jax.grad(lambda v: (robust_ops.nonlocal_mean(v) * wts).sum())(jnp.asarray(x, jnp.float32))
    h, fd = 1e-5, np.zeros_like(x)
    for idx in np.ndindex(x.shape):
      e = np.zeros_like(x)
      e[idx] = h
      fd[idx] = ((_np_nonlocal(x + e) - _np_nonlocal(x - e)) * wts).sum() / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-3, atol=1e-4)


class ResizeTest(absltest.TestCase):

  def test_align_corners_matches_formula(self):
    x = np.random.default_rng(0).normal(size=(1, 7, 6, 2)).astype(np.float32)
    y = np.asarray(robust_ops.resize_bilinear_align_corners(jnp.asarray(x), 2))
    self.assertEqual(y.shape, (1, 3, 3, 2))
    ref = np.zeros_like(y)
    for i in range(3):
      for j in range(3):
        si, sj = i * (7 - 1) / (3 - 1), j * (6 - 1) / (3 - 1)
        i0, j0 = int(si), int(sj)
        i1, j1 = min(i0 + 1, 6), min(j0 + 1, 5)
        ti, tj = si - i0, sj - j0
        ref[0, i, j] = ((1 - ti) * (1 - tj) * x[0, i0, j0] + (1 - ti) * tj * x[0, i0, j1] +
                        ti * (1 - tj) * x[0, i1, j0] + ti * tj * x[0, i1, j1])
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    # Corners are sampled exactly (align_corners=True).
    np.testing.assert_allclose(y[0, -1, -1], x[0, -1, -1], rtol=1e-6)

  def test_matches_scipy_linear_interpolation(self):
    # Independent reference: scipy's order-1 spline at the align-corners source coordinates
    # src = i * (in - 1) / (out - 1), out = floor(in / 2) (F.interpolate(scale_factor=0.5,
    # mode="bilinear", align_corners=True)).
    from scipy import ndimage  # pylint: disable=g-import-not-at-top
    for h, w in ((8, 8), (5, 7), (4, 3), (2, 6)):
      x = np.random.default_rng(h * w).normal(size=(2, h, w, 3))
      y = np.asarray(robust_ops.resize_bilinear_align_corners(jnp.asarray(x, jnp.float32), 2))
      ho, wo = h // 2, w // 2
      self.assertEqual(y.shape, (2, ho, wo, 3))
      si = np.arange(ho) * ((h - 1) / (ho - 1) if ho > 1 else 0.0)
      sj = np.arange(wo) * ((w - 1) / (wo - 1) if wo > 1 else 0.0)
      gi, gj = np.meshgrid(si, sj, indexing="ij")
      for n in range(2):
        for c in range(3):
          ref = ndimage.map_coordinates(x[n, :, :, c], [gi, gj], order=1, mode="nearest")
          np.testing.assert_allclose(y[n, :, :, c], ref, rtol=1e-5, atol=1e-5,
                                     err_msg=str((h, w)))


class DenoisingBlockTest(parameterized.TestCase):

  @parameterized.parameters(("gab_filt_3x3", 1), ("dtp_blok_3x3", 1), ("dtp_blok_3x3", 2),
                            ("gab_filt_3x3", 2))
  def test_identity_at_init(self, name, stride):
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype(np.float32)
    op = robust_ops.ABANDIT_OPS[name](3, stride, True)
    variables = op.init(jax.random.key(0), x, train=True)
    y, _ = op.apply(variables, x, train=True, mutable=["batch_stats"])
    expected = x if stride == 1 else robust_ops.resize_bilinear_align_corners(x, 2)
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
    if name == "gab_filt_3x3":
      params = variables["params"]["GaborConv_0"]
      self.assertEqual(set(params), set(NAMES))
      np.testing.assert_array_equal(params["gamma"], 0.0)

  def test_gabor_block_with_unit_bn_is_x_plus_normalised_conv(self):
    x = np.random.default_rng(1).normal(size=(2, 4, 4, 2)).astype(np.float32)
    op = robust_ops.DenoisingBlock(1, "gabor", affine=False)
    variables = op.init(jax.random.key(0), x, train=True)
    y, _ = op.apply(variables, x, train=True, mutable=["batch_stats"])
    g = variables["params"]["GaborConv_0"]
    k = np.asarray(robust_ops.gabor_kernel(*[g[n] for n in NAMES], in_channels=2))
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    conv = np.zeros_like(x)
    for i in range(4):
      for j in range(4):
        conv[:, i, j] = np.einsum("nhwc,hwco->no", xp[:, i:i + 3, j:j + 3], k)
    bn = (conv - conv.mean((0, 1, 2))) / np.sqrt(conv.var((0, 1, 2)) + 1e-3)
    np.testing.assert_allclose(y, x + bn, rtol=1e-3, atol=1e-3)


class AbanditOpsTest(absltest.TestCase):

  def test_sep_conv_has_no_pointwise_and_conv_is_dilated(self):
    x = jnp.zeros((1, 8, 8, 4))
    shapes = jax.eval_shape(
        lambda: robust_ops.ABANDIT_OPS["sep_conv_3x3"](4, 2, True).init(jax.random.key(0), x))
    kernels = sorted(a.shape for a in jax.tree_util.tree_leaves(shapes["params"])
                     if len(a.shape) == 4)
    self.assertEqual(kernels, [(3, 3, 1, 4), (3, 3, 4, 4)])
    op = robust_ops.ABANDIT_OPS["conv_5x5"](4, 2, True)
    y = jax.eval_shape(lambda: op.init_with_output(jax.random.key(0), x)[0])
    self.assertEqual(y.shape, (1, 4, 4, 4))  # dilation 2, padding 4 keeps H / stride
    for name in robust_ops.ABANDIT_PRIMITIVES:
      self.assertIn(name, robust_ops.ABANDIT_OPS)
    self.assertLen(robust_ops.ABANDIT_PRIMITIVES, 9)


if __name__ == "__main__":
  absltest.main()
