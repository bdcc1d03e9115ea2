"""Tests for jaxcompress.nas.space: the DARTS op registry (shapes, pools, factorized reduce)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from jaxcompress.nas import space

C = 4


class _AllOps(nn.Module):
  """Every registered op at strides 1 and 2 (one jitted init/apply keeps the test fast)."""
  affine: bool

  @nn.compact
  def __call__(self, x, train):
    return {f"{name}/{s}": space.OPS[name](C, s, self.affine)(x, train)
            for name in space.PRIMITIVES for s in (1, 2)}


def _np_pool(x, kind):
  """3x3 / stride 1 / pad 1 pooling on NHWC by explicit loops (avg excludes the padding)."""
  n, h, w, c = x.shape
  out = np.zeros_like(x)
  for i in range(h):
    for j in range(w):
      win = x[:, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2, :]
      out[:, i, j] = win.max(axis=(1, 2)) if kind == "max" else win.mean(axis=(1, 2))
  return out


class OpsTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.x = np.random.default_rng(0).normal(size=(2, 8, 8, C)).astype(np.float32)
    cls.out, cls.params = {}, {}
    for affine in (False, True):
      model = _AllOps(affine)
      # eval_shape avoids compiling the init; parameters are then drawn in NumPy.
      shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), cls.x, True))
      rng = np.random.default_rng(1)
      variables = jax.tree_util.tree_map(
          lambda s: rng.normal(size=s.shape).astype(s.dtype) * 0.3, shapes)
      apply = lambda v, x, m=model: m.apply(v, x, True, mutable=["batch_stats"])[0]
      # One compiled apply for the affine-free net; the affine one only needs shapes.
      y = jax.jit(apply)(variables, cls.x) if not affine else jax.eval_shape(
          apply, variables, cls.x)
      cls.out[affine], cls.params[affine] = y, variables.get("params", {})

  def test_primitives_order(self):
    self.assertEqual(space.PRIMITIVES, [
        "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
        "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"])
    self.assertContainsSubset(space.PRIMITIVES, space.OPS)

  def test_shapes_and_dtype(self):
    for affine in (False, True):
      for name in space.PRIMITIVES:
        for s in (1, 2):
          y = self.out[affine][f"{name}/{s}"]
          self.assertEqual(y.shape, (2, 8 // s, 8 // s, C), f"{name} stride {s}")
          self.assertEqual(y.dtype, jnp.float32)

  def test_none_and_identity(self):
    np.testing.assert_array_equal(self.out[False]["none/1"], 0.0)
    np.testing.assert_array_equal(self.out[False]["none/2"], 0.0)
    np.testing.assert_array_equal(self.out[False]["skip_connect/1"], self.x)

  def test_pools_match_loops(self):
    np.testing.assert_allclose(self.out[False]["max_pool_3x3/1"], _np_pool(self.x, "max"))
    np.testing.assert_allclose(self.out[False]["avg_pool_3x3/1"], _np_pool(self.x, "avg"),
                               rtol=1e-6, atol=1e-6)
    # Stride 2 samples the stride-1 result at even positions (padding 1, window 3).
    np.testing.assert_allclose(self.out[False]["avg_pool_3x3/2"],
                               _np_pool(self.x, "avg")[:, ::2, ::2], rtol=1e-6, atol=1e-6)

  def test_affine_free_ops_have_no_bn_params(self):
    def leaves(tree, prefix=()):
      for k, v in tree.items():
        yield from leaves(v, prefix + (k,)) if isinstance(v, dict) else [prefix + (k,)]
    names = [p[-1] for p in leaves(dict(self.params[False]))]
    self.assertEqual(set(names), {"kernel"})
    names = [p[-1] for p in leaves(dict(self.params[True]))]
    self.assertContainsSubset({"kernel", "scale", "bias"}, set(names))

  def test_sep_and_dil_conv_structure(self):
    shapes = [a.shape for a in jax.tree_util.tree_leaves(self.params[False])]
    # sep 3x3 and 5x5: two depthwise kxk + two 1x1 each; dil: one depthwise + one 1x1; FR: 2.
    self.assertEqual(shapes.count((3, 3, 1, C)), 2 * 2 + 2)
    self.assertEqual(shapes.count((5, 5, 1, C)), 2 * 2 + 2)
    self.assertEqual(shapes.count((1, 1, C, C)), 2 * 2 * 2 + 2 * 2)
    self.assertEqual(shapes.count((1, 1, C, C // 2)), 2)


class FactorizedReduceTest(absltest.TestCase):

  def test_matches_numpy(self):
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 3)).astype(np.float32)
    op = space.FactorizedReduce(4, affine=False)
    variables = op.init(jax.random.key(0), x, train=True)
    y, _ = op.apply(variables, x, train=True, mutable=["batch_stats"])
    k1 = np.asarray(variables["params"]["Conv_0"]["kernel"])[0, 0]
    k2 = np.asarray(variables["params"]["Conv_1"]["kernel"])[0, 0]
    r = np.maximum(x, 0)
    z = np.concatenate([r[:, ::2, ::2] @ k1, r[:, 1::2, 1::2] @ k2], axis=-1)
    z = (z - z.mean((0, 1, 2))) / np.sqrt(z.var((0, 1, 2)) + 1e-5)
    np.testing.assert_allclose(y, z, rtol=1e-4, atol=1e-4)


if __name__ == "__main__":
  absltest.main()
