"""Tests for jaxcompress.quant.export: bit packing, XNOR-popcount serving, int8 export, sizes."""
from __future__ import annotations

import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest, parameterized

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
    # atol for logits near 0, rtol 1e-6 for large ones (GPU reductions order sums differently:
    # 7e-4 absolute on logits of ~1500 on an H200).
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)
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

  def test_bnas_xnor_cells_pointwise_packed_depthwise_as_trained(self):
    # BNAS's XNOR DARTS cells: the 1x1 XNOR convs (xnor_sign kernels) are packed, their BNs
    # folded; the depthwise (grouped) ones keep their training forward, with a note.
    from jaxcompress.nas import eval_network  # pylint: disable=g-import-not-at-top
    net = eval_network.EvalNetwork(eval_network.get_genotype("DARTS_V2"), C=8, num_cells=3,
                                   op_set="binary", binary_activations=True, auxiliary=False)
    x = jax.random.normal(jax.random.key(4), (2, 8, 8, 3))
    variables = perturb(net.init(jax.random.key(0), x))
    exported = quant.export(variables, net, x, train=False)
    self.assertNotEmpty(exported.layers)
    self.assertEqual({l.spec.mode for l in exported.layers.values()}, {"xnor"})
    self.assertTrue(all(l.spec.kernel_shape[:2] == (1, 1) for l in exported.layers.values()))
    grouped = [n for n in exported.notes if "grouped convolution" in n]
    self.assertLen(grouped, len(exported.layers))  # one depthwise conv before each 1x1
    self.check_serving(exported, net.apply(variables, x, train=False), x, eager=False)


def rbnn_variables(model, x, seed=0):
  """RBNN variables as after training: perturbed BN statistics, official uniform thetas in
  [0, pi/2), rotations re-solved once on the latent weights (not the Haar init)."""
  variables = perturb(model.init(jax.random.key(seed), x), seed)
  params = jax.tree_util.tree_map_with_path(
      lambda p, l: (jax.random.uniform(jax.random.key(zlib.crc32(jax.tree_util.keystr(p).encode())
                                                      + seed), l.shape, l.dtype, 0.0, np.pi / 2)
                    if "theta" in jax.tree_util.keystr(p) else l), variables["params"])
  rotations = quant.rbnn_rotate_params(params, variables["rbnn"], rounds=1)
  return {**variables, "params": params, "rbnn": rotations}


def np_rbnn_conv(x, wb, alpha, pad):
  """Independent NumPy reference of a stride-1 RBNN conv with a given {-1, 0, 1} kernel:
  sign(standardised x) with sign(0) = 0 (unbiased std), zero padding after binarisation."""
  x = np.asarray(x, np.float64)
  c = x - x.mean(axis=(1, 2, 3), keepdims=True)
  a = np.sign(c / c.std(axis=(1, 2, 3), keepdims=True, ddof=1))
  a = np.pad(a, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  kh, kw, _, o = wb.shape
  n, h, w, _ = x.shape
  out = np.zeros((n, h + 2 * pad - kh + 1, w + 2 * pad - kw + 1, o))
  for i in range(out.shape[1]):
    for j in range(out.shape[2]):
      out[:, i, j] = np.einsum("nhwc,hwco->no", a[:, i:i + kh, j:j + kw], wb)
  return out * np.asarray(alpha)


class RBNNConvNet(nn.Module):
  """One RBNN conv (RBNN convs are found by type, not by rules)."""

  @nn.compact
  def __call__(self, x):
    return quant.RBNNConv(6, padding=((1, 1), (1, 1)), use_bias=True)(x)


class RBNNExportTest(parameterized.TestCase):

  def serve_check(self, exported, want, x):
    got = quant.serve_fn(exported)(x)
    # atol for logits near 0, rtol 1e-6 for large ones (GPU reductions order sums differently:
    # 7e-4 absolute on logits of ~1500 on an H200).
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(jnp.argmax(got, -1), jnp.argmax(want, -1))
    return got

  def test_rbnn_resnet20_packed_equals_training_forward(self):
    # The model of configs/rbnn/digits_resnet20.py (8x8x1 digits, BN before the classifier).
    model = build("resnet20", layers="rbnn", bn_before_classifier=True)
    x = jnp.clip(jax.random.normal(jax.random.key(1), (6, 8, 8, 1)) * 1.5, -1.0, 1.0)
    variables = rbnn_variables(model, x)
    exported = quant.export(variables, model, x, train=False)
    self.assertLen(exported.layers, 18)      # every RBNNConv; stem and classifier stay float
    self.assertLen(exported.folded, 18)      # every conv's BatchNorm folded into its scale
    self.assertEqual(exported.notes, ())
    for layer in exported.layers.values():
      self.assertEqual(layer.spec.mode, "xnor")
      self.assertTrue(layer.spec.center_input)
      self.assertEqual(layer.weights.dtype, jnp.uint32)
      self.assertEqual(layer.weights.shape, (-(-layer.spec.k // 32), layer.spec.kernel_shape[-1]))
      self.assertEqual(layer.scale.dtype, jnp.float32)
    # No latent kernel, angle, alpha, rotation or schedule survives in the export.
    names = [jax.tree_util.keystr(p)
             for p, _ in jax.tree_util.tree_flatten_with_path(exported.variables)[0]]
    self.assertFalse(any(s in n for n in names for s in ("RBNNConv", "theta", "alpha", "r1")))
    self.assertEqual(set(exported.variables), {"params", "batch_stats"})
    # The packed bits are the signs of the mixed rotated weight of the training forward.
    path = "stage2_block0/RBNNConv_0"
    lp, lr = _layer_vars(variables, path)
    w3 = quant.rotation.rbnn_mixed_weight(lp["kernel"], lr["r1"], lr["r2"], lp["theta"])
    layer = exported.layers[path]
    bits = quant.unpack_bits(layer.weights.T, layer.spec.k).T
    np.testing.assert_array_equal(bits, np.asarray(w3).reshape(-1, w3.shape[-1]) > 0)
    want = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    self.serve_check(exported, want, x)
    sizes = quant.export_sizes(exported)
    self.assertGreaterEqual(sizes["binary_ratio"], 31.0)   # 1 bit vs 32 (word padding)
    self.assertEqual(sizes["binary_float_bytes"],
                     4 * sum(int(np.prod(l.spec.kernel_shape)) for l in exported.layers.values()))
    self.assertEqual(sizes["binary_kernel_bytes"],
                     4 * sum(l.weights.size for l in exported.layers.values()))

  @pytest.mark.slow  # ~30 s on 2 CPU cores (compiles a training step)
  def test_rbnn_resnet20_after_training_steps(self):
    # Real gradient steps (SGD through the surrogates, BN statistics updated, rotations
    # re-solved between steps as the epoch hook does), then export and serve.
    model = build("resnet20", layers="rbnn", bn_before_classifier=True)
    x = jnp.clip(jax.random.normal(jax.random.key(5), (16, 8, 8, 1)), -1.0, 1.0)
    labels = jnp.arange(16) % 10
    variables = rbnn_variables(model, x, seed=2)

    @jax.jit
    def step(variables):
      def loss_fn(params):
        logits, upd = model.apply({**variables, "params": params}, x, train=True,
                                  mutable=["batch_stats"])
        onehot = jax.nn.one_hot(labels, 10)
        return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * onehot, -1)), upd
      grads, upd = jax.grad(loss_fn, has_aux=True)(variables["params"])
      params = jax.tree.map(lambda p, g: p - 0.1 * g, variables["params"], grads)
      return {**variables, **upd, "params": params,
              "rbnn": quant.rbnn_rotate_params(params, variables["rbnn"])}

    before = variables
    for _ in range(3):
      variables = step(variables)
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), before["params"],
                           variables["params"])
    self.assertTrue(all(jax.tree.leaves(changed["stage1_block0"])))
    exported = quant.export(variables, model, x, train=False)
    self.assertEqual({l.spec.mode for l in exported.layers.values()}, {"xnor"})
    want = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    self.serve_check(exported, want, x)

  def test_exact_zero_activations_after_centring(self):
    # Integer inputs whose per-sample sum is 0: the mean is exactly 0 and every 0 entry is an
    # exact zero of the centred activation (sign 0, no bit), which the export must correct.
    rng = np.random.default_rng(0)
    half = rng.integers(-2, 3, size=(3, 5, 6, 4)).astype(np.float32)
    x = jnp.asarray(np.concatenate([half, -half[:, ::-1]], axis=1))   # (3, 10, 6, 4)
    self.assertGreater(int(jnp.sum(x == 0)), 10)
    net = RBNNConvNet()
    variables = net.init(jax.random.key(0), x)
    variables = jax.tree_util.tree_map(lambda l: l, variables)
    variables["params"]["RBNNConv_0"]["bias"] = jnp.linspace(-1.0, 1.0, 6)
    exported = quant.export(variables, net, x)
    self.assertEqual(exported.layers["RBNNConv_0"].spec.mode, "xnor")
    want = net.apply(variables, x)
    p, r = _layer_vars(variables, "RBNNConv_0")
    wb = np.sign(np.asarray(quant.rotation.rbnn_mixed_weight(p["kernel"], r["r1"], r["r2"],
                                                             p["theta"])))
    ref = np_rbnn_conv(x, wb, p["alpha"], 1) + np.asarray(p["bias"])
    np.testing.assert_allclose(want, ref, rtol=1e-5, atol=1e-5)
    got = self.serve_check(exported, want, x)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(quant.serve_apply(exported, x), ref, rtol=1e-5, atol=1e-5)

  def test_exact_zero_weights_fall_back_to_ternary_float(self):
    # theta = 0 keeps w3 = standardised kernel; a channel of balanced integers has mean 0, so
    # its zero entries are exact zeros of the binary weight (sign 0): no bit for them.
    x = jax.random.normal(jax.random.key(4), (2, 5, 5, 3))
    net = RBNNConvNet()
    variables = jax.tree_util.tree_map(lambda l: l, net.init(jax.random.key(0), x))
    p = variables["params"]["RBNNConv_0"]
    col = np.array([-1, 0, 1] * 9, np.float32).reshape(3, 3, 3)
    p["kernel"] = p["kernel"].at[..., 0].set(jnp.asarray(col))
    p["theta"] = jnp.zeros_like(p["theta"])
    exported = quant.export(variables, net, x)
    layer = exported.layers["RBNNConv_0"]
    self.assertEqual(layer.spec.mode, "float")
    self.assertLen(exported.notes, 1)
    self.assertEqual(int(jnp.sum(layer.weights == 0)), 9)
    want = net.apply(variables, x)
    ref = np_rbnn_conv(x, np.asarray(layer.weights), p["alpha"], 1) + np.asarray(p["bias"])
    np.testing.assert_allclose(want, ref, rtol=1e-5, atol=1e-5)
    self.serve_check(exported, want, x)


def _layer_vars(variables, path):
  p, r = variables["params"], variables["rbnn"]
  for key in path.split("/"):
    p, r = p[key], r[key]
  return p, r


if __name__ == "__main__":
  absltest.main()
