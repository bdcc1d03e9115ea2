"""Tests for jaxcompress.quant.estimators: values and gradients vs NumPy paper references."""
from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from jaxcompress import quant
from jaxcompress.quant import estimators

# Grid with 0, the +-1 clip edges, the +-0.5 edges and points outside.
GRID = np.array([-2.0, -1.5, -1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0],
                np.float32)


def x64():
  """Context manager enabling float64 (jax.enable_x64 in current JAX)."""
  if hasattr(jax, "enable_x64"):
    return jax.enable_x64(True)
  from jax.experimental import enable_x64  # pylint: disable=g-import-not-at-top
  return enable_x64()


def grad_of(fn):
  """Elementwise d fn / dx (sum of outputs, so each entry is its own derivative)."""
  return jax.grad(lambda x: jnp.sum(fn(x)))


# NumPy references, written from the formulas (larq docs, Bi-Real, BNN+, DoReFa, RBNN).
def np_larq_sign(x):
  return np.where(x >= 0, 1.0, -1.0)


def np_window(x, c):
  return (np.abs(x) <= c).astype(np.float64)


def np_signswish(x, beta):
  s = 1.0 / (1.0 + np.exp(-beta * x))
  return 2.0 * s * (1.0 + beta * x * (1.0 - s)) - 1.0


def np_rbnn_surrogate(x, t, k):
  """RBNN eq. 16: F(x) = k (sqrt2 t x - t^2 x|x|/2) inside |x| < sqrt2/t, k sign(x) outside."""
  inside = np.abs(x) < np.sqrt(2.0) / t
  return np.where(inside, k * (np.sqrt(2.0) * t * x - t * t * x * np.abs(x) / 2), k * np.sign(x))


class SignValueAndGradTest(chex.TestCase, parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(("clip1", 1.0), ("clip_half", 0.5), ("clip_none", None))
  def test_ste_sign(self, clip):
    fn = self.variant(functools.partial(quant.ste_sign, clip_value=clip))
    np.testing.assert_array_equal(fn(GRID), np_larq_sign(GRID))
    expected = np.ones_like(GRID) if clip is None else np_window(GRID, clip)
    np.testing.assert_array_equal(grad_of(fn)(GRID), expected)

  @chex.variants(with_jit=True, without_jit=True)
  def test_approx_sign(self):
    fn = self.variant(quant.approx_sign)
    np.testing.assert_array_equal(fn(GRID), np_larq_sign(GRID))
    expected = np.where(np.abs(GRID) <= 1, 2 - 2 * np.abs(GRID), 0.0)
    np.testing.assert_allclose(grad_of(fn)(GRID), expected, atol=1e-6)
    self.assertEqual(float(grad_of(fn)(jnp.zeros(1))[0]), 2.0)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(("beta5", 5.0), ("beta2", 2.0))
  def test_swish_sign_grad_is_signswish_derivative(self, beta):
    fn = self.variant(functools.partial(quant.swish_sign, beta=beta))
    np.testing.assert_array_equal(fn(GRID), np_larq_sign(GRID))
    x = GRID.astype(np.float64)
    h = 1e-5
    fd = (np_signswish(x + h, beta) - np_signswish(x - h, beta)) / (2 * h)
    np.testing.assert_allclose(grad_of(fn)(GRID), fd, rtol=1e-4, atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_magnitude_aware_sign(self):
    w = jnp.asarray(GRID[:12].reshape(3, 4))  # 4 output channels
    fn = self.variant(quant.magnitude_aware_sign)
    scale = np.mean(np.abs(np.asarray(w)), axis=0)
    np.testing.assert_allclose(fn(w), scale * np_larq_sign(np.asarray(w)), rtol=1e-6)
    np.testing.assert_allclose(grad_of(fn)(w), scale * np_window(np.asarray(w), 1.0), rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_xnor_sign_value_and_gradient_through_the_scale(self):
    # XNOR-Net (arXiv 1603.05279) Sec. 3.1: W ~ a sign(W), a = mean|W| per filter, a
    # differentiated. HWIO kernel with 4 filters, entries beyond the clip window included.
    rng = np.random.default_rng(0)
    w = rng.normal(scale=0.9, size=(3, 3, 2, 4))
    g = rng.normal(size=w.shape)
    fn = self.variant(quant.xnor_sign)
    a = np.mean(np.abs(w), axis=(0, 1, 2))
    np.testing.assert_allclose(fn(jnp.asarray(w, jnp.float32)), a * np_larq_sign(w), rtol=1e-6)
    _, vjp = jax.vjp(fn, jnp.asarray(w, jnp.float32))
    s = np_larq_sign(w)
    want = a * np_window(w, 1.0) * g + np.sign(w) * np.mean(g * s, axis=(0, 1, 2))
    np.testing.assert_allclose(vjp(jnp.asarray(g, jnp.float32))[0], want, rtol=1e-5, atol=1e-6)
    # Each entry's own term is XNOR-Net's g (1/n + a 1[|W| <= 1]) (n = 18 entries per filter).
    own = np.zeros_like(w)
    own[1, 2, 0, 3] = 1.0
    got = vjp(jnp.asarray(own, jnp.float32))[0][1, 2, 0, 3]
    np.testing.assert_allclose(got, 1 / 18 + a[3] * np_window(w, 1.0)[1, 2, 0, 3], rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_ste_tern_fixed_threshold_edges(self):
    fn = self.variant(functools.partial(quant.ste_tern, threshold_value=0.5))
    # +-threshold maps to +-1 (sign(sign(x+D) + sign(x-D))), strictly inside maps to 0.
    expected = np.where(GRID >= 0.5, 1.0, np.where(GRID <= -0.5, -1.0, 0.0))
    np.testing.assert_array_equal(fn(GRID), expected)
    np.testing.assert_array_equal(grad_of(fn)(GRID), np_window(GRID, 1.0))

  @chex.variants(with_jit=True, without_jit=True)
  def test_ste_tern_twn_threshold(self):
    fn = self.variant(functools.partial(quant.ste_tern, ternary_weight_networks=True))
    delta = 0.7 * np.mean(np.abs(GRID))
    expected = np.where(GRID >= delta, 1.0, np.where(GRID <= -delta, -1.0, 0.0))
    np.testing.assert_array_equal(fn(GRID), expected)

  @chex.variants(with_jit=True, without_jit=True)
  def test_ste_heaviside(self):
    fn = self.variant(quant.ste_heaviside)
    np.testing.assert_array_equal(fn(GRID), (GRID > 0).astype(np.float32))
    np.testing.assert_array_equal(grad_of(fn)(GRID), np_window(GRID, 1.0))

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(("k1", 1), ("k2", 2), ("k4", 4))
  def test_dorefa_activations(self, k_bit):
    x = np.concatenate([GRID, np.array([1 / 6, 0.3, 0.95], np.float32)])
    fn = self.variant(functools.partial(quant.dorefa, k_bit=k_bit))
    n = 2 ** k_bit - 1
    np.testing.assert_allclose(fn(x), np.round(np.clip(x, 0, 1) * n) / n, atol=1e-7)
    np.testing.assert_array_equal(grad_of(fn)(x), ((x >= 0) & (x <= 1)).astype(np.float32))

  @chex.variants(with_jit=True, without_jit=True)
  def test_dorefa_weights(self):
    fn = self.variant(functools.partial(quant.dorefa, k_bit=2, mode="weights"))
    x = GRID.astype(np.float64)
    m = np.max(np.abs(np.tanh(x)))
    q = np.round((np.tanh(x) / (2 * m) + 0.5) * 3) / 3
    np.testing.assert_allclose(fn(GRID), 2 * q - 1, atol=1e-6)
    np.testing.assert_allclose(grad_of(fn)(GRID), (1 - np.tanh(x) ** 2) / m, rtol=1e-5)


class RBNNSignTest(chex.TestCase, parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(("early", 0.01, 100.0), ("mid", 0.5, 2.0), ("one", 1.0, 1.0),
                                  ("late", 9.93, 1.0))
  def test_value_and_grad(self, t, k):
    fn = self.variant(lambda x: quant.rbnn_sign(x, t, k))
    x = np.concatenate([GRID, np.array([0.1, -0.1, np.sqrt(2) / t], np.float32)])
    np.testing.assert_array_equal(fn(x), np.sign(x))  # sign(0) = 0
    self.assertEqual(float(fn(jnp.zeros(()))), 0.0)
    expected = k * np.maximum(0.0, np.sqrt(2) * t - t * t * np.abs(x.astype(np.float64)))
    np.testing.assert_allclose(grad_of(fn)(x), expected, rtol=2e-5, atol=1e-5)

  def test_grad_is_derivative_of_paper_surrogate_and_integrates_to_2k(self):
    with x64():
      for t, k in ((0.5, 2.0), (3.0, 1.0)):
        x = np.linspace(-4, 4, 8001)  # covers the window |x| < sqrt2/t
        g = np.asarray(grad_of(lambda v: quant.rbnn_sign(v, t, k))(jnp.asarray(x)))
        self.assertEqual(g.dtype, np.float64)
        h = 1e-6
        xs = x[np.abs(np.abs(x) - np.sqrt(2) / t) > 1e-3]  # away from the kink
        fd = (np_rbnn_surrogate(xs + h, t, k) - np_rbnn_surrogate(xs - h, t, k)) / (2 * h)
        gs = np.asarray(grad_of(lambda v: quant.rbnn_sign(v, t, k))(jnp.asarray(xs)))
        np.testing.assert_allclose(gs, fd, atol=1e-5)
        np.testing.assert_allclose(np.trapezoid(g, x), 2 * k, rtol=1e-3)

  def test_traced_t_k_do_not_retrace_and_have_zero_grad(self):
    traces = []

    @jax.jit
    def step(x, t, k):
      traces.append(1)
      return grad_of(lambda v: quant.rbnn_sign(v, t, k))(x)

    x = jnp.asarray(GRID)
    for epoch in (0, 10, 500, 999):
      t, k = quant.rbnn_schedule(epoch, 1000)
      np.testing.assert_allclose(
          step(x, t, k), k * np.maximum(0, np.sqrt(2) * t - t * t * np.abs(GRID)), rtol=1e-5,
          atol=1e-6)
    self.assertLen(traces, 1)
    dt, dk = jax.grad(lambda t, k: jnp.sum(quant.rbnn_sign(x, t, k)), argnums=(0, 1))(0.5, 2.0)
    self.assertEqual((float(dt), float(dk)), (0.0, 0.0))

  def test_traced_clip_and_beta_do_not_retrace(self):
    traces = []

    @jax.jit
    def step(x, c, b):
      traces.append(1)
      return grad_of(lambda v: quant.ste_sign(v, c) + quant.swish_sign(v, b))(x)

    x = jnp.asarray(GRID)
    g1, g2 = step(x, 1.0, 5.0), step(x, 0.5, 2.0)
    self.assertLen(traces, 1)
    self.assertFalse(np.allclose(g1, g2))

  def test_schedule(self):
    t, k = quant.rbnn_schedule(0, 1000)
    np.testing.assert_allclose([t, k], [0.01, 100.0], rtol=1e-6)
    t, k = quant.rbnn_schedule(999, 1000)
    np.testing.assert_allclose(t, 0.01 * 1000 ** 0.999, rtol=1e-6)
    self.assertLess(float(t), 10.0)
    self.assertEqual(float(k), 1.0)
    # Official cpt_tk: 10 ** (log10 Tmin + (log10 Tmax - log10 Tmin) / E * e); k = 1 once t >= 1.
    e = jnp.arange(1000)
    ts, ks = jax.jit(quant.rbnn_schedule)(e, 1000)
    np.testing.assert_allclose(ts, 10 ** (-2 + 3 * np.arange(1000) / 1000), rtol=1e-5)
    np.testing.assert_allclose(ks, np.maximum(1 / np.asarray(ts), 1), rtol=1e-6)


  @chex.variants(with_jit=True, without_jit=True)
  def test_schedule_float32_is_design_formula(self):
    # arXiv 2009.13055 eq. 18 (official `cpt_tk`): t = t_min (t_max / t_min) ** (epoch / epochs),
    # k = max(1 / t, 1), in float32 (the default dtype), here against the same formula evaluated
    # by NumPy in float32.
    fn = self.variant(quant.rbnn_schedule)
    for t_min, t_max, epochs in ((1e-2, 10.0, 1000), (1e-2, 1.0, 15), (0.1, 5.0, 7)):
      e = np.arange(epochs + 1, dtype=np.float32)
      t, k = fn(jnp.asarray(e), epochs, t_min, t_max)
      self.assertEqual((t.dtype, k.dtype), (jnp.float32, jnp.float32))
      f32 = np.float32
      want_t = f32(t_min) * (f32(t_max) / f32(t_min)) ** (e / f32(epochs))
      np.testing.assert_allclose(t, want_t, rtol=2e-6)
      np.testing.assert_allclose(k, np.maximum(f32(1) / want_t, f32(1)), rtol=2e-6)
      np.testing.assert_allclose(t[-1], t_max, rtol=2e-6)   # epoch == epochs reaches t_max


class DtypeAndRegistryTest(parameterized.TestCase):

  @parameterized.parameters(*estimators.names())
  def test_float64_in_float64_out(self, name):
    with x64():
      x = jnp.asarray(GRID, jnp.float64) * 0.3
      fn = quant.get(name)
      self.assertEqual(fn(x).dtype, jnp.float64)
      self.assertEqual(grad_of(fn)(x).dtype, jnp.float64)

  @parameterized.parameters(*estimators.names())
  def test_bfloat16_and_shape(self, name):
    x = jnp.asarray(GRID.reshape(1, 13), jnp.bfloat16)
    y = quant.get(name)(x)
    self.assertEqual((y.dtype, y.shape), (jnp.bfloat16, (1, 13)))

  def test_registry(self):
    for name in ("ste_sign", "approx_sign", "swish_sign", "magnitude_aware_sign", "xnor_sign",
                 "ste_tern", "ste_heaviside", "dorefa", "rbnn_sign"):
      self.assertIn(name, quant.names())
    self.assertIs(quant.get("ste_sign"), quant.ste_sign)
    self.assertIs(quant.get(quant.approx_sign), quant.approx_sign)
    self.assertIsNone(quant.get(None))
    with self.assertRaisesRegex(ValueError, "ste_sign"):
      quant.get("no_such_quantizer")

  def test_bits(self):
    self.assertEqual(quant.bits_of("ste_sign"), 1)
    self.assertEqual(quant.bits_of("rbnn_sign"), 1)
    self.assertEqual(quant.bits_of("ste_tern"), 2)
    self.assertEqual(quant.bits_of("dorefa"), 2)
    self.assertEqual(quant.bits_of(functools.partial(quant.dorefa, k_bit=4)), 4)
    self.assertEqual(quant.bits_of(None), 32)

  def test_bits_and_role_options(self):
    # Fixed-width estimators accept only their own width and ignore the role.
    self.assertIs(quant.get("ste_sign", bits=1, role="weights"), quant.ste_sign)
    with self.assertRaisesRegex(ValueError, "1 bit"):
      quant.get("approx_sign", bits=4)
    with self.assertRaisesRegex(ValueError, "constructor arguments"):
      quant.get("ste_sign", per_channel=True)
    with self.assertRaisesRegex(ValueError, "role"):
      quant.get("dorefa", role="inputs")
    # DoReFa builds its k_bit and mode (eq. 5 activations, eq. 9 weights) from bits and role.
    x = jnp.linspace(-1.5, 1.5, 13)
    for bits, role in ((None, "activations"), (3, None), (4, "weights")):
      fn = quant.get("DoReFa", bits=bits, role=role)
      k = 2 if bits is None else bits
      self.assertEqual((fn.precision, quant.bits_of(fn)), (k, k))
      np.testing.assert_array_equal(
          fn(x), quant.dorefa(x, k_bit=k, mode=role or "activations"))
    self.assertIs(quant.get("dorefa"), quant.dorefa)    # no options: the function itself

  def test_register_custom(self):
    @quant.register("test_identity_sign", bits=1)
    def fn(x):
      return x
    self.assertIs(quant.get("test_identity_sign"), fn)
    estimators._REGISTRY.pop("test_identity_sign")  # pylint: disable=protected-access


class LarqCompatibilityTest(absltest.TestCase):

  def test_get_resolves_larq_class_names(self):
    for cls, name in (("SteSign", "ste_sign"), ("ApproxSign", "approx_sign"),
                      ("SwishSign", "swish_sign"), ("MagnitudeAwareSign", "magnitude_aware_sign"),
                      ("SteTern", "ste_tern"), ("SteHeaviside", "ste_heaviside"),
                      ("DoReFa", "dorefa"), ("DoReFaQuantizer", "dorefa")):
      self.assertIs(quant.get(cls), quant.get(name))
      self.assertEqual(estimators.bits_of(cls), estimators.bits_of(name))
    with self.assertRaisesRegex(ValueError, "Unknown quantizer"):
      quant.get("NoSuchSign")

  def test_dorefa_weights_all_zero_is_finite(self):
    # larq divides with tf.math.divide_no_nan: 0 / 0 := 0, then 2 q(1/2) - 1 (q(1/2) = 2/3 at
    # k = 2: round half to even of 1.5).
    for k in (2, 3):
      n = 2 ** k - 1
      got = quant.dorefa(jnp.zeros(4), k_bit=k, mode="weights")
      np.testing.assert_allclose(got, 2 * np.round(0.5 * n) / n - 1, rtol=1e-6)
      g = jax.grad(lambda x: quant.dorefa(x, k_bit=k, mode="weights").sum())(jnp.zeros(4))
      self.assertTrue(np.all(np.isfinite(g)))


if __name__ == "__main__":
  absltest.main()
