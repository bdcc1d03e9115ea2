"""Tests for jaxcompress.quant.layers: shapes, dtypes, padding, gradient flow, layer sets."""
from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from jaxcompress import quant
from jaxcompress.models import factory
from jaxcompress.quant import layers


def np_larq_sign(x):
  return np.where(x >= 0, 1.0, -1.0)


def np_conv_nhwc(x, w, stride, pads):
  """Naive NHWC x HWIO cross-correlation; `x` zero-padded by `pads` ((lo, hi), (lo, hi))."""
  x = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  kh, kw, _, o = w.shape
  ho, wo = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
  out = np.zeros((x.shape[0], ho, wo, o))
  for i in range(ho):
    for j in range(wo):
      out[:, i, j] = np.einsum("nhwc,hwco->no",
                               x[:, i * stride:i * stride + kh, j * stride:j * stride + kw], w)
  return out


RNG = np.random.default_rng(0)
X = RNG.normal(size=(2, 5, 5, 3)).astype(np.float32)


class BinaryConvTest(parameterized.TestCase):

  @parameterized.parameters((1, "SAME", ((1, 1), (1, 1)), (5, 5)),
                            (2, 1, ((1, 1), (1, 1)), (3, 3)),
                            (1, "VALID", ((0, 0), (0, 0)), (3, 3)))
  def test_values_match_numpy_with_padding_after_binarisation(self, stride, padding, pads, hw):
    conv = quant.BinaryConv(4, (3, 3), strides=stride, padding=padding)
    shapes = jax.eval_shape(conv.init, jax.random.key(0), X)  # no compile
    self.assertEqual(shapes["params"]["kernel"].shape, (3, 3, 3, 4))
    kernel = RNG.normal(size=(3, 3, 3, 4)).astype(np.float32)
    y = jax.jit(conv.apply)({"params": {"kernel": kernel}}, X)
    self.assertEqual((y.shape, y.dtype), ((2,) + hw + (4,), jnp.float32))
    ref = np_conv_nhwc(np_larq_sign(X), np_larq_sign(kernel), stride, pads)
    np.testing.assert_allclose(y, ref, atol=1e-5)

  def test_border_zero_not_sign_of_zero(self):
    # larq's sign(0) = +1: padding *before* the quantiser would add +-1 border taps.
    x = np.array([[[[0.5, -1.0]]]], np.float32)  # (1, 1, 1, 2)
    conv = quant.BinaryConv(3, (3, 3), padding=1)
    kernel = RNG.normal(size=(3, 3, 2, 3)).astype(np.float32)
    y = jax.jit(conv.apply)({"params": {"kernel": kernel}}, x)
    np.testing.assert_allclose(y[0, 0, 0], np_larq_sign(x[0, 0, 0]) @ np_larq_sign(kernel[1, 1]),
                               atol=1e-6)

  def test_float_sides_and_gradient_flow(self):
    conv = quant.BinaryConv(4, (3, 3), input_quantizer=None, kernel_quantizer="approx_sign",
                            use_bias=True)
    variables = jax.jit(conv.init)(jax.random.key(2), X)
    self.assertEqual(variables["params"]["bias"].shape, (4,))
    kernel = np.asarray(variables["params"]["kernel"])

    def loss(p, x):
      y = conv.apply(p, x)
      return jnp.sum(y ** 2), y

    (_, y), (gp, gx) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
        variables, X)
    ref = np_conv_nhwc(X, np_larq_sign(kernel), 1, ((1, 1), (1, 1)))
    np.testing.assert_allclose(y, ref, atol=1e-4)
    self.assertGreater(float(jnp.abs(gp["params"]["kernel"]).max()), 0.0)
    self.assertGreater(float(jnp.abs(gp["params"]["bias"]).max()), 0.0)
    self.assertGreater(float(jnp.abs(gx).max()), 0.0)

  def test_bits(self):
    self.assertEqual((quant.BinaryConv(4).weight_bits, quant.BinaryConv(4).input_bits), (1, 1))
    conv = quant.BinaryConv(4, input_quantizer=functools.partial(quant.dorefa, k_bit=4),
                            kernel_quantizer="ste_tern")
    self.assertEqual((conv.weight_bits, conv.input_bits), (2, 4))
    self.assertEqual(quant.BinaryDense(4, input_quantizer=None).input_bits, 32)


class BinaryDenseTest(absltest.TestCase):

  def test_values_and_grads(self):
    x = X.reshape(2, -1)[:, :6]
    dense = quant.BinaryDense(3, input_quantizer="ste_sign", kernel_quantizer="ste_sign")
    kernel = RNG.normal(size=(6, 3)).astype(np.float32) * 0.8  # some |W| > 1 (clipped grads)
    variables = {"params": {"kernel": kernel, "bias": np.zeros(3, np.float32)}}
    y = jax.jit(dense.apply)(variables, x)
    self.assertEqual((y.shape, y.dtype), ((2, 3), jnp.float32))
    np.testing.assert_allclose(y, np_larq_sign(x) @ np_larq_sign(kernel), atol=1e-5)
    g = jax.jit(jax.grad(lambda p: jnp.sum(dense.apply(p, x) * jnp.arange(3.0))))(variables)
    # d/dW = sign(x)^T cot, masked by |W| <= 1 (ste_sign clip).
    expected = (np_larq_sign(x).T @ np.tile(np.arange(3.0), (2, 1))) * (np.abs(kernel) <= 1)
    np.testing.assert_allclose(g["params"]["kernel"], expected, atol=1e-5)


class RBNNConvTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.conv = quant.RBNNConv(4)
    cls.v = jax.jit(cls.conv.init)(jax.random.key(0), X)  # one init compile for the class

  def _init(self, x, **kw):
    conv = quant.RBNNConv(4, **kw)
    return conv, jax.jit(conv.init)(jax.random.key(0), x)

  def test_variables(self):
    conv, v = self.conv, self.v
    self.assertEqual(set(v), {"params", "rbnn", "rbnn_schedule"})
    p = v["params"]
    self.assertEqual(jax.tree_util.tree_map(jnp.shape, p),
                     {"kernel": (3, 3, 3, 4), "theta": (4,), "alpha": (4,)})
    np.testing.assert_allclose(p["theta"], np.full(4, np.pi / 2), rtol=1e-7)
    # Official alpha: mean|U(-1/sqrt(27), 1/sqrt(27))| per channel ~ 0.5/sqrt(27).
    np.testing.assert_allclose(p["alpha"], 0.5 / math.sqrt(27), rtol=0.3)
    self.assertEqual((v["rbnn"]["r1"].shape, v["rbnn"]["r2"].shape), ((3, 3), (9, 9)))
    for r in (v["rbnn"]["r1"], v["rbnn"]["r2"]):
      np.testing.assert_allclose(r @ r.T, np.eye(r.shape[0]), atol=1e-5)
    # kaiming_normal fan_in: std sqrt(2/27).
    self.assertBetween(float(jnp.std(p["kernel"])), 0.6 * math.sqrt(2 / 27),
                       1.4 * math.sqrt(2 / 27))
    self.assertEqual((conv.weight_bits, conv.input_bits), (1, 1))
    self.assertEqual((quant.RBNNConv.weight_bits, quant.RBNNConv.input_bits), (1, 1))

  def test_alpha_from_kernel(self):
    _, v = self._init(X, alpha_init="kernel")
    np.testing.assert_allclose(v["params"]["alpha"],
                               jnp.mean(jnp.abs(v["params"]["kernel"]), axis=(0, 1, 2)), rtol=1e-6)

  def test_forward_is_rbnn_conv2d_and_shapes(self):
    conv, v = quant.RBNNConv(4, strides=(2, 2)), self.v
    y = jax.jit(conv.apply)(v, X)
    self.assertEqual((y.shape, y.dtype), ((2, 3, 3, 4), jnp.float32))
    p, r = v["params"], v["rbnn"]
    ref = jax.jit(quant.rbnn_conv2d, static_argnums=(8, 9))(
        X, p["kernel"], r["r1"], r["r2"], p["theta"], p["alpha"], 0.01, 100.0, 2, 1)
    np.testing.assert_array_equal(y, ref)

  def test_gradient_flow_and_traced_schedule(self):
    conv = self.conv
    # theta away from pi/2 so the latent-weight path is open.
    v = {**self.v, "params": {**self.v["params"], "theta": jnp.full((4,), 1.0)}}
    traces = []

    @jax.jit
    def grads(v, x, t, k):
      traces.append(1)
      v = {**v, "rbnn_schedule": layers.set_rbnn_schedule(v["rbnn_schedule"], t, k)}
      return jax.grad(lambda p, x: jnp.sum(conv.apply({**v, "params": p}, x) ** 2),
                      argnums=(0, 1))(v["params"], x)

    g1 = grads(v, X, *quant.rbnn_schedule(0, 100))
    g2 = grads(v, X, *quant.rbnn_schedule(99, 100))
    self.assertLen(traces, 1)
    for g in (g1, g2):
      for leaf in jax.tree_util.tree_leaves(g):
        self.assertGreater(float(jnp.abs(leaf).max()), 0.0)
    self.assertFalse(np.allclose(g1[0]["kernel"], g2[0]["kernel"]))

  def test_float64(self):
    with jax.enable_x64(True):
      x = jnp.asarray(X, jnp.float64)
      conv = quant.RBNNConv(2, param_dtype=jnp.float64)
      v = jax.jit(conv.init)(jax.random.key(0), x)
      self.assertEqual(v["rbnn"]["r1"].dtype, jnp.float64)
      self.assertEqual(jax.eval_shape(conv.apply, v, x).dtype, jnp.float64)


class Tiny(nn.Module):
  """conv (stem, float) -> BN -> act -> inner conv -> BN -> act -> dense, via a Layers set."""
  layers: factory.Layers

  @nn.compact
  def __call__(self, x, train=False):
    ly = self.layers
    x = ly.act(ly.batch_norm(train)(ly.first_conv(4, (3, 3), padding=((1, 1), (1, 1)),
                                                  use_bias=False, name="stem")(x)))
    x = ly.act(ly.batch_norm(train)(factory.conv3x3(ly, 4, 2, name="inner")(x)))
    return ly.last_dense(2)(jnp.mean(x, axis=(1, 2)))


class LayerSetTest(absltest.TestCase):

  def test_rbnn_layer_set_and_epoch_hook(self):
    ly = factory.get("rbnn")
    self.assertIs(ly.conv, quant.RBNNConv)
    self.assertIs(ly.act, nn.hard_tanh)
    self.assertEqual(ly.bn_scale_init, 1e-8)
    model = Tiny(ly)
    v = jax.jit(model.init)(jax.random.key(0), X)
    self.assertIn("inner", v["rbnn"])
    self.assertNotIn("stem", v["rbnn"])  # the stem stays float
    np.testing.assert_allclose(v["params"]["BatchNorm_0"]["scale"], 1e-8)
    new = jax.jit(quant.rbnn_rotate_params)(v["params"], v["rbnn"])
    r1 = new["inner"]["r1"]
    np.testing.assert_allclose(r1 @ r1.T, np.eye(r1.shape[0]), atol=1e-5)
    self.assertGreater(float(jnp.abs(r1 - v["rbnn"]["inner"]["r1"]).max()), 1e-4)
    self.assertEqual(jax.eval_shape(model.apply, {**v, "rbnn": new}, X).shape, (2, 2))

  def test_binary_layer_set(self):
    ly = factory.get("binary", input_quantizer="approx_sign", kernel_quantizer="ste_sign")
    model = Tiny(ly)
    v = jax.jit(model.init)(jax.random.key(0), X)
    inner = ly.conv(4, (3, 3))
    self.assertEqual((inner.input_quantizer, inner.weight_bits), ("approx_sign", 1))
    g = jax.jit(jax.grad(lambda p: jnp.sum(model.apply({**v, "params": p}, X) ** 2)))(v["params"])
    self.assertGreater(float(jnp.abs(g["inner"]["kernel"]).max()), 0.0)


if __name__ == "__main__":
  absltest.main()
