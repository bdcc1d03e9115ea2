"""Tests for jaxcompress.quant.quantizers (PAMS quantizers, generic quantizers, PAMS layers)."""
from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from jaxcompress import quant
from jaxcompress.quant import quantizers as qz

try:
  import torch  # pylint: disable=g-import-not-at-top
except ImportError:  # optional cross-check against the official PyTorch formulation
  torch = None


def _normal(seed, shape, dtype=np.float32):
  # NumPy rather than jax.random: eager jax.random compiles a kernel per shape (slow on CPU).
  return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def np_pams(x, alpha, bits):
  """NumPy reference of PAMS eq. 3-4 and its gradients (straight-through round)."""
  qmax = 2.0 ** (bits - 1) - 1
  c = np.clip(x, -alpha, alpha)
  q = np.round(c * qmax / alpha) * alpha / qmax
  inside, tie = np.abs(x) < alpha, np.abs(x) == alpha
  # At the tie the clip's min/max split the gradient in half (jnp.clip, torch.min/max).
  dx = np.where(inside, 1.0, np.where(tie, 0.5, 0.0))
  dalpha = np.where(inside, (q - x) / alpha,
                    np.where(tie, 0.5 * np.sign(x) + (q - x) / alpha, np.sign(x)))
  return q, dx, dalpha


def np_pams_weight(w, bits):
  qmax = 2.0 ** (bits - 1) - 1
  s = np.max(np.abs(w)) + 1e-8
  return np.round(w * qmax / s) * s / qmax


class PamsQuantizeTest(chex.TestCase, parameterized.TestCase):

  def _grid(self, alpha):
    # Edges +-alpha, 0, outside values and in-range points that are not on a rounding tie.
    return np.array([-3 * alpha, -alpha - 1e-3, -alpha, -0.61 * alpha, -0.2 * alpha, 0.0,
                     0.13 * alpha, 0.5 * alpha + 0.01, alpha, alpha + 1e-3, 2.5 * alpha])

  @chex.variants(with_jit=True, without_jit=True)
  def test_values_and_gradients(self):
    with jax.enable_x64(True):
      # bits and alpha are traced: the jitted variant compiles once for the whole grid.
      q_fn = self.variant(qz.pams_quantize)
      dx_fn = self.variant(jax.grad(lambda x, a, b: qz.pams_quantize(x, a, b).sum()))
      da_fn = self.variant(jax.vmap(jax.grad(lambda a, x, b: qz.pams_quantize(x, a, b)),
                                    (None, 0, None)))
      for bits in (2, 4, 8):
        for alpha in (0.5, 1.0, 3.0):
          x = jnp.asarray(self._grid(alpha), jnp.float64)
          a = jnp.asarray(alpha, jnp.float64)
          b = jnp.asarray(bits)
          q = q_fn(x, a, b)
          self.assertEqual(q.dtype, jnp.float64)
          rq, rdx, rda = np_pams(np.asarray(x), alpha, bits)
          np.testing.assert_allclose(q, rq, rtol=0, atol=1e-12, err_msg=f"{bits=} {alpha=}")
          np.testing.assert_array_equal(dx_fn(x, a, b), rdx)
          np.testing.assert_allclose(da_fn(a, x, b), rda, rtol=0, atol=1e-12)
      # Python-int bits give the same values.
      x = jnp.asarray(self._grid(1.0), jnp.float64)
      np.testing.assert_allclose(qz.pams_quantize(x, 1.0, 4), np_pams(np.asarray(x), 1.0, 4)[0],
                                 rtol=0, atol=1e-12)

  def test_alpha_gradient_is_not_pact(self):
    # Inside the range PACT gives 0; PAMS' autodiff gives the rounding residual (q - x) / alpha.
    g = jax.grad(lambda a: qz.pams_quantize(jnp.float32(0.3), a, 4))(jnp.float32(1.0))
    np.testing.assert_allclose(g, (2 / 7 - 0.3) / 1.0, rtol=1e-5)

  def test_levels_4bit(self):
    x = jnp.linspace(-2.0, 2.0, 4001)
    q = np.asarray(qz.pams_quantize(x, 1.0, 4))
    levels = np.unique(np.round(q * 7, 4)) / 7
    self.assertLen(levels, 15)
    np.testing.assert_allclose(np.diff(levels), 1 / 7, atol=1e-5)
    np.testing.assert_allclose(q[x > 1], 1.0)
    np.testing.assert_allclose(q[x < -1], -1.0)

  def test_traced_bits_and_alpha(self):
    x = jnp.asarray(_normal(0, (64,)) * 2)
    f = jax.jit(qz.pams_quantize)
    f(x, jnp.float32(1.5), jnp.int32(2))
    # jit wrappers of one function share its cache, which other tests may have filled: count
    # the entries this test adds.
    before = f._cache_size()
    for bits in (2, 4, 8):
      # 1 ulp apart at most: XLA turns a division by a constant qmax into a reciprocal multiply.
      np.testing.assert_allclose(f(x, jnp.float32(1.5), jnp.int32(bits)),
                                 qz.pams_quantize(x, 1.5, bits), rtol=2e-7, atol=0)
    # One compilation for all bit widths: bits is traced.
    self.assertEqual(f._cache_size(), before)

  def test_dtype_float32(self):
    x = jnp.ones((3,), jnp.float32)
    self.assertEqual(qz.pams_quantize(x, 2.0, 8).dtype, jnp.float32)
    self.assertEqual(qz.pams_quantize_weight(x, 8).dtype, jnp.float32)

  @chex.variants(with_jit=True, without_jit=True)
  def test_weight_quantizer(self):
    with jax.enable_x64(True):
      w = jnp.asarray(_normal(1, (3, 3, 4, 5), np.float64))
      q_fn = self.variant(qz.pams_quantize_weight)
      g_fn = self.variant(jax.grad(lambda w, b: jnp.sum(qz.pams_quantize_weight(w, b) * 3.0)))
      for bits in (2, 4, 8):
        q = q_fn(w, jnp.asarray(bits))
        np.testing.assert_allclose(q, np_pams_weight(np.asarray(w), bits), rtol=0, atol=1e-12)
        # max|w| is (up to the 1e-8 guard) a grid point.
        np.testing.assert_allclose(np.max(np.abs(q)), np.max(np.abs(w)), atol=2e-8)
        np.testing.assert_allclose(g_fn(w, jnp.asarray(bits)), 3.0, rtol=1e-12)


class GenericQuantizerTest(parameterized.TestCase):

  def test_registry(self):
    # The uniform quantizers are resolved by the library's one resolver, quant.get.
    self.assertEqual(quant.quantizer_names(),
                     ["absmax", "absmax_per_channel", "clip", "pams_weight", "unsigned"])
    for name in quant.quantizer_names():
      q = quant.get(name, bits=4)
      self.assertEqual((q.bits, q.precision, quant.bits_of(q)), (4, 4, 4))
      self.assertEqual(q(jnp.ones((2, 3))).shape, (2, 3))
      self.assertEqual(quant.get(name).bits, 8)               # the classes' default width
    self.assertIs(qz.get_quantizer, quant.get)
    self.assertEqual(quant.get("clip", bits=3, alpha=0.5), qz.ClipQuantizer(bits=3, alpha=0.5))
    self.assertTrue(quant.get("absmax_per_channel").per_channel)
    self.assertFalse(quant.get("absmax").per_channel)
    with self.assertRaisesRegex(ValueError, "absmax"):
      quant.get("nope")
    inst = qz.AbsMaxQuantizer(bits=3)
    self.assertIs(quant.get(inst), inst)

  def test_absmax_per_channel(self):
    w = np.array([[0.1, -4.0], [0.05, 2.5]], np.float32)
    q = np.asarray(quant.get("absmax_per_channel", bits=2)(w))
    # qmax = 1: each column rounds to {-s, 0, s} with its own scale.
    np.testing.assert_allclose(q, [[0.1, -4.0], [0.0, 4.0]], atol=1e-6)
    q_tensor = np.asarray(quant.get("absmax", bits=2)(w))
    np.testing.assert_allclose(q_tensor, [[0.0, -4.0], [0.0, 4.0]], atol=1e-6)
    g = jax.grad(lambda w: qz.AbsMaxQuantizer(bits=2)(w).sum())(jnp.asarray(w))
    np.testing.assert_array_equal(g, np.ones_like(w))

  def test_unsigned(self):
    x = jnp.array([-1.0, 0.0, 0.2, 0.5, 1.0])
    q = qz.UnsignedQuantizer(bits=2)(x)  # 3 levels above 0: step 1/3
    np.testing.assert_allclose(q, [0.0, 0.0, 1 / 3, 2 / 3, 1.0], atol=1e-6)
    g = jax.grad(lambda x: qz.UnsignedQuantizer(bits=2)(x).sum())(x)
    np.testing.assert_array_equal(g, [0.0, 1.0, 1.0, 1.0, 1.0])


class PAMSQuantActTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.xs = [jnp.asarray(_normal(i, (2, 3, 3, 4)) * (i + 1)) for i in range(4)]

  def _stat(self, x):
    return float(np.mean(np.max(np.abs(np.asarray(x)), axis=(1, 2, 3))))

  def test_init_and_eval(self):
    m = qz.PAMSQuantAct(bits=4)
    v = m.init(jax.random.key(0), self.xs[0])
    np.testing.assert_array_equal(v["params"]["alpha"], [10.0])
    np.testing.assert_array_equal(v[qz.CALIB_COLLECTION]["max_val"], [1.0])
    y = m.apply(v, self.xs[3])  # pams_calib immutable -> plain quantization with alpha
    np.testing.assert_allclose(y, qz.pams_quantize(self.xs[3], 10.0, 4))
    self.assertEqual(m.input_bits, 4)

  def _calibrate(self, calibration):
    m = qz.PAMSQuantAct(bits=8, calibration=calibration)
    v = m.init(jax.random.key(0), self.xs[0])
    params, calib = v["params"], v[qz.CALIB_COLLECTION]
    step = jax.jit(lambda p, c, x: m.apply({"params": p, qz.CALIB_COLLECTION: c}, x,
                                           mutable=[qz.CALIB_COLLECTION]))
    for x in self.xs:
      y, upd = step(params, calib, x)
      calib = upd[qz.CALIB_COLLECTION]
    return m, params, calib, y

  def test_last_batch_calibration(self):
    m, params, calib, y = self._calibrate("last_batch")
    m_last = self._stat(self.xs[-1])
    np.testing.assert_allclose(calib["max_val"], [m_last], rtol=1e-6)
    # Calibration mode: no clipping, alpha's value replaced by the statistic.
    qmax = 127.0
    ref = np.round(np.asarray(self.xs[-1]) * qmax / m_last) * m_last / qmax
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    new_params = qz.calibrated_params(params, calib)
    np.testing.assert_allclose(new_params["alpha"], [m_last], rtol=1e-6)

  def test_ema_calibration(self):
    _, _, calib, _ = self._calibrate("ema")
    ema = self._stat(self.xs[0])
    for x in self.xs[1:]:
      ema = 0.9997 * ema + 0.0003 * self._stat(x)
    np.testing.assert_allclose(calib["max_val"], [ema], rtol=1e-6)
    self.assertEqual(int(calib["count"]), 4)

  def test_calibration_off_and_gradient(self):
    m = qz.PAMSQuantAct(bits=4)
    v = m.init(jax.random.key(0), self.xs[0])
    calib = qz.set_calibration(v[qz.CALIB_COLLECTION], False)
    y, upd = m.apply({**v, qz.CALIB_COLLECTION: calib}, self.xs[2],
                     mutable=[qz.CALIB_COLLECTION])
    np.testing.assert_allclose(y, qz.pams_quantize(self.xs[2], 10.0, 4))
    np.testing.assert_array_equal(upd[qz.CALIB_COLLECTION]["max_val"], [1.0])
    # In calibration mode the gradient still reaches alpha: d/da = sum (q - x) / a.
    def loss(p):
      out, _ = m.apply({"params": p, qz.CALIB_COLLECTION: v[qz.CALIB_COLLECTION]}, self.xs[1],
                       mutable=[qz.CALIB_COLLECTION])
      return out.sum()
    g = jax.grad(loss)(v["params"])["alpha"]
    a = self._stat(self.xs[1])
    x = np.asarray(self.xs[1], np.float64)
    q = np.round(x * 7 / a) * a / 7
    np.testing.assert_allclose(g, [np.sum((q - x) / a)], rtol=1e-3, atol=1e-4)


class PAMSConvTest(absltest.TestCase):

  def test_matches_conv_with_quantized_kernel(self):
    x = jnp.asarray(_normal(0, (2, 6, 6, 3)))
    pc = qz.PAMSConv(5, (3, 3), padding=((1, 1), (1, 1)), bits=4)
    v = pc.init(jax.random.key(1), x)
    ref_conv = nn.Conv(5, (3, 3), padding=((1, 1), (1, 1)))
    ref_v = ref_conv.init(jax.random.key(1), x)
    chex.assert_trees_all_equal_shapes(v, ref_v)  # same param names and shapes as nn.Conv
    qv = {"params": {"kernel": qz.pams_quantize_weight(v["params"]["kernel"], 4),
                     "bias": v["params"]["bias"]}}
    np.testing.assert_allclose(pc.apply(v, x), ref_conv.apply(qv, x), rtol=1e-5, atol=1e-5)
    self.assertEqual((pc.weight_bits, pc.input_bits), (4, 4))
    # Strided / VALID variants keep nn.Conv's output shapes.
    pc2 = qz.PAMSConv(2, (1, 1), strides=2, padding="VALID", use_bias=False)
    self.assertEqual(pc2.apply(pc2.init(jax.random.key(2), x), x).shape, (2, 3, 3, 2))

  def test_quantize_input(self):
    x = jnp.asarray(_normal(0, (1, 4, 4, 2)) * 20)
    pc = qz.PAMSConv(3, (3, 3), bits=8, quantize_input=True)
    v = pc.init(jax.random.key(1), x)
    self.assertIn("quant_act", v["params"])
    plain = qz.PAMSConv(3, (3, 3), bits=8)
    y_ref = plain.apply({"params": {k: v["params"][k] for k in ("kernel", "bias")}},
                        qz.pams_quantize(x, 10.0, 8))
    np.testing.assert_allclose(pc.apply(v, x), y_ref, rtol=1e-5, atol=1e-5)


@absltest.skipIf(torch is None, "PyTorch not installed")
class TorchReferenceTest(absltest.TestCase):
  """Same inputs through a PyTorch transcription of the official `quant_ops.py` formulas."""

  def _torch_round_ste(self, v):
    return v + (torch.round(v) - v).detach()

  def test_act_and_weight_quantizers(self):
    bits, qmax = 4, 7.0
    x_np = np.concatenate([_normal(3, (50,)) * 2, [-1.5, 1.5, 0.0, -3.0, 3.0]]).astype(np.float32)
    x = torch.tensor(x_np, requires_grad=True)
    alpha = torch.tensor([1.5], requires_grad=True)
    act = torch.max(torch.min(x, alpha), -alpha)
    q = self._torch_round_ste(act * qmax / alpha) * alpha / qmax
    q.sum().backward()
    jq, (jgx, jga) = jax.value_and_grad(
        lambda x, a: qz.pams_quantize(x, a, bits).sum(), (0, 1))(jnp.asarray(x_np),
                                                                 jnp.array([1.5], jnp.float32))
    np.testing.assert_allclose(jgx, x.grad.numpy(), rtol=1e-6, atol=0)  # incl. 0.5 at ties
    np.testing.assert_allclose(jga, alpha.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(qz.pams_quantize(jnp.asarray(x_np), 1.5, bits),
                               q.detach().numpy(), rtol=1e-6, atol=1e-7)

    w_np = _normal(4, (3, 3, 4, 5))
    w = torch.tensor(w_np, requires_grad=True)
    m = torch.abs(w.detach()).max() + 1e-8
    qw = self._torch_round_ste(w * qmax / m) * m / qmax
    (qw * torch.tensor(w_np)).sum().backward()
    jw, jgw = jax.value_and_grad(lambda w: (qz.pams_quantize_weight(w, bits) * w_np).sum())(
        jnp.asarray(w_np))
    np.testing.assert_allclose(qz.pams_quantize_weight(jnp.asarray(w_np), bits),
                               qw.detach().numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(jgw, w.grad.numpy(), rtol=1e-6, atol=1e-7)


class PamsTiesTest(parameterized.TestCase):
  """Exact .5 ties after scaling round half to even like PyTorch's IEEE `x * qmax / alpha`.

  That needs correctly rounded float32 division, which XLA:CPU and TPU give. XLA:GPU divides
  with PTX `div.full.f32` (up to 2 ulp), so there a tie, or an input 1 ulp from one, may land on
  the neighbouring level; `_assert_levels` then checks the weaker property that still holds (the
  pams_quantize docstring says how to get IEEE division on a GPU).
  """

  def _assert_levels(self, got, expected, step):
    if jax.default_backend() in ("cpu", "tpu"):
      # Same level everywhere (a one-level flip is `step` away; allow float rounding only).
      np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    else:
      # Approximate division: at most one level away, and still on the grid.
      np.testing.assert_array_less(np.abs(got - expected), step * 1.001)
      levels = got / step
      np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)

  @parameterized.product(bits=(4, 8), alpha=(0.7, 1.3, 3.0, 7.0), jit=(False, True))
  def test_activation_ties_match_float32_numpy(self, bits, alpha, jit):
    qmax = np.float32(2 ** (bits - 1) - 1)
    a = np.float32(alpha)
    ties = ((np.arange(-qmax, qmax, dtype=np.float32) + np.float32(0.5)) * a / qmax).astype(
        np.float32)
    x = np.concatenate([ties, np.nextafter(ties, np.float32(np.inf)),
                        np.nextafter(ties, np.float32(-np.inf))])
    c = np.clip(x, -a, a)
    expected = np.round(c * qmax / a) * a / qmax  # NumPy float32: IEEE division, half to even
    fn = jax.jit(qz.pams_quantize, static_argnums=2) if jit else qz.pams_quantize
    got = np.asarray(fn(jnp.asarray(x), alpha, bits))
    self._assert_levels(got, expected, a / qmax)

  def test_weight_ties_match_float32_numpy(self):
    w = np.float32([7.0, 6.5, 0.0, 0.0, -2.5, 1.5])
    s = np.float32(7.0) + np.float32(1e-8)
    expected = np.round(w * np.float32(7) / s) * s / np.float32(7)
    got = np.asarray(qz.pams_quantize_weight(jnp.asarray(w), 4))
    self._assert_levels(got, expected, s / np.float32(7))
    if jax.default_backend() in ("cpu", "tpu"):
      self.assertEqual(float(got[1]), 6.0)


if __name__ == "__main__":
  absltest.main()
