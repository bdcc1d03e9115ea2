"""Tests for jaxcompress.quant.transform: rule-based quantize() of an unmodified linen model."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from jax import lax

from jaxcompress import quant
from jaxcompress.quant import quantizers
from jaxcompress.summary import summary


class Block(nn.Module):
  """Nested module: strided conv without bias, BN, dilated conv with explicit padding."""

  @nn.compact
  def __call__(self, x, train=False):
    y = nn.Conv(6, (3, 3), strides=2, use_bias=False)(x)
    y = nn.BatchNorm(use_running_average=not train)(y)
    return nn.Conv(5, (3, 3), padding=((1, 1), (2, 0)), kernel_dilation=(1, 2))(jnp.tanh(y))


class Net(nn.Module):
  """Stem conv -> block -> 1x1 conv -> pool -> dense -> dense (classifier)."""

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(4, (3, 3), name="stem")(x)
    x = Block(name="blk")(x, train)
    x = nn.Conv(7, (1, 1), padding=1, name="pw")(x)
    x = jnp.mean(x, (1, 2))
    x = nn.Dense(9)(x)
    return nn.Dense(3, name="head")(x)


X = jax.random.normal(jax.random.key(1), (2, 7, 7, 3))
LAYERS = ("stem", "blk/Conv_0", "blk/Conv_1", "pw", "Dense_0", "head")


def sign(x):
  return quant.ste_sign(x)


def ref_conv(x, kernel, bias, strides, pads, dil=(1, 1), scale=None, q=sign):
  """Hand-written fake-quant conv: quantise, zero-pad AFTER, VALID conv, times scale, plus bias."""
  xq = jnp.pad(q(x), [(0, 0)] + list(pads) + [(0, 0)])
  y = lax.conv_general_dilated(xq, q(kernel), strides, "VALID", rhs_dilation=dil,
                               dimension_numbers=("NHWC", "HWIO", "NHWC"))
  if scale is not None:
    y = y * jnp.mean(jnp.abs(lax.stop_gradient(kernel)), axis=(0, 1, 2))
  return y if bias is None else y + bias


def ref_forward(variables, x, quantized=("blk/Conv_0", "blk/Conv_1", "pw", "Dense_0"),
                scale=None):
  """The Net forward written by hand, with the listed layers fake-quantised."""
  p = variables["params"]
  bs = variables["batch_stats"]["blk"]["BatchNorm_0"]
  ident = lambda v: v
  qf = lambda name: sign if name in quantized else ident
  x = ref_conv(x, p["stem"]["kernel"], p["stem"]["bias"], (1, 1), [(1, 1), (1, 1)],
               q=qf("stem"), scale=scale if "stem" in quantized else None)
  b = p["blk"]
  y = ref_conv(x, b["Conv_0"]["kernel"], None, (2, 2), [(1, 1), (1, 1)], q=qf("blk/Conv_0"),
               scale=scale)
  y = (y - bs["mean"]) * lax.rsqrt(bs["var"] + 1e-5) * b["BatchNorm_0"]["scale"]
  y = y + b["BatchNorm_0"]["bias"]
  y = ref_conv(jnp.tanh(y), b["Conv_1"]["kernel"], b["Conv_1"]["bias"], (1, 1),
               [(1, 1), (2, 0)], dil=(1, 2), q=qf("blk/Conv_1"), scale=scale)
  y = ref_conv(y, p["pw"]["kernel"], p["pw"]["bias"], (1, 1), [(1, 1), (1, 1)], q=qf("pw"),
               scale=scale)
  y = jnp.mean(y, (1, 2))
  q = qf("Dense_0")
  k = p["Dense_0"]["kernel"]
  y = q(y) @ q(k)
  if scale is not None and "Dense_0" in quantized:
    y = y * jnp.mean(jnp.abs(k), axis=0)
  y = y + p["Dense_0"]["bias"]
  q = qf("head")
  return q(y) @ q(p["head"]["kernel"]) + p["head"]["bias"]


def perturbed(variables):
  """Non-trivial batch statistics so BatchNorm is not the identity."""
  bs = variables["batch_stats"]["blk"]["BatchNorm_0"]
  new = {"mean": bs["mean"] + 0.1, "var": bs["var"] * 1.7}
  return {**variables, "batch_stats": {"blk": {"BatchNorm_0": new}}}


def count_eqns(jaxpr, name):
  """Counts primitives named `name` in a jaxpr, including nested (custom_vjp, pjit) jaxprs."""
  n = 0
  for eqn in jaxpr.eqns:
    n += eqn.primitive.name == name
    for v in eqn.params.values():
      for sub in (v if isinstance(v, (list, tuple)) else [v]):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          n += count_eqns(sub.jaxpr, name)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          n += count_eqns(sub, name)
  return n


class QuantizeTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.model = Net()
    self.logs = []
    self.qmodel = quant.quantize(self.model, [quant.QuantRule(module_path=".*")],
                                 log=self.logs.append)
    self.variables = perturbed(self.model.init(jax.random.key(0), X))

  def test_same_variables_as_float_model(self):
    qv = self.qmodel.init(jax.random.key(0), X)
    fv = self.model.init(jax.random.key(0), X)
    self.assertEqual(jax.tree.structure(qv), jax.tree.structure(fv))
    jax.tree.map(np.testing.assert_array_equal, qv, fv)

  def test_matches_fake_quant_reference_values_and_grads(self):
    v = self.variables
    np.testing.assert_allclose(self.qmodel.apply(v, X), ref_forward(v, X), rtol=1e-5, atol=1e-5)

    def loss(fn, params, x):
      return jnp.sum(jnp.sin(fn({**v, "params": params}, x)))

    g_q = jax.grad(loss, argnums=(1, 2))(self.qmodel.apply, v["params"], X)
    g_r = jax.grad(loss, argnums=(1, 2))(ref_forward, v["params"], X)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g_q, g_r)
    # The STE passes gradient to the latent kernels of quantised layers.
    self.assertGreater(float(jnp.abs(g_q[0]["blk"]["Conv_1"]["kernel"]).sum()), 0)

  def test_channel_scale_matches_reference(self):
    qm = quant.quantize(self.model, [quant.QuantRule(scale="channel")], log=None)
    np.testing.assert_allclose(qm.apply(self.variables, X),
                               ref_forward(self.variables, X, scale="channel"),
                               rtol=1e-5, atol=1e-5)

  def test_first_last_float_by_default_and_optional(self):
    qm = quant.quantize(self.model, [quant.QuantRule()], keep_first_last_float=False, log=None)
    np.testing.assert_allclose(qm.apply(self.variables, X),
                               ref_forward(self.variables, X, quantized=LAYERS),
                               rtol=1e-5, atol=1e-5)
    self.assertFalse(np.allclose(qm.apply(self.variables, X),
                                 self.qmodel.apply(self.variables, X)))

  def test_rule_order_and_regex(self):
    rules = [quant.QuantRule(module_path="blk/.*"),
             dict(module_path="Dense_0", input_quantizer=None, kernel_quantizer="ste_sign")]
    qm = quant.quantize(self.model, rules, log=None)
    qm.apply(self.variables, X)
    bits = quant.layer_bits_fn(qm)
    self.assertEqual(bits("blk/Conv_0", None), (1, 1))
    self.assertEqual(bits("pw", None), (32, 32))          # no rule matched ("pw" not fullmatched)
    self.assertEqual(bits("Dense_0", None), (1, 32))
    self.assertEqual(bits("head", None), (32, 32))        # last layer

  def test_log_one_line_per_layer(self):
    self.qmodel.apply(self.variables, X)
    self.qmodel.apply(self.variables, X)  # logged once per layer, not per call
    self.assertLen(self.logs, len(LAYERS))
    by_path = {line.split()[1]: line for line in self.logs}
    self.assertEqual(sorted(by_path), sorted(LAYERS))
    self.assertIn("first/last", by_path["stem"])
    self.assertIn("first/last", by_path["head"])
    self.assertIn("rule 0 '.*'", by_path["blk/Conv_1"])

  def test_jaxpr_counts(self):
    jaxpr = jax.make_jaxpr(lambda v, x: self.qmodel.apply(v, x))(self.variables, X).jaxpr
    float_jaxpr = jax.make_jaxpr(lambda v, x: self.model.apply(v, x))(self.variables, X).jaxpr
    self.assertEqual(count_eqns(jaxpr, "conv_general_dilated"), 4)
    self.assertEqual(count_eqns(float_jaxpr, "sign"), 0)
    # larq's sign is sign(sign(x) + 0.1): 2 sign eqns per quantiser, input + kernel, 4 layers.
    self.assertEqual(count_eqns(jaxpr, "sign"), 2 * 2 * 4)
    # Zero padding after the quantiser: the 3 quantised convs (not the float stem) are VALID
    # convolutions of an explicitly padded input.
    convs = [e for e in jaxpr.eqns if e.primitive.name == "conv_general_dilated"]
    valid = [all(tuple(p) == (0, 0) for p in e.params["padding"]) for e in convs]
    self.assertEqual(valid, [False, True, True, True])
    self.assertGreaterEqual(count_eqns(jaxpr, "pad"), 3)

  def test_jit_and_train_mode(self):
    v = self.variables
    jitted = jax.jit(lambda v, x: self.qmodel.apply(v, x))(v, X)
    np.testing.assert_allclose(jitted, self.qmodel.apply(v, X), rtol=1e-6, atol=1e-6)
    y, upd = jax.jit(lambda v, x: self.qmodel.apply(v, x, train=True, mutable=["batch_stats"]))(
        v, X)
    self.assertEqual(y.shape, (2, 3))
    self.assertEqual(jax.tree.structure(upd["batch_stats"]),
                     jax.tree.structure(v["batch_stats"]))

  def test_kbit_rule_matches_quantizer(self):
    rule = quant.QuantRule(module_path="pw", input_quantizer="absmax",
                           kernel_quantizer="absmax_per_channel", bits=4)
    self.assertEqual((rule.weight_bits, rule.input_bits), (4, 4))
    qm = quant.quantize(self.model, [rule], log=None)
    self.assertIsInstance(rule.kernel_fn(), quantizers.AbsMaxQuantizer)
    # Recompute by hand on the pw layer input.
    captured = {}

    def grab(next_fun, a, kw, ctx):
      if "/".join(ctx.module.path) == "pw":
        captured["x"] = a[0]
      return next_fun(*a, **kw)

    with nn.intercept_methods(grab):
      qm.apply(self.variables, X)
    p = self.variables["params"]["pw"]
    qk = quantizers.AbsMaxQuantizer(bits=4, per_channel=True)(p["kernel"])
    qx = quantizers.AbsMaxQuantizer(bits=4)(captured["x"])
    want = ref_conv(qx, qk, p["bias"], (1, 1), [(1, 1), (1, 1)], q=lambda t: t)
    got = {}

    def out(next_fun, a, kw, ctx):
      y = next_fun(*a, **kw)
      if "/".join(ctx.module.path) == "pw":
        got["y"] = y
      return y

    with nn.intercept_methods(out):
      qm.apply(self.variables, X)
    np.testing.assert_allclose(got["y"], want, rtol=1e-5, atol=1e-5)

  def test_summary_layer_bits(self):
    s = summary(self.qmodel, X, layer_bits=quant.layer_bits_fn(self.qmodel))
    rows = {r.path: r for r in s.layers}
    self.assertEqual(rows["blk/Conv_0"].weight_bits, 1)
    self.assertEqual(rows["stem"].weight_bits, 32)
    self.assertGreater(s.binary_macs if hasattr(s, "binary_macs") else
                       sum(r.binary_macs for r in s.layers), 0)
    # Bare rules: regexes only.
    self.assertEqual(quant.layer_bits_fn([quant.QuantRule()])("stem", nn.Conv(1, (1, 1))), (1, 1))

  def test_bad_rules(self):
    with self.assertRaisesRegex(ValueError, "Unknown quantizer"):
      quant.QuantRule(kernel_quantizer="nope")
    with self.assertRaisesRegex(ValueError, "scale"):
      quant.QuantRule(scale="row")
    with self.assertRaisesRegex(ValueError, "bit"):
      quant.QuantRule(kernel_quantizer="ste_sign", bits=4)


if __name__ == "__main__":
  absltest.main()
