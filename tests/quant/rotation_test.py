"""Tests for jaxcompress.quant.rotation against NumPy re-statements of the official RBNN code."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from jaxcompress import quant
from jaxcompress.quant import rotation


def x64():
  if hasattr(jax, "enable_x64"):
    return jax.enable_x64(True)
  from jax.experimental import enable_x64  # pylint: disable=g-import-not-at-top
  return enable_x64()


# ---- NumPy references, in the official PyTorch layouts (OIHW kernels, NCHW activations). ----
def np_std_weight_oihw(w):
  w1 = w - w.mean(axis=(1, 2, 3), keepdims=True)
  return w1 / w1.std(axis=(1, 2, 3), ddof=1, keepdims=True)


def np_std_act_nchw(a):
  a1 = a - a.mean(axis=(1, 2, 3), keepdims=True)
  return a1 / a1.std(axis=(1, 2, 3), ddof=1, keepdims=True)


def np_rotation_loop(w_oihw, r1, r2, rounds):
  """The official 3-round loop, channel sums in Python, numpy SVD (U, S, V^T)."""
  o = w_oihw.shape[0]
  a, b = r1.shape[0], r2.shape[0]
  x = np_std_weight_oihw(w_oihw).reshape(o, a, b)
  for _ in range(rounds):
    bm = np.sign(r1.T @ x @ r2)
    d1 = sum(bi @ r2.T @ xi.T for bi, xi in zip(bm, x))
    u1, _, v1t = np.linalg.svd(d1)
    r1 = v1t.T @ u1.T
    d2 = sum(xi.T @ r1 @ bi for xi, bi in zip(x, bm))
    u2, _, v2t = np.linalg.svd(d2)
    r2 = u2 @ v2t
  return r1, r2


def np_conv_nchw(x, w, stride, pad):
  """Naive cross-correlation, zero padding of `x` (already binarised)."""
  x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  n, _, h, wd = x.shape
  o, _, kh, kw = w.shape
  ho, wo = (h - kh) // stride + 1, (wd - kw) // stride + 1
  out = np.zeros((n, o, ho, wo))
  for i in range(ho):
    for j in range(wo):
      patch = x[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
      out[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w)
  return out


def np_rbnn_conv(x_nhwc, w_hwio, r1, r2, theta, alpha, stride, pad):
  """Official forward: standardise, rotate, mix by |sin theta|, sign, pad zeros, conv, alpha."""
  w = np.transpose(w_hwio, (3, 2, 0, 1))
  o = w.shape[0]
  w2 = np_std_weight_oihw(w)
  rw = (r1.T @ w2.reshape(o, r1.shape[0], r2.shape[0]) @ r2).reshape(w.shape)
  w3 = w2 + np.abs(np.sin(theta))[:, None, None, None] * (rw - w2)
  a2 = np_std_act_nchw(np.transpose(x_nhwc, (0, 3, 1, 2)))
  out = np_conv_nchw(np.sign(a2), np.sign(w3), stride, pad) * alpha[None, :, None, None]
  return np.transpose(out, (0, 2, 3, 1))


def jax_reference_conv(x, w, r1, r2, theta, alpha, t, k, stride, pad):
  """An independent JAX formulation in PyTorch layout; the sign's backward comes from autodiff of
  the paper's surrogate F (eq. 16) via a straight-through trick, not from a custom_vjp."""
  def surrogate_sign(v, tt, kk):
    f = jnp.where(jnp.abs(v) < jnp.sqrt(2.0) / tt,
                  kk * (jnp.sqrt(2.0) * tt * v - tt * tt * v * jnp.abs(v) / 2), kk * jnp.sign(v))
    return f + jax.lax.stop_gradient(jnp.sign(v) - f)

  w = jnp.transpose(w, (3, 2, 0, 1))
  o = w.shape[0]
  w1 = w - w.mean(axis=(1, 2, 3), keepdims=True)
  w2 = w1 / jnp.sqrt(jnp.sum(w1 ** 2, axis=(1, 2, 3), keepdims=True) / (w1[0].size - 1))
  rw = (r1.T @ w2.reshape(o, r1.shape[0], r2.shape[0]) @ r2).reshape(w.shape)
  w3 = w2 + jnp.abs(jnp.sin(theta))[:, None, None, None] * (jax.lax.stop_gradient(rw) - w2)
  a = jnp.transpose(x, (0, 3, 1, 2))
  a1 = a - a.mean(axis=(1, 2, 3), keepdims=True)
  a2 = a1 / jnp.sqrt(jnp.sum(a1 ** 2, axis=(1, 2, 3), keepdims=True) / (a1[0].size - 1))
  ba = jnp.pad(surrogate_sign(a2, jnp.maximum(t, 1.0), 1.0),
               ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  out = jax.lax.conv_general_dilated(ba, surrogate_sign(w3, t, k), (stride, stride), "VALID",
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"))
  return jnp.transpose(out * alpha[None, :, None, None], (0, 2, 3, 1))


def np_haar(rng, n):
  q, r = np.linalg.qr(rng.normal(size=(n, n)))
  return q * np.sign(np.diag(r))[None, :]


def random_problem(seed, dtype, n=2, hw=5, cin=4, o=3, ksz=3):
  """NumPy-generated inputs (no per-op JAX compiles in the tests' set-up)."""
  rng = np.random.default_rng(seed)
  a, b = quant.rotation_shape(ksz * ksz * cin)
  arrays = (rng.normal(size=(n, hw, hw, cin)), rng.normal(size=(ksz, ksz, cin, o)),
            np_haar(rng, a), np_haar(rng, b), rng.uniform(0.3, 1.3, size=o),
            rng.uniform(0.5, 1.5, size=o))
  return tuple(jnp.asarray(v, dtype) for v in arrays)


# Jitted once per dtype: eager dispatch compiles every primitive separately, which is slow on CPU.
_update = jax.jit(quant.rbnn_rotation_update)
_objective = jax.jit(quant.rbnn_rotation_objective)
_conv = jax.jit(quant.rbnn_conv2d, static_argnums=(8, 9))


class ShapesAndStandardisationTest(parameterized.TestCase):

  @parameterized.parameters((144, (12, 12)), (288, (16, 18)), (576, (24, 24)), (4608, (64, 72)),
                            (1, (1, 1)), (7, (1, 7)), (27, (3, 9)), (36, (6, 6)), (8, (2, 4)))
  def test_rotation_shape(self, n, expected):
    self.assertEqual(quant.rotation_shape(n), expected)

  def test_standardize_weight_is_unbiased_per_output_channel(self):
    w = np.random.default_rng(0).normal(size=(3, 3, 4, 5)) * 3 + 1
    got = np.asarray(quant.standardize_weight(jnp.asarray(w, jnp.float32)))
    ref = np.transpose(np_std_weight_oihw(np.transpose(w, (3, 2, 0, 1))), (2, 3, 1, 0))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.std(axis=(0, 1, 2), ddof=1), 1.0, rtol=1e-5)

  def test_standardize_activation_per_sample(self):
    x = np.random.default_rng(1).normal(size=(3, 4, 4, 2)) * 2 - 1
    got = np.asarray(quant.standardize_activation(jnp.asarray(x, jnp.float32)))
    ref = np.transpose(np_std_act_nchw(np.transpose(x, (0, 3, 1, 2))), (0, 2, 3, 1))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)

  def test_weight_to_matrices_uses_official_order_and_inverts(self):
    w = np.arange(3 * 3 * 2 * 4, dtype=np.float32).reshape(3, 3, 2, 4)
    m = np.asarray(quant.weight_to_matrices(jnp.asarray(w)))
    np.testing.assert_array_equal(m, np.transpose(w, (3, 2, 0, 1)).reshape(4, 3, 6))
    back = quant.matrices_to_weight(jnp.asarray(m), w.shape)
    np.testing.assert_array_equal(back, w)


class RotationUpdateTest(parameterized.TestCase):

  def test_matches_official_loop_float64(self):
    with x64():
      _, w, r1, r2, _, _ = random_problem(0, jnp.float64, cin=16, o=6)
      got1, got2 = _update(w, r1, r2)
      self.assertEqual((got1.dtype, got2.dtype), (jnp.float64, jnp.float64))
      ref1, ref2 = np_rotation_loop(np.transpose(np.asarray(w), (3, 2, 0, 1)), np.asarray(r1),
                                    np.asarray(r2), 3)
      np.testing.assert_allclose(got1, ref1, atol=1e-9)
      np.testing.assert_allclose(got2, ref2, atol=1e-9)

  @parameterized.parameters(jnp.float32, jnp.float64)
  def test_orthogonal_and_objective_non_increasing(self, dtype):
    with x64():
      _, w, r1, r2, _, _ = random_problem(1, dtype, cin=32, o=10)  # n = 288 -> 16 x 18
      self.assertEqual((r1.shape, r2.shape), ((16, 16), (18, 18)))
      objs = [float(_objective(w, r1, r2))]
      for _ in range(4):
        r1, r2 = _update(w, r1, r2, 1)
        self.assertEqual(r1.dtype, dtype)
        objs.append(float(_objective(w, r1, r2)))
        tol = 1e-6 if dtype == jnp.float64 else 1e-5
        np.testing.assert_allclose(r1 @ r1.T, np.eye(16), atol=tol)
        np.testing.assert_allclose(r2 @ r2.T, np.eye(18), atol=tol)
      self.assertTrue(all(b <= a + 1e-4 * abs(a) for a, b in zip(objs, objs[1:])), objs)
      self.assertLess(objs[-1], objs[0])

  def test_warm_start_continues(self):
    with x64():
      _, w, r1, r2, _, _ = random_problem(2, jnp.float64, cin=16, o=8)
      a1, a2 = _update(w, r1, r2, 3)
      first_end = float(_objective(w, a1, a2))
      # A second solve starts where the first ended (not from scratch): zero rounds is a no-op
      # and further rounds only improve on the first solve's objective.
      z1, z2 = _update(w, a1, a2, 0)
      np.testing.assert_array_equal(z1, a1)
      np.testing.assert_array_equal(z2, a2)
      b1, b2 = _update(w, a1, a2, 3)
      self.assertLessEqual(float(_objective(w, b1, b2)), first_end + 1e-9)
      c1, c2 = _update(w, r1, r2, 6)
      np.testing.assert_allclose(b1, c1, atol=1e-9)
      np.testing.assert_allclose(b2, c2, atol=1e-9)

  def test_rotation_reduces_angular_bias(self):
    _, w, r1, r2, _, _ = random_problem(3, jnp.float32, cin=16, o=10)

    def mean_cos(v):  # cos(v, sign v) per output channel
      v = np.asarray(v).reshape(-1, v.shape[-1])
      return np.mean(np.abs(v).sum(0) / (np.sqrt(v.shape[0]) * np.linalg.norm(v, axis=0)))

    r1, r2 = _update(w, r1, r2, 3)
    rotated = jax.jit(quant.rbnn_rotated_weight)(w, r1, r2)
    self.assertGreater(mean_cos(rotated), mean_cos(jax.jit(quant.standardize_weight)(w)))

  def test_flip_ratio(self):
    self.assertEqual(float(quant.sign_flip_ratio(jnp.array([1.0, -2, 3, 4]),
                                                 jnp.array([2.0, 2, 3, 4]))), 0.25)
    # Gaussian weights, n = 576: a rotation flips about half of the signs (RBNN abstract).
    _, w, r1, r2, _, _ = random_problem(4, jnp.float32, cin=64, o=8)
    r1, r2 = _update(w, r1, r2, 3)
    ratio = float(jax.jit(lambda w, r1, r2: quant.sign_flip_ratio(
        quant.standardize_weight(w), quant.rbnn_rotated_weight(w, r1, r2)))(w, r1, r2))
    self.assertBetween(ratio, 0.4, 0.6)

  def test_haar_orthogonal(self):
    haar = jax.jit(rotation.haar_orthogonal, static_argnums=1)
    q1, q2 = haar(jax.random.key(0), 12), haar(jax.random.key(1), 12)
    np.testing.assert_allclose(q1 @ q1.T, np.eye(12), atol=1e-5)
    self.assertEqual(q1.dtype, jnp.float32)
    self.assertGreater(float(jnp.abs(q1 - q2).max()), 0.1)

  def test_rotate_params_maps_every_layer(self):
    _, w1, r11, r12, _, _ = random_problem(5, jnp.float32, cin=4, o=3)
    _, w2, r21, r22, _, _ = random_problem(6, jnp.float32, cin=16, o=5)
    params = {"a": {"kernel": w1, "theta": jnp.ones(3)}, "b": {"c": {"kernel": w2}}}
    rots = {"a": {"r1": r11, "r2": r12}, "b": {"c": {"r1": r21, "r2": r22}}}
    new = jax.jit(quant.rbnn_rotate_params)(params, rots)
    e1, e2 = _update(w2, r21, r22, 3)
    np.testing.assert_allclose(new["b"]["c"]["r1"], e1, atol=1e-5)
    np.testing.assert_allclose(new["b"]["c"]["r2"], e2, atol=1e-5)
    self.assertGreater(float(jnp.abs(new["a"]["r1"] - r11).max()), 1e-3)


class RBNNConvTest(chex.TestCase, parameterized.TestCase):

  @parameterized.parameters((1, 1), (2, 1), (1, 0))
  def test_forward_matches_numpy(self, stride, pad):
    with x64():
      x, w, r1, r2, theta, alpha = random_problem(7, jnp.float64)
      got = _conv(x, w, r1, r2, theta, alpha, 0.3, 3.0, stride, pad)
      self.assertEqual(got.dtype, jnp.float64)
      ref = np_rbnn_conv(*[np.asarray(v) for v in (x, w, r1, r2, theta, alpha)], stride, pad)
      np.testing.assert_allclose(got, ref, atol=1e-9)

  @chex.variants(with_jit=True, without_jit=True)
  def test_mixed_weight_and_activation_sign_match_numpy(self):
    # The pieces `quant.export` precomputes / evaluates at serve time.
    with x64():
      x, w, r1, r2, theta, _ = random_problem(11, jnp.float64)
      w3 = self.variant(quant.rotation.rbnn_mixed_weight)(w, r1, r2, theta)
      wo = np.transpose(np.asarray(w), (3, 2, 0, 1))
      o = wo.shape[0]
      w2 = np_std_weight_oihw(wo)
      rw = (np.asarray(r1).T @ w2.reshape(o, r1.shape[0], r2.shape[0]) @ np.asarray(r2))
      ref = w2 + np.abs(np.sin(np.asarray(theta)))[:, None, None, None] * (rw.reshape(wo.shape)
                                                                            - w2)
      np.testing.assert_allclose(w3, np.transpose(ref, (2, 3, 1, 0)), atol=1e-12)
      got = self.variant(quant.rotation.rbnn_activation_sign)(x)
      ref_a = np.sign(np_std_act_nchw(np.transpose(np.asarray(x), (0, 3, 1, 2))))
      np.testing.assert_array_equal(got, np.transpose(ref_a, (0, 2, 3, 1)))
      # Exact zeros after centring stay 0 (sign(0) = 0), as rbnn_sign(standardised x).
      xz = jnp.asarray([[[[-1.0], [0.0]], [[1.0], [0.0]]]])
      np.testing.assert_array_equal(self.variant(quant.rotation.rbnn_activation_sign)(xz)[..., 0],
                                    [[[-1, 0], [1, 0]]])

  # Eager (without_jit) dispatch of this graph costs ~15 s of per-op compiles on CPU; the eager
  # custom_vjp path is covered by estimators_test.
  @chex.variants(with_jit=True)
  def test_grads_match_independent_formulation(self):
    with x64():
      x, w, r1, r2, theta, alpha = random_problem(8, jnp.float64)
      cot = jnp.asarray(np.random.default_rng(9).normal(size=(2, 5, 5, 3)))

      def loss(fn):
        return lambda x, w, th, al, r1, r2, t, k: jnp.sum(
            cot * fn(x, w, r1, r2, th, al, t, k, 1, 1))

      got_fn = self.variant(jax.grad(loss(quant.rbnn_conv2d), argnums=tuple(range(6))))
      ref_fn = jax.jit(jax.grad(loss(jax_reference_conv), argnums=tuple(range(4))))
      for t, k in ((0.05, 20.0), (2.0, 1.0)):  # early (activations at t_a = 1) and late schedule
        args = (x, w, theta, alpha, r1, r2, jnp.float64(t), jnp.float64(k))
        got, ref = got_fn(*args), ref_fn(*args)
        for g, r in zip(got[:4], ref):
          self.assertGreater(float(jnp.abs(r).max()), 0.0)
          np.testing.assert_allclose(g, r, rtol=1e-8, atol=1e-10)
        # Rotations are state: the rotated weight enters under stop_gradient.
        self.assertEqual(float(jnp.abs(got[4]).max() + jnp.abs(got[5]).max()), 0.0)

  def test_theta_half_pi_blocks_latent_gradient_path(self):
    # At theta = pi/2, w3 = stop_gradient(R w2) exactly, so the latent weight gets no gradient
    # through w3 (arXiv 2009.13055 eq. 15 with the official stop-gradient): dw3/dw2 =
    # 1 - |sin theta| = 0.
    x, w, r1, r2, _, alpha = random_problem(10, jnp.float32)
    theta = jnp.full((3,), jnp.pi / 2)
    g = jax.jit(jax.grad(lambda w: jnp.sum(_conv(x, w, r1, r2, theta, alpha, 0.5, 2.0, 1, 1))))(w)
    self.assertLess(float(jnp.abs(g).max()), 1e-5)

  def test_traced_t_k_no_recompile(self):
    x, w, r1, r2, theta, alpha = random_problem(11, jnp.float32)
    traces = []

    @jax.jit
    def grad_w(w, t, k):
      traces.append(1)
      return jax.grad(lambda w: jnp.sum(quant.rbnn_conv2d(x, w, r1, r2, theta, alpha, t, k)))(w)

    g1 = grad_w(w, *quant.rbnn_schedule(0, 10))
    g2 = grad_w(w, *quant.rbnn_schedule(9, 10))
    self.assertLen(traces, 1)
    self.assertFalse(np.allclose(g1, g2))
    # Python numbers are weakly typed: one more trace for them, then none per new value.
    g3, g4 = grad_w(w, 2.0, 1.0), grad_w(w, 3.0, 0.5)
    self.assertLen(traces, 2)
    self.assertEqual((g1.dtype, g3.dtype), (jnp.float32, jnp.float32))
    self.assertFalse(np.allclose(g3, g4))

  def test_border_stays_zero_padded_after_binarisation(self):
    # A 1x1 input with 3x3 kernel and padding 1: only the centre tap sees data, the border is 0
    # (padding before standardisation/sign would give +-1 there).
    x = jnp.array([[[[1.0, -2.0]]], [[[0.5, 3.0]]]])  # (2, 1, 1, 2)
    w = jnp.asarray(np.random.default_rng(0).normal(size=(3, 3, 2, 2)), jnp.float32)
    a, b = quant.rotation_shape(18)
    r1, r2 = jnp.eye(a), jnp.eye(b)
    y = _conv(x, w, r1, r2, jnp.zeros(2), jnp.ones(2), 1.0, 1.0, 1, 1)
    xs, ws = np.asarray(x), np.asarray(w)
    a2 = (xs - xs.mean(axis=(1, 2, 3), keepdims=True)) / xs.std(axis=(1, 2, 3), ddof=1,
                                                                   keepdims=True)
    w2 = (ws - ws.mean(axis=(0, 1, 2))) / ws.std(axis=(0, 1, 2), ddof=1)
    centre = np.sign(a2)[:, 0, 0] @ np.sign(w2)[1, 1]
    np.testing.assert_allclose(y[:, 0, 0], centre, atol=1e-6)


if __name__ == "__main__":
  absltest.main()
