"""Tests for jaxcompress.ops.binary_conv (the fused XNOR-popcount kernel) and quant.serve_fusion."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from jaxcompress import quant
from jaxcompress.models import build
from jaxcompress.ops import binary_conv
from jaxcompress.quant import serve_fusion

# (name, input shape, out channels, kernel, strides, pads, dilation, rule, exact zeros, epilogue):
# channel counts that share a word (1-16) or span several (32-128), partial blocks of output
# channels, strides, dilation, asymmetric and oversized padding (border-only outputs), 1x1 and
# 5x5 kernels, batches of one and ranges that end inside images, RBNN's exact zeros, and the
# residual + hard_tanh epilogue.
CASES = [
    ("resnet_16", (4, 12, 12, 16), 16, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), "ge", 0, 0),
    ("resnet_32_s2", (3, 10, 10, 32), 32, (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), "ge", 0, 1),
    ("resnet_64", (2, 6, 6, 64), 64, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), "ge", 0, 1),
    ("c1", (2, 7, 6, 1), 16, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), "gt", 0, 0),
    ("c2_tail", (2, 7, 6, 2), 19, (2, 3), (1, 2), ((0, 1), (2, 2)), (1, 2), "ge", 0, 1),
    ("c4_dilated", (3, 9, 8, 4), 33, (3, 2), (2, 1), ((1, 2), (0, 1)), (2, 1), "gt", 0, 0),
    ("c8", (2, 5, 5, 8), 48, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), "ge", 0, 0),
    ("c96_1x1", (2, 5, 5, 96), 80, (1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), "gt", 0, 1),
    ("c128_5x5", (1, 11, 9, 128), 64, (5, 5), (1, 1), ((2, 2), (2, 2)), (1, 1), "ge", 0, 0),
    ("border_only", (2, 3, 3, 16), 32, (3, 3), (1, 1), ((2, 2), (2, 2)), (1, 1), "ge", 0, 1),
    ("window_misses_rows", (2, 4, 4, 16), 16, (3, 3), (3, 3), ((0, 4), (4, 0)), (1, 1), "ge", 0, 0),
    ("rbnn_zeros", (2, 9, 8, 64), 80, (3, 3), (2, 2), ((1, 1), (0, 1)), (1, 1), "gt", 1, 1),
    ("rbnn_zeros_c16", (3, 8, 8, 16), 16, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), "gt", 1, 0),
    ("batch_1_rows_split", (1, 64, 40, 32), 64, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), "ge", 0, 1),
    ("ranges_inside_images", (3, 40, 30, 16), 32, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), "ge", 0, 0),
    # 16 channels at stride 1 pair neighbouring pixels: an odd interior width leaves one alone.
    ("pairs_odd_width", (2, 6, 11, 16), 16, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), "ge", 0, 1),
    ("pairs_dilated", (2, 9, 13, 16), 32, (3, 3), (1, 1), ((2, 2), (2, 2)), (2, 2), "gt", 0, 0),
]


def _operands(case, seed=0):
  _, shape, o, kshape, strides, pads, dilation, rule, zeros, epilogue = case
  return binary_conv._case(np.random.default_rng(seed), shape, o, kshape, strides, pads,
                           dilation, rule, bool(zeros), bool(epilogue))


def _call(args, params, jit):
  given = {k: jnp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in params.items()}
  static = {k: v for k, v in given.items() if not isinstance(v, jax.Array)}
  arrays = {k: v for k, v in given.items() if isinstance(v, jax.Array)}

  def fn(*a, **kw):
    return binary_conv.xnor_conv(*a, **kw, **static)

  fn = jax.jit(fn) if jit else fn
  return np.asarray(fn(*(jnp.asarray(a) for a in args), **arrays))


@absltest.skipUnless(binary_conv.available(), "no native binary conv on this host")
class XnorConvTest(parameterized.TestCase):

  @parameterized.named_parameters(*[(c[0], c) for c in CASES])
  def test_matches_numpy_reference(self, case):
    args, params = _operands(case)
    want = binary_conv.reference(*args, **params)
    for jit in (False, True):
      got = _call(args, params, jit)
      self.assertEqual(got.shape, want.shape)
      # The +-1 dot products are exact integers; only the scale/shift epilogue rounds.
      np.testing.assert_allclose(got, want, rtol=1e-6, atol=2e-5)

  def test_exact_zeros_contribute_nothing(self):
    # With every input on the threshold, an exact-zeros conv is 0 * w everywhere: out = shift.
    args, params = _operands(CASES[11])
    x, thr = args[0], args[1]
    x = np.broadcast_to(thr[:, None, None, None], x.shape).copy()
    params = {**params, "residual": None, "activation": None}
    got = _call((x, *args[1:]), params, jit=True)
    np.testing.assert_array_equal(got, np.broadcast_to(args[4], got.shape))

  def test_rules_differ_only_on_the_threshold(self):
    args, params = _operands(CASES[0])
    x = args[0].copy()
    x[:, ::2] = 0.0
    args = (x, np.zeros_like(args[1]), *args[2:])
    ge = _call(args, {**params, "rule": "ge"}, jit=False)
    gt = _call(args, {**params, "rule": "gt"}, jit=False)
    self.assertFalse(np.allclose(ge, gt))
    np.testing.assert_allclose(ge, binary_conv.reference(*args, **{**params, "rule": "ge"}),
                               rtol=1e-6, atol=2e-5)

  def test_errors_name_the_problem(self):
    args, params = _operands(CASES[0])
    a = [jnp.asarray(v) for v in args]
    with self.assertRaisesRegex(ValueError, "float32 input"):
      binary_conv.xnor_conv(a[0].astype(jnp.bfloat16), *a[1:], **params)
    with self.assertRaisesRegex(ValueError, "neither divide 32"):
      binary_conv.xnor_conv(jnp.zeros((1, 4, 4, 3)), *a[1:], **params)
    with self.assertRaisesRegex(ValueError, "do not fit"):
      binary_conv.xnor_conv(a[0], a[1], a[2][:-1], *a[3:], **params)
    with self.assertRaisesRegex(ValueError, "residual"):
      binary_conv.xnor_conv(*a, **{**params, "residual": jnp.zeros((1, 2, 3, 4))})
    with self.assertRaisesRegex(ValueError, "activation"):
      binary_conv.xnor_conv(*a, **{**params, "activation": "relu"})

  def test_other_instruction_sets(self):
    # The AVX2 nibble-table build matches the reference; a build with neither vector popcount
    # reports "scalar", which `available()` refuses (serving then takes the XLA path).
    script = textwrap.dedent("""
        import sys
        import numpy as np, jax.numpy as jnp
        sys.path.insert(0, %r)
        from jaxcompress.ops import binary_conv
        import binary_conv_test as t
        print(binary_conv.popcount_path(), binary_conv.available())
        if binary_conv.popcount_path() == "avx2_nibble_table":
          for case in t.CASES:
            args, params = t._operands(case)
            np.testing.assert_allclose(t._call(args, params, True),
                                       binary_conv.reference(*args, **params), 1e-6, 2e-5)
        """ % os.path.dirname(__file__))
    for flags, want in (("-march=haswell", "avx2_nibble_table True"),
                        ("-march=x86-64", "scalar False")):
      env = {**os.environ, "JAXCOMPRESS_NATIVE_CXXFLAGS": flags}
      result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                              text=True, timeout=600, check=False)
      self.assertEqual(result.returncode, 0, result.stderr[-3000:])
      self.assertIn(want, result.stdout)


def _binary_resnet(batch, layers="binary"):
  model = build("resnet20", layers=layers, **({"bn_before_classifier": True}
                                               if layers == "rbnn" else {}))
  x = jax.random.normal(jax.random.key(1), (batch, 32, 32, 3))
  variables = model.init(jax.random.key(0), x[:1])

  def trained_like(path, leaf):  # BatchNorm scales away from init so the convs matter
    name = jax.tree_util.keystr(path)
    key = jax.random.key(len(name))
    if "BatchNorm" in name and "scale" in name:
      return jax.random.uniform(key, leaf.shape, leaf.dtype, 0.5, 1.5)
    if "BatchNorm" in name and "bias" in name:
      return jax.random.normal(key, leaf.shape, leaf.dtype) * 0.3
    return leaf

  variables = jax.tree_util.tree_map_with_path(trained_like, variables)
  return model, variables, x


class ServeFusionTest(parameterized.TestCase):

  @parameterized.parameters("binary", "rbnn")
  def test_served_resnet_same_logits_native_fused_and_xla(self, layers):
    model, variables, x = _binary_resnet(5, layers)
    exported = quant.export(variables, model, x, train=False)
    want = model.apply(variables, x, train=False)
    served = quant.serve_fn(exported)(x)
    with mock.patch.object(binary_conv, "available", return_value=False):
      xla = quant.serve_fn(exported)(x)
    for got in (served, xla):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
      np.testing.assert_array_equal(np.argmax(got, -1), np.argmax(want, -1))

  @absltest.skipUnless(binary_conv.available(), "no native binary conv on this host")
  def test_adds_and_activations_fold_into_the_kernel(self):
    model, variables, x = _binary_resnet(2)
    exported = quant.export(variables, model, x, train=False)

    def fn(layers, variables, x):
      return quant.serve_apply(exported.replace(layers=layers, variables=variables), x)

    args = (exported.layers, exported.variables, x)
    closed = jax.make_jaxpr(fn)(*args)
    fused = serve_fusion.fuse_epilogues(closed)

    def names(c):
      return [e.primitive.name if e.primitive.name != "jit" else e.params["name"]
              for e in c.jaxpr.eqns]

    convs = [e for e in fused.jaxpr.eqns if e.primitive is binary_conv.binary_conv_p]
    self.assertLen(convs, 18)
    # Every conv takes its activation; the second conv of each block also its shortcut.
    self.assertTrue(all(e.params["activation"] == "hard_tanh" for e in convs))
    self.assertEqual(sum(e.invars[5].aval.shape == e.outvars[0].aval.shape for e in convs), 9)
    # Each block's first conv is read only by its second conv's sign: it hands over packed bits.
    self.assertEqual(sum(e.params["packed_output"] for e in convs), 9)
    self.assertEqual(names(closed).count("hard_tanh") - names(fused).count("hard_tanh"), 18)
    self.assertEqual(names(closed).count("add") - names(fused).count("add"), 9)
    flat = jax.tree_util.tree_leaves(args)
    np.testing.assert_allclose(jax.jit(jax.extend.core.jaxpr_as_fun(fused))(*flat)[0],
                               jax.extend.core.jaxpr_as_fun(closed)(*flat)[0], rtol=0, atol=1e-6)

  @absltest.skipUnless(binary_conv.available(), "no native binary conv on this host")
  def test_values_used_twice_are_not_folded(self):
    args, params = _operands(CASES[0])
    a = [jnp.asarray(v) for v in args]

    def fn(x, r):
      y = binary_conv.xnor_conv(x, *a[1:], **params)
      z = y + r
      return jax.nn.hard_tanh(z), z  # z has a second use: only y + r is folded

    r = jnp.ones((4, 12, 12, 16))
    closed = jax.make_jaxpr(fn)(a[0], r)
    fused = serve_fusion.fuse_epilogues(closed)
    conv = [e for e in fused.jaxpr.eqns if e.primitive is binary_conv.binary_conv_p][0]
    self.assertIsNone(conv.params["activation"])
    self.assertEqual(conv.invars[5].aval.shape, (4, 12, 12, 16))
    got = jax.extend.core.jaxpr_as_fun(fused)(a[0], r)
    want = fn(a[0], r)
    for g, w in zip(got, want):
      np.testing.assert_array_equal(g, w)


if __name__ == "__main__":
  absltest.main()
