"""Tests for jaxcompress.nas.supernet: channel shuffle, mixed ops, PC-DARTS partial channels."""
from __future__ import annotations

from absl.testing import absltest
from absl.testing import parameterized
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress.nas import supernet


def _torch_style_shuffle(x_nhwc, groups):
  """PC-DARTS channel_shuffle transcribed on NCHW: view (N, g, C/g, H, W), transpose(1, 2)."""
  x = np.transpose(x_nhwc, (0, 3, 1, 2))
  n, c, h, w = x.shape
  x = x.reshape(n, groups, c // groups, h, w).transpose(0, 2, 1, 3, 4).reshape(n, c, h, w)
  return np.transpose(x, (0, 2, 3, 1))


class ChannelShuffleTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters((4, 16), (2, 6), (3, 12), (1, 5))
  def test_matches_torch_view_transpose(self, groups, c):
    x = np.random.default_rng(0).normal(size=(2, 3, 2, c)).astype(np.float32)
    fn = self.variant(lambda v: supernet.channel_shuffle(v, groups))
    np.testing.assert_array_equal(fn(jnp.asarray(x)), _torch_style_shuffle(x, groups))

  def test_permutation_formula(self):
    x = jnp.arange(12.0).reshape(1, 1, 1, 12)
    # out[j * g + i] = in[i * (C // g) + j] with g = 4, C // g = 3.
    np.testing.assert_array_equal(supernet.channel_shuffle(x, 4)[0, 0, 0],
                                  [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11])

  def test_gradient_is_inverse_permutation(self):
    x = jnp.arange(8.0).reshape(1, 1, 1, 8)
    w = np.arange(8.0).reshape(1, 1, 1, 8) + 1
    g = jax.grad(lambda v: (supernet.channel_shuffle(v, 2) * w).sum())(x)
    # The inverse of a g-group shuffle is the (C / g)-group shuffle.
    np.testing.assert_array_equal(g, _torch_style_shuffle(w, 4))

  def test_bad_groups(self):
    with self.assertRaises(ValueError):
      supernet.channel_shuffle(jnp.zeros((1, 1, 1, 6)), 4)


class EdgeNormalizationTest(absltest.TestCase):

  def test_node_groups_sum_to_one(self):
    b = jax.random.normal(jax.random.key(0), (14,))
    w = supernet.edge_normalization(b)
    start = 0
    for n in (2, 3, 4, 5):
      np.testing.assert_allclose(w[start:start + n].sum(), 1.0, rtol=1e-6)
      np.testing.assert_allclose(w[start:start + n], jax.nn.softmax(b[start:start + n]),
                                 rtol=1e-6)
      start += n


class MixedOpTest(parameterized.TestCase):

  @parameterized.parameters(1, 2)
  def test_pc_mixed_op_shapes_and_bypass(self, stride):
    c, k = 8, 4
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, c))
    # A cheap subset of the ops keeps the test fast; the full list is covered in space_test.
    op = supernet.PCMixedOp(c, stride, k=k, primitives=("none", "max_pool_3x3", "skip_connect"))
    w = jnp.array([1.0, 0.0, 0.0])  # only `none`: the op branch is zero
    variables = op.init(jax.random.key(1), x, w, train=True)
    y, _ = op.apply(variables, x, w, train=True, mutable=["batch_stats"])
    self.assertEqual(y.shape, (2, 4 // stride, 4 // stride, c))
    # Undo the shuffle: the first C/k channels are the (zero) op output, the rest the bypass.
    unshuffled = supernet.channel_shuffle(y, c // k)
    np.testing.assert_array_equal(unshuffled[..., : c // k], 0.0)
    bypass = x[..., c // k:]
    if stride == 2:
      bypass = bypass.reshape(2, 2, 2, 2, 2, c - c // k).max(axis=(2, 4))
    np.testing.assert_allclose(unshuffled[..., c // k:], bypass, rtol=1e-6)

  def test_mixed_op_is_weighted_sum(self):
    c = 4
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, c))
    op = supernet.MixedOp(c, 1, primitives=("none", "avg_pool_3x3", "skip_connect",
                                            "dil_conv_3x3"))
    w = jnp.array([0.5, 0.0, 0.25, 0.0])
    variables = op.init(jax.random.key(1), x, w)
    y = op.apply(variables, x, w)
    np.testing.assert_allclose(y, 0.25 * x, rtol=1e-6)
    # Search-net ops are affine-free: only the dilated conv has parameters.
    self.assertEqual(set(variables["params"]), {"DilConv_0"})

  def test_sampled_op_runs_selected_branch_without_recompiling(self):
    c = 4
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, c))
    prims = ("max_pool_3x3", "skip_connect", "dil_conv_3x3")
    op = supernet.SampledOp(c, 1, primitives=prims)
    variables = op.init(jax.random.key(1), x, 0)
    self.assertIn("ops_2", variables["params"])  # every branch owns its weights
    traces = {"n": 0}

    @jax.jit
    def run(v, idx):
      traces["n"] += 1
      return op.apply(v, x, idx, train=True, mutable=["batch_stats"])[0]

    np.testing.assert_allclose(run(variables, 1), x, rtol=1e-6)
    pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    np.testing.assert_allclose(run(variables, 0), pooled, rtol=1e-6)
    self.assertEqual(run(variables, 2).shape, x.shape)
    self.assertEqual(traces["n"], 1)


if __name__ == "__main__":
  absltest.main()
