"""Tests for jaxcompress.quant.export: bit packing, XNOR-popcount serving, int8 export, sizes."""
from __future__ import annotations

from absl.testing import absltest
from absl.testing import parameterized
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress import quant
from jaxcompress.models import build


def perturb(variables, seed=0):
  """Random non-trivial BatchNorm statistics / scales / biases (as a trained model has)."""
  leaves, tree = jax.tree_util.tree_flatten_with_path(variables)
  rng = np.random.default_rng(seed)
  out = []
  for path, leaf in leaves:
    name = jax.tree_util.keystr(path)
    if "batch_stats" in name and "mean" in name:
      leaf = leaf + rng.normal(size=leaf.shape).astype(leaf.dtype) * 0.5
    elif "batch_stats" in name and "var" in name:
      leaf = leaf * rng.uniform(0.5, 2.0, size=leaf.shape).astype(leaf.dtype)
    elif "BatchNorm" in name:
      leaf = leaf + rng.normal(size=leaf.shape).astype(leaf.dtype) * 0.3
    out.append(leaf)
  return jax.tree_util.tree_unflatten(tree, out)


class Net(nn.Module):
  """Test model for quantize() + export(): float stem/head, binary convs, int8 conv, dense."""

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(8, (3, 3), name="stem")(x)
    y = nn.Conv(32, (3, 3), strides=2, use_bias=False, name="b1")(x)
    y = nn.BatchNorm(use_running_average=not train)(y)
    y = nn.Conv(32, (3, 3), padding=((1, 1), (2, 0)), kernel_dilation=(1, 2), name="b2")(y)
    y = nn.Conv(6, (3, 3), name="k4")(y)
    y = jnp.mean(y, (1, 2))
    y = nn.Dense(40, name="d")(y)
    return nn.Dense(3, name="head")(y)


RULES = (quant.QuantRule(module_path="k4", input_quantizer="absmax",
                         kernel_quantizer="absmax_per_channel", bits=4),
         quant.QuantRule(module_path="b1", scale="channel"),
         quant.QuantRule(module_path=".*", kernel_quantizer="magnitude_aware_sign"))


class PackTest(parameterized.TestCase):

  @parameterized.parameters(1, 31, 32, 33, 100)
  def test_round_trip(self, n):
    bits = jnp.asarray(np.random.default_rng(n).random((3, n)) > 0.5)
    words = quant.pack_bits(bits)
    self.assertEqual(words.dtype, jnp.uint32)
    self.assertEqual(words.shape, (3, -(-n // 32)))
    np.testing.assert_array_equal(quant.unpack_bits(words, n), bits)

  def test_bit_order_and_padding_bits(self):
    words = quant.pack_bits(jnp.array([True, False, True] + [False] * 30 + [True]))
    np.testing.assert_array_equal(words, np.array([5, 2], np.uint32))

  @parameterized.parameters(5, 32, 70)
  def test_xnor_popcount_matmul(self, k):
    rng = np.random.default_rng(k)
    a = rng.random((7, k)) > 0.5
    w = rng.random((k, 4)) > 0.5
    got = quant.xnor_popcount_matmul(quant.pack_bits(jnp.asarray(a)),
                                     quant.pack_bits(jnp.asarray(w).T).T, k)
    want = np.where(a, 1, -1) @ np.where(w, 1, -1)
    np.testing.assert_array_equal(got, want)


class ExportTest(parameterized.TestCase):

  def check_serving(self, exported, want, x, eager=True):
    got = quant.serve_fn(exported)(x)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(jnp.argmax(got, -1), jnp.argmax(want, -1))
    if eager:  # op by op: slow for a whole ResNet, so only on the small models
      np.testing.assert_allclose(quant.serve_apply(exported, x), want, rtol=0, atol=1e-4)

  @parameterized.parameters(True, False)
  def test_binary_resnet20(self, fold_bn):
    model = build("resnet20", layers="binary")
    x = jax.random.normal(jax.random.key(1), (3, 8, 8, 3))
    variables = perturb(model.init(jax.random.key(0), x))
    exported = quant.export(variables, model, x, fold_bn=fold_bn, train=False)
    self.assertLen(exported.layers, 18)  # every inner conv; stem and classifier stay float
    self.assertEqual({l.spec.mode for l in exported.layers.values()}, {"xnor"})
    self.assertLen(exported.folded, 18 if fold_bn else 0)
    for layer in exported.layers.values():
      self.assertEqual(layer.weights.dtype, jnp.uint32)
      self.assertEqual(layer.weights.shape, (-(-layer.spec.k // 32), layer.spec.kernel_shape[-1]))
    # Float kernels of converted layers (and folded BatchNorms) are gone from the export.
    flat = jax.tree_util.tree_flatten_with_path(exported.variables)[0]
    names = [jax.tree_util.keystr(p) for p, _ in flat]
    self.assertFalse(any("BinaryConv" in n for n in names))
    self.assertTrue(any("stem" in n for n in names))
    want = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    self.check_serving(exported, want, x, eager=False)
    sizes = quant.export_sizes(exported)
    self.assertGreaterEqual(sizes["binary_ratio"], 31.0)

  def test_quantized_model(self):
    qmodel = quant.quantize(Net(), RULES, log=None)
    x = jax.random.normal(jax.random.key(2), (2, 9, 9, 3))
    variables = perturb(qmodel.init(jax.random.key(0), x), seed=1)
    exported = quant.export(variables, qmodel, x)
    modes = {p: l.spec.mode for p, l in exported.layers.items()}
    self.assertEqual(modes, {"b1": "xnor", "b2": "xnor", "k4": "int", "d": "xnor"})
    self.assertEqual(exported.folded, (("BatchNorm_0", "b1"),))
    self.check_serving(exported, qmodel.apply(variables, x), x)

  def test_rules_with_float_model(self):
    x = jax.random.normal(jax.random.key(2), (2, 9, 9, 3))
    variables = Net().init(jax.random.key(0), x)
    exported = quant.export(variables, RULES, x, model=Net())
    want = quant.quantize(Net(), RULES, log=None).apply(variables, x)
    self.check_serving(exported, want, x)

  def test_int8_export(self):
    qmodel = quant.quantize(Net(), RULES, log=None)
    x = jnp.ones((1, 9, 9, 3))
    variables = qmodel.init(jax.random.key(0), x)
    layer = quant.export(variables, qmodel, x).layers["k4"]
    self.assertEqual(layer.weights.dtype, jnp.int8)
    self.assertEqual(layer.weights.shape, (3, 3, 32, 6))
    self.assertEqual(layer.step.shape, (1, 1, 1, 6))
    self.assertLessEqual(int(jnp.max(jnp.abs(layer.weights))), 7)  # 4-bit grid
    self.assertEqual(layer.scale.shape, (6,))
    self.assertEqual(layer.shift.dtype, jnp.float32)

  def test_binary_weight_float_input(self):
    rules = [quant.QuantRule(module_path=".*", input_quantizer=None)]
    qmodel = quant.quantize(Net(), rules, log=None)
    x = jax.random.normal(jax.random.key(3), (2, 9, 9, 3))
    variables = qmodel.init(jax.random.key(0), x)
    exported = quant.export(variables, qmodel, x)
    self.assertEqual(exported.layers["b2"].spec.mode, "binary_weight")
    self.check_serving(exported, qmodel.apply(variables, x), x)


if __name__ == "__main__":
  absltest.main()
